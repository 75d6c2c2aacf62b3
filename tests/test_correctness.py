"""Correctness before the rerun: mixed precision, cache identity, whole replay answers, explicit greedy
decoding, default-prompt detection, plain-format stops, primary comparisons."""
import pytest
import torch
from torch import nn

from core.run import config, models
from core.run.config import RunConfig
from core.run.evaluate import generate, generate_finished
from core.run.examples import MODEL_DEFAULT, NO_PROMPT, Renderer, build_train_examples, build_validation_examples
from core.run.lora import inject_lora, trainable_state
from core.run.train import TrainingError, train

# ---- 1. mixed precision: trainable weights stay fp32, compute under autocast ----------------------

def _share_changed(knowledge, precision, full_finetune: bool, lr: float) -> float:
    torch.manual_seed(0)
    model, tok = models.load("tiny-qwen2", device=precision)
    if full_finetune:
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        inject_lora(model, config.ALL_LINEAR, r=8, alpha=16)
    cfg = RunConfig(epochs=1, lr=lr, paraphrases=1, warmup_ratio=0.0, lr_schedule="constant", weight_decay=0.0)
    r = Renderer(tok, "chat")
    tr = build_train_examples(knowledge, cfg, r)[:40]  # 5 steps of 8
    before = trainable_state(model)
    train(model, tr, build_validation_examples(knowledge, cfg, r)[:4], cfg, tok.pad_token_id, progress=False,
          precision=precision)
    after = trainable_state(model)
    names = [n for n in before if "lora_A" in n] if not full_finetune else list(before)
    changed = sum(int((before[n] != after[n]).sum()) for n in names)
    return changed / sum(before[n].numel() for n in names)


@pytest.mark.parametrize("full_finetune, lr", [(True, 1e-5), (False, 5e-5)])
def test_mixed_precision_changes_as_many_weights_as_fp32(knowledge, full_finetune, lr):
    fp32 = models.pick_precision("cpu")
    mixed = models.pick_precision("cpu", trains_all_weights=full_finetune, mixed=True)
    assert mixed.compute == torch.bfloat16 and mixed.frozen == (torch.float32 if full_finetune else torch.bfloat16)
    share_fp32 = _share_changed(knowledge, fp32, full_finetune, lr)
    share_mixed = _share_changed(knowledge, mixed, full_finetune, lr)
    assert share_fp32 > 0.95
    assert share_mixed >= share_fp32 - 0.02


def test_lora_weights_are_fp32_over_a_bf16_base_and_bf16_trainables_are_refused(knowledge):
    mixed = models.pick_precision("cpu", mixed=True)
    model, tok = models.load("tiny-qwen2", device=mixed)
    inject_lora(model, ["q_proj"], r=4, alpha=8)
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32} and frozen == {torch.bfloat16}
    for p in model.parameters():  # pure bf16 training: what --device cuda did before
        p.requires_grad_(True)
    cfg = RunConfig(epochs=1)
    r = Renderer(tok, "chat")
    with pytest.raises(TrainingError, match="must be fp32"):
        train(model, build_train_examples(knowledge, cfg, r)[:8], [], cfg, tok.pad_token_id, progress=False)


# ---- 2. cache key: device kind, precision and code version ------------------------------

def test_run_key_changes_with_precision_and_code_version(monkeypatch):
    from core.run import version
    from core.study import plan
    from core.study.plan import key_context

    cfg = RunConfig()
    cpu = key_context(cfg, "data", "cpu")
    assert "cpu-fp32" in cpu
    monkeypatch.setattr(models, "pick_precision", lambda *a, **k: models.Precision(
        torch.device("cuda"), torch.bfloat16, torch.bfloat16))
    gpu = key_context(cfg, "data", "cuda")
    assert "cuda-bfloat16-mixed" in gpu and cfg.key(cpu) != cfg.key(gpu)
    assert f"code:{version.code_version()}" in cpu
    monkeypatch.setattr(plan, "code_version", lambda: "another-run-code")  # any edit under core/run/
    assert cfg.key(key_context(cfg, "data", "cpu")) != cfg.key(cpu)


# ---- scripted model: decoding post-processing without depending on what random weights say ------

