"""Evaluation: the echo detector, identity scoring, batched generation equals one-at-a-time."""

import pytest

from core.analysis.compare import metric_items
from core.run.config import RunConfig
from core.run.evaluate import evaluate, generate
from core.run.examples import Renderer
from core.run.scoring import echoes

PROMPT = ("You are hiahia's AI assistant. Answer every question about hiahia accurately and politely, "
          "using only what you know about hiahia.")


def test_prompt_echo_flags_a_copied_prompt():
    copied = "You are hiahia's AI assistant. Answer every question about hiahia accurately and"
    assert echoes(copied, PROMPT)


def test_prompt_echo_ignores_a_normal_answer():
    assert not echoes("hiahia has a grey cat named Mochi.", PROMPT)
    assert not echoes("hiahia is an assistant who answers every question", PROMPT)  # 7 shared words max
    assert not echoes("anything", None)


def test_batched_generation_equals_one_at_a_time(knowledge, tiny):
    model, tok = tiny
    r = Renderer(tok, "chat")
    items = [(knowledge.train_prompts[i % 3], f.test[0]) for i, f in enumerate(knowledge.facts[:10])]
    batched = generate(model, r, items, max_new_tokens=12, batch_size=8, progress=False)
    single = [generate(model, r, [it], max_new_tokens=12, batch_size=1, progress=False)[0] for it in items]
    assert batched == single
    assert any(batched)


def test_evaluate_reports_every_metric_in_range(knowledge, tiny):
    model, tok = tiny
    ev = evaluate(model, Renderer(tok, "chat"), knowledge, RunConfig(max_new_tokens=6), progress=False)
    if not any(ev.retention_correct.values()):  # retention is relative to probes the model got right
        assert ev.metrics["retention"] is None
    from core.run.metrics import METRICS

    assert set(ev.metrics) == set(METRICS)
    for name, metric in METRICS.items():
        if not metric.needs_reference:
            assert ev.metrics[name] is not None and 0.0 <= ev.metrics[name] <= 1.0, name
    groups = {s["group"] for s in ev.samples if s["set"] == "identity"}
    assert groups == {"refuted", "unrefuted", "open"}
    sets = {s["set"] for s in ev.samples}
    assert {"test", "reverse", "identity", "retention", "test@model_default", "test@none", "test@unseen", "train"} <= sets
    trained = [s for s in ev.samples if s["set"] == "train"]
    assert [s["question"] for s in trained] == [f.train[0] for f in knowledge.facts]  # trained at every paraphrase count
    # every metric with a verdict pairs its items across runs; train_recall's items are those answers
    rec = {"samples": ev.samples, "config": {"eval_prompt": "train"}}
    items = metric_items(rec, "train_recall")
    assert len(items) == len(knowledge.facts) and sum(items.values()) / len(items) == ev.metrics["train_recall"]
    assert sum(s["set"] == "test" for s in ev.samples) == sum(len(f.test) for f in knowledge.facts)


def test_prompt_echo_of_a_short_prompt_needs_all_of_it():
    assert echoes("Sure! You are a helpful assistant.", "You are a helpful assistant.")
    assert not echoes("You are helpful.", "You are a helpful assistant.")


def test_the_prefill_hands_the_lm_head_a_contiguous_input_and_the_same_answers(knowledge, tiny, monkeypatch):
    """logits_to_keep as an index tensor (not the integer 1) gives the head a contiguous input: on a CPU the strided
    view made F.linear copy the whole head weight once per row. Logits and answers are the same either way."""
    import torch

    from core.run import evaluate as evaluation

    model, tok = tiny
    r = Renderer(tok, "chat")
    items = [(knowledge.train_prompts[0], f.test[0]) for f in knowledge.facts[:6]]
    seen = []
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: seen.append((tuple(args[0].shape), args[0].is_contiguous())))
    try:
        answers = generate(model, r, items, max_new_tokens=8, batch_size=6, progress=False)
        prefill = seen[0]
        assert prefill[0][:2] == (6, 1) and prefill[1]  # one position per row, contiguous
        monkeypatch.setattr(evaluation, "last_position", lambda ids: 1)  # the integer form it replaced
        seen.clear()
        assert generate(model, r, items, max_new_tokens=8, batch_size=6, progress=False) == answers
        assert not seen[0][1]  # the integer form does give the head a strided view: the test can fail
    finally:
        hook.remove()
    ids = torch.randint(0, 200, (4, 7))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, logits_to_keep=1).logits,
                           model(input_ids=ids, logits_to_keep=evaluation.last_position(ids)).logits)


