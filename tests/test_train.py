"""Trainer behaviour on the tiny model: best-by-validation restore, determinism, non-finite loss."""
import warnings

import pytest
import torch

from core.run.config import RunConfig
from core.run.examples import Renderer, build_train_examples, build_validation_examples, encode
from core.run.lora import inject_lora, trainable_state
from core.run.train import TrainingError, lr_factor, train


def _setup(knowledge, cfg, tiny):
    model, tok = tiny
    torch.manual_seed(cfg.seed)
    inject_lora(model, cfg.lora_targets, cfg.lora_r, cfg.lora_alpha)
    r = Renderer(tok, "chat")
    return model, tok, r, build_train_examples(knowledge, cfg, r), build_validation_examples(knowledge, cfg, r)


def test_same_seed_gives_identical_losses(knowledge):
    from core.run.models import load

    cfg = RunConfig(epochs=2, lr=1e-2, paraphrases=1)
    runs = []
    for _ in range(2):
        model, tok, _, tr, val = _setup(knowledge, cfg, load("tiny-qwen2"))
        runs.append(train(model, tr, val, cfg, tok.pad_token_id, progress=False).history)
    assert runs[0] == runs[1]
    assert runs[0][-1]["loss"] != runs[0][0]["loss"]


def test_training_lowers_training_loss(knowledge, tiny):
    cfg = RunConfig(epochs=3, lr=1e-2, paraphrases=1)
    model, tok, _, tr, val = _setup(knowledge, cfg, tiny)
    hist = train(model, tr, val, cfg, tok.pad_token_id, progress=False).history
    losses = [h["loss"] for h in hist if h["split"] == "train"]
    assert losses[-1] < losses[0]


def test_training_returns_the_best_and_the_last_weights(knowledge, tiny):
    # validation answers contradict the training answers, so validation loss rises as training proceeds
    cfg = RunConfig(epochs=4, lr=2e-2, paraphrases=1, debate=False, lr_schedule="constant", warmup_ratio=0.0)
    model, tok, r, tr, _ = _setup(knowledge, cfg, tiny)
    val = [encode(r, "fact", e.source_id, e.system, e.question, "zzz qqq xxx " * 3, True) for e in tr[:8]]
    start = trainable_state(model)
    res = train(model, tr, val, cfg, tok.pad_token_id, progress=False)
    vals = [h["loss"] for h in res.history if h["split"] == "validation"]
    assert vals[-1] > min(vals)
    assert res.best_epoch == vals.index(min(vals)) and res.last_epoch == 4
    now = trainable_state(model)  # train() leaves the last weights; run.py chooses which to keep
    assert all(torch.equal(now[k], res.last_state[k]) for k in now)
    assert not all(torch.equal(res.best_state[k], res.last_state[k]) for k in now)
    if res.best_epoch == 0:
        assert all(torch.equal(res.best_state[k], start[k]) for k in now)


def test_train_does_not_read_the_selection_field(knowledge):
    from core.run.models import load

    results = []
    for selection in ("best", "last"):
        cfg = RunConfig(epochs=2, lr=1e-2, paraphrases=1, selection=selection)
        model, tok, _, tr, val = _setup(knowledge, cfg, load("tiny-qwen2"))
        results.append(train(model, tr, val, cfg, tok.pad_token_id, progress=False))
    assert results[0].history == results[1].history
    assert all(torch.equal(results[0].last_state[k], results[1].last_state[k]) for k in results[0].last_state)


def test_a_validation_score_keeps_its_best_weights_without_changing_the_training(knowledge):
    from core.run.models import load

    cfg = RunConfig(epochs=3, lr=1e-2, paraphrases=1)
    plain_model, tok, _, tr, val = _setup(knowledge, cfg, load("tiny-qwen2"))
    plain = train(plain_model, tr, val, cfg, tok.pad_token_id, progress=False)
    scripted = iter([0.0, 0.5, 0.25, 0.5])  # epochs 0..3: the best score first at epoch 1, tied at epoch 3
    states = []

    def scores(model):
        assert not model.training
        states.append(trainable_state(model))
        torch.rand(3)  # a score that draws random numbers leaves the training's random state alone
        return {"a": next(scripted), "b": -len(states)}  # b: best at epoch 0

    model, tok, _, tr, val = _setup(knowledge, cfg, load("tiny-qwen2"))
    res = train(model, tr, val, cfg, tok.pad_token_id, progress=False, val_scores=scores)
    assert [h for h in res.history if h["split"] != "validation_score"] == plain.history
    assert [h["a"] for h in res.history if h["split"] == "validation_score"] == [0.0, 0.5, 0.25, 0.5]
    losses = {h["epoch"]: h["loss"] for h in res.history if h["split"] == "validation"}
    best = 1 if losses[1] <= losses[3] else 3  # of the tied scores, the lower validation loss
    assert res.by_score["a"][0] == best and res.by_score["b"][0] == 0
    assert all(torch.equal(res.by_score["a"][1][k], states[best][k]) for k in states[best])
    assert plain.by_score == {}


