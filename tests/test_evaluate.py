"""Evaluation: the echo detector, identity scoring, batched generation equals one-at-a-time."""

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