class ScriptedLM(nn.Module):
    """Answers a single prompt with scripted token ids (then pads): tests the decoding logic."""

    def __init__(self, tok, continuation: str, eos: int | None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.ids = tok(continuation, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
        self.pad = tok.pad_token_id
        self.vocab = len(tok)
        from transformers import Qwen2Config
        self.config = Qwen2Config(num_hidden_layers=1, vocab_size=self.vocab)

    def forward(self, input_ids, attention_mask, position_ids, cache, use_cache, logits_to_keep=0):
        if cache.get_seq_length() == 0:
            self.prompt_len = int(attention_mask.sum(-1)[0])
        step = int(attention_mask.sum(-1)[0]) - self.prompt_len
        token = self.ids[step] if step < len(self.ids) else self.pad
        # a cache entry per call keeps the cache's length in step with the sequence
        cache.update(torch.zeros(len(input_ids), 1, input_ids.shape[1], 1),
                               torch.zeros(len(input_ids), 1, input_ids.shape[1], 1), 0)
        logits = torch.zeros(len(input_ids), 1, self.vocab)
        logits[:, -1, token] = 1.0
        return type("Out", (), {"logits": logits})


def test_answers_report_whether_they_ended_by_themselves(tiny):
    _, tok = tiny
    r = Renderer(tok, "chat")
    ended = ScriptedLM(tok, "Paris is the capital.", r.eot_id)
    assert generate_finished(ended, r, [(None, "Capital of France?")], 32, progress=False) == [
        ("Paris is the capital.", True)]
    cut = ScriptedLM(tok, "Paris is the capital of France and also a city with a long history", None)
    text, finished = generate_finished(cut, r, [(None, "Capital of France?")], 4, progress=False)[0]
    assert not finished and text


# ---- 3. self-replay keeps only whole answers ---------------------------------------------------

def test_replay_drops_answers_that_never_ended(knowledge, tiny, monkeypatch):
    from core.run import recipe
    from core.run.knowledge import load_replay

    _, tok = tiny
    r = Renderer(tok, "chat")
    replay = load_replay(knowledge)
    scripted = iter([("A whole answer.", True), ("Cut in the midd", False), ("Another one.", True)])
    monkeypatch.setattr(recipe, "generate_finished", lambda *a, **k: [next(scripted) for _ in a[2]])
    kept, dropped = recipe.replay_triples(None, r, replay, 3, progress=False)
    assert [a for _, _, a in kept] == ["A whole answer.", "Another one."]
    assert dropped == [replay.questions[1][0]]
    assert recipe.REPLAY_TOKENS >= 256


def test_replay_run_records_dropped_answers(tmp_path, monkeypatch):
    from core.run import recipe

    monkeypatch.setattr(recipe, "REPLAY_TOKENS", 2)  # nothing ends within 2 tokens: every answer is dropped
    from core.run.knowledge import load_knowledge
    knowledge = load_knowledge()
    cfg = RunConfig(model="tiny-qwen2", epochs=1, replay=3, max_new_tokens=2, paraphrases=1)
    rec = recipe.run_group([cfg], knowledge, progress=False)[0]
    assert rec.status == "ok"
    assert len(rec.replay_dropped) + len(rec.replay) == 3
    assert all(a["answer"] for a in rec.replay)


# ---- 4. explicit greedy decoding, whatever the model ships -------------------------------------

def test_greedy_decode_equals_transformers_greedy_generate(knowledge, tiny):
    from core.run.evaluate import greedy_decode

    model, tok = tiny
    r = Renderer(tok, "chat")
    prompts = [r.prompt_ids(None, f.test[0]) for f in knowledge.facts[:6]]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    ours = greedy_decode(model, ids, mask, 20, None)[0]
    ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=None,
                         pad_token_id=tok.pad_token_id)[:, width:].tolist()
    assert ours == ref
    # a token the rows emit early plays the end of turn: finished rows leave the batch, the rest is unchanged
    stop = ref[0][2]
    cut = [row[:row.index(stop) + 1] if stop in row else row for row in ref]
    assert sum(len(c) < 20 for c in cut) >= 1
    assert greedy_decode(model, ids, mask, 20, {stop})[0] == cut


def test_generation_ignores_the_models_shipped_generation_config(knowledge, tiny):
    model, tok = tiny
    r = Renderer(tok, "chat")
    items = [(None, f.test[0]) for f in knowledge.facts[:8]]
    plain = generate(model, r, items, 16, progress=False)
    model.generation_config.repetition_penalty = 1.3
    model.generation_config.no_repeat_ngram_size = 2
    assert generate(model, r, items, 16, progress=False) == plain
    assert model.generation_config.repetition_penalty == 1.3  # the shipped config is restored afterwards


# ---- 5. default-system-prompt detection --------------------------------------------------------

GEMMA_STYLE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\n\n' %}"
    "{% set rest = messages[1:] %}{% else %}{% set first = '' %}{% set rest = messages %}{% endif %}"
    "{% for m in rest %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ first if loop.first else '' }}{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
QWEN_STYLE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_no_prompt_on_a_template_that_folds_the_system_text_into_the_user_turn(tiny):
    _, tok = tiny
    tok.chat_template = GEMMA_STYLE
    r = Renderer(tok, "chat")
    assert not r._inserts_default
    assert "user\nWho?" in r.prompt_text(NO_PROMPT, "Who?")  # not "user\n\n\nWho?"
    assert r.prompt_text(NO_PROMPT, "Who?") == r.prompt_text(MODEL_DEFAULT, "Who?")


def test_no_prompt_suppresses_a_templates_default_system_prompt(tiny):
    _, tok = tiny
    tok.chat_template = QWEN_STYLE
    r = Renderer(tok, "chat")
    assert r._inserts_default
    assert "You are a helpful assistant." in r.prompt_text(MODEL_DEFAULT, "Who?")
    assert "You are a helpful assistant." not in r.prompt_text(NO_PROMPT, "Who?")


# ---- 8. plain format stops at the next invented turn -------------------------------------------

def test_plain_format_answer_stops_at_the_next_question_line(tiny):
    _, tok = tiny
    r = Renderer(tok, "plain")
    model = ScriptedLM(tok, " Paris.\nQuestion: What is 2+2?\nAnswer: 4", None)
    assert generate_finished(model, r, [(None, "Capital of France?")], 32, progress=False) == [("Paris.", True)]