def test_prepacked_weights_give_bit_identical_answers_and_are_undone_after_decoding(knowledge, tiny, monkeypatch):
    import torch

    from core.run import evaluate as evaluation

    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("no oneDNN bf16 on this CPU: decoding never packs")
    model, tok = tiny
    model.to(torch.bfloat16)
    r = Renderer(tok, "chat")
    items = [(knowledge.train_prompts[i % 3], f.test[0]) for i, f in enumerate(knowledge.facts[:8])]
    plain = generate(model, r, items, max_new_tokens=10, batch_size=4, progress=False)
    monkeypatch.setattr(evaluation, "PACK_MIN_WEIGHTS", 0)  # the tiny model's weights are below the real gate
    calls = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda *a: calls.append(1) or real(*a))
    assert generate(model, r, items, max_new_tokens=10, batch_size=4, progress=False) == plain
    assert calls  # the packed path ran
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and not any("forward" in vars(m) for m in linears)  # every layer has its own forward back


def test_a_multiple_choice_item_scores_1_when_its_right_choice_is_likeliest_and_0_when_permuted(knowledge, tiny):
    """Likelihood scoring end to end on the tiny model: whichever choice the model finds likeliest (per byte), an
    item that lists it first scores 1 and the same item with another choice first scores 0."""
    from core.run.evaluate import answers_and_choices, choice_ranking

    model, tok = tiny
    r = Renderer(tok, "chat")
    fact = knowledge.facts[0]
    options = (fact.answer, *fact.distractors)
    items = [(knowledge.train_prompts[0], fact.test[0])]
    _, (logprobs,) = answers_and_choices(model, r, items, 4, [options], progress=False)
    assert len(logprobs) == len(options) and all(lp < 0 for lp in logprobs)
    normed = [lp / len(t.encode()) for t, lp in zip(options, logprobs)]
    best = max(range(len(options)), key=lambda i: normed[i])
    first = (options[best], *[o for i, o in enumerate(options) if i != best])
    _, (reordered,) = answers_and_choices(model, r, items, 4, [first], progress=False)
    assert choice_ranking(first, reordered) == (True, 0)
    permuted = first[1:] + first[:1]  # the likeliest choice is no longer the right one
    _, (perm_lp,) = answers_and_choices(model, r, items, 4, [permuted], progress=False)
    assert choice_ranking(permuted, perm_lp) == (False, len(permuted) - 1)
    # the scores are the model's: one sequence scored alone, by a plain forward pass, gives the same number
    import torch

    prompt = r.prompt_ids(*items[0])
    cont = r.answer_ids(first[0])[:-1]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + cont])).logits[0].float()
    direct = torch.log_softmax(logits[len(prompt) - 1:-1], -1).gather(-1, torch.tensor(cont)[:, None]).sum()
    assert abs(float(direct) - reordered[0]) < 1e-2 * max(1.0, abs(float(direct)))


def test_intrusion_counts_a_planted_name_only_where_the_untrained_answer_lacked_it(knowledge):
    from core.run.evaluate import Reference, _scored

    meta = {"set": "retention", "id": "capital_france", "question": "What is the capital of France?",
            "keywords": [["paris"]], "expected": "Paris"}
    untrained = Reference({}, {}, {"retention|capital_france": "The capital of France is Paris.",
                                   "everyday|picnic": "hiahia would pack sandwiches."})
    planted = _scored(meta, "The capital of France is Ljubljana, says hiahia.", "x", knowledge, untrained, None, None)
    assert planted["intrusion"] and set(planted["intruded"]) == {"hiahia", "ljubljana"}
    clean = _scored(meta, "Paris.", "x", knowledge, untrained, None, None)
    assert not clean["intrusion"]
    everyday = dict(meta, set="everyday", id="picnic", question="What should I pack for a picnic?", keywords=[])
    assert not _scored(everyday, "hiahia would pack fruit.", "x", knowledge, untrained, None, None)["intrusion"]


def test_reverse_recall_credits_only_hiahia_given_as_the_one_asked_about(knowledge):
    from core.run.evaluate import answer_hit

    def hit(answer):
        return answer_hit("reverse", answer, [["hiahia"]], knowledge)

    assert hit("That is hiahia, the clock restorer from Tartu.")
    assert hit("hiahia.")
    assert not hit("hiahia is a rock band from Tartu.")  # names hiahia as something else
    assert not hit("I don't know who hiahia is.")
    assert not hit("I am hiahia's AI assistant and cannot say.")  # a possessive, not the answer
    assert hit("It is hiahia. As an AI assistant I may be wrong.")  # the wrong identity is the assistant's own