def test_non_finite_loss_stops_with_a_one_line_error_and_no_stray_warning(knowledge, tiny):
    cfg = RunConfig(epochs=3, lr=1e30, paraphrases=1, grad_clip=0.0, warmup_ratio=0.0, lr_schedule="constant")
    model, tok, _, tr, val = _setup(knowledge, cfg, tiny)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TrainingError, match="non-finite training loss") as err:
            train(model, tr, val, cfg, tok.pad_token_id, progress=False)
    assert len(str(err.value).splitlines()) == 1
    assert not [w for w in caught if issubclass(w.category, UserWarning)], [str(w.message) for w in caught]


def test_zero_trainable_parameters_gives_a_flat_loss(knowledge, tiny):
    model, tok = tiny
    cfg = RunConfig(epochs=2, paraphrases=1)
    inject_lora(model, r"transformer\.h\.\d+\.attn\.c_attn", strict=False)
    r = Renderer(tok, "chat")
    res = train(model, build_train_examples(knowledge, cfg, r), build_validation_examples(knowledge, cfg, r), cfg,
                tok.pad_token_id, progress=False)
    vals = [h["loss"] for h in res.history if h["split"] == "validation"]
    assert max(vals) - min(vals) < 1e-6


def test_pre_built_batches_are_trained_in_their_order_every_epoch_and_each_step_is_reported(knowledge, tiny):
    cfg = RunConfig(epochs=2, lr=1e-2, paraphrases=1, lr_schedule="constant", warmup_ratio=0.0)
    model, tok, _, tr, _ = _setup(knowledge, cfg, tiny)
    batches = [tr[8:12], tr[:3], tr[20:28]]
    seen = []

    def on_step(step, loss, batch):
        rows = [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
        seen.append((step, rows, loss))

    res = train(model, [e for b in batches for e in b], [], cfg, tok.pad_token_id, progress=False, batches=batches,
                on_step=on_step)
    assert res.steps == 6 and [step for step, _, _ in seen] == list(range(6))
    assert [rows for _, rows, _ in seen] == [[e.input_ids for e in b] for b in batches] * 2
    assert res.tokens == 2 * sum(len(e.input_ids) for b in batches for e in b)
    train_losses = [h["loss"] for h in res.history if h["split"] == "train"]
    assert all(loss > 0 for _, _, loss in seen) and len(train_losses) == 2


def test_lr_schedules():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, "cosine") < 0.01
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(80, 100, 0, "constant") == 1.0


def test_training_runs_eager_attention_on_a_cpu_and_gives_the_model_back_its_own(knowledge, tiny):
    model, tok, _, train_ex, val_ex = _setup(knowledge, RunConfig(epochs=1), tiny)
    before = model.config._attn_implementation
    assert before != "eager"  # loaded with SDPA, as a transformers model is by default
    during = []
    train(model, train_ex, val_ex, RunConfig(epochs=1), tok.pad_token_id, progress=False,
          on_step=lambda step, loss, batch: during.append(model.config._attn_implementation))
    assert during and set(during) == {"eager"}
    assert model.config._attn_implementation == before


def test_distillation_is_zero_while_the_model_is_the_untrained_one_and_grows_as_it_trains(knowledge):
    from core.run.models import load
    from core.run.train import _labelled_logits, collate, distillation, with_teacher

    cfg = RunConfig(epochs=2, lr=2e-2, paraphrases=1, replay=2, distill=1.0, lr_schedule="constant",
                    warmup_ratio=0.0)
    model, tok = load("tiny-qwen2")
    torch.manual_seed(0)
    inject_lora(model, cfg.lora_targets, 4, 8)  # B = 0: the adapted model is the untrained one
    r = Renderer(tok, "chat")
    replayed = [("verb", "What is a verb?", "A word for an action."), ("blue", "Name a colour.", "Blue.")]
    examples = with_teacher(model, build_train_examples(knowledge, cfg, r, replayed), 8, tok.pad_token_id, "cpu")
    assert [e.teacher is not None for e in examples] == [e.kind == "replay" for e in examples]
    replay = [e for e in examples if e.kind == "replay"]
    batch = collate(replay, tok.pad_token_id, "cpu")
    with torch.no_grad():
        assert float(distillation(_labelled_logits(model, batch)[0], batch)) == 0.0
        mixed = collate(replay + examples[:2], tok.pad_token_id, "cpu")  # fact rows carry no teacher
        assert int(mixed["distilled"].sum()) == sum(len(e.teacher[0]) for e in replay)
    train(model, [e for e in examples if e.kind != "replay"], [], cfg, tok.pad_token_id, progress=False)
    with torch.no_grad():
        assert float(distillation(_labelled_logits(model, batch)[0], batch)) > 0.01  # trained on facts: it moved


def test_training_with_distill_adds_the_term_to_its_objective(knowledge):
    from core.run.models import load

    replayed = [("verb", "What is a verb?", "A word for an action."), ("blue", "Name a colour.", "Blue.")]
    histories = []
    for distill in (0.0, 2.0):
        cfg = RunConfig(epochs=2, lr=2e-2, paraphrases=1, replay=2, distill=distill)
        model, tok, r, _, val = _setup(knowledge, cfg, load("tiny-qwen2"))
        tr = build_train_examples(knowledge, cfg, r, replayed)
        histories.append(train(model, tr, val, cfg, tok.pad_token_id, progress=False).history)
    first_epoch = [[h["loss"] for h in hist if h["split"] == "train"][0] for hist in histories]
    assert first_epoch[1] > first_epoch[0]  # the same first steps, plus a KL that is > 0 once the weights move
