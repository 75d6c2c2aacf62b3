"""The recipe: config -> model + LoRA -> examples -> training -> the selected checkpoint, in steps that the study's
run (run_group: evaluated into a RunRecord) and `hiahia train` (core/facts/train.py) both call.

Configs that differ only in `selection` or `interpolate` share one training (config.training_of): the final and the best-by-validation
weights are both evaluated from it. Checkpoint selection is decided here (use_checkpoint) and nowhere else.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from core.run import models
from core.run.config import RunConfig, training_of
from core.run.evaluate import Reference, evaluate, generate_finished, probes_answered, validation_recall
from core.run.examples import MODEL_DEFAULT, Renderer, build_train_examples, build_validation_examples, qa_pairs
from core.run.knowledge import KnowledgeSet, ReplaySet, load_replay
from core.run.lora import (InjectionError, enable_full_finetune, inject_lora, load_trainable_state, scaled_update,
                           trainable_state)
from core.run.record import RunRecord
from core.run.train import TrainingError, TrainResult, train
from core.run.version import code_version, git_commit


def resolve_format(cfg: RunConfig, tokenizer) -> str:
    if cfg.format == "auto":
        return "chat" if models.is_chat_model(tokenizer) else "plain"
    return cfg.format


def now() -> str:
    """The time a run finished, as records store it: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cpu_identity(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The CPU's model name and which bf16 matrix instructions it has (amx_bf16, avx512_bf16: they change how
    bf16 products are computed, so runs on different CPUs can differ in the last bits); empty where unreadable."""
    try:
        lines = Path(cpuinfo).read_text(errors="replace").splitlines()
    except OSError:
        return {}
    def field(name: str) -> str:
        return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(name)), "")

    flags = field("flags").split()
    return {"cpu_model": field("model name"), "cpu_bf16": [f for f in ("amx_bf16", "avx512_bf16") if f in flags]}


def environment(device: str) -> dict:
    import transformers

    return {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(), **cpu_identity(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
        "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None,
        "code_version": code_version(), "git_commit": git_commit(),
    }


def no_adapter(model) -> dict:
    """The injection report of an untrained reference: nothing targeted, nothing trainable."""
    total = sum(p.numel() for p in model.parameters())
    return {"targets": [], "matched": [], "trainable_params": 0, "total_params": total}


def attach_adapter(model, cfg: RunConfig) -> tuple[dict, str | None]:
    """Inject LoRA (or unfreeze everything). Returns the injection report and, when strict=False had to
    take over, the error the default strict injection raised (it goes into the results)."""
    if cfg.full_finetune:
        return enable_full_finetune(model).to_dict(), None
    args = (cfg.lora_targets, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.use_rslora)
    try:
        return inject_lora(model, *args, strict=True).to_dict(), None
    except InjectionError as e:
        if cfg.lora_strict:
            raise
        # strict=False reproduces the original's silent failure: nothing is wrapped, nothing trains
        return inject_lora(model, *args, strict=False).to_dict(), f"InjectionError: {e}"


# Budget for a replay answer. Measured with tools/replay_lengths.py on SmolLM2-135M-Instruct (first 40
# replay questions, budget 512): 34 answers end by themselves, median 78, p95 304, longest 305 tokens;
# 6 never end (they loop). 384 lets every answer that ends through; one that has not ended by then is
# dropped and counted, never cut and closed (48 tokens used to cut 28 of 40 mid-sentence).
REPLAY_TOKENS = 384


def replay_triples(model, renderer: Renderer, replay: ReplaySet, n: int, progress: bool, source: str = "general"
                   ) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The untrained model's own greedy answers to the n replay questions `source` names (ReplaySet.chosen), under
    its default prompt: (id, question, answer) for answers that ended by themselves, and the ids of those that did
    not."""
    chosen = replay.chosen(n, source)
    answers = generate_finished(model, renderer, [(MODEL_DEFAULT, q) for _, q in chosen], REPLAY_TOKENS,
                                progress=progress, desc="replay answers")
    kept = [(rid, q, a) for (rid, q), (a, finished) in zip(chosen, answers) if finished]
    dropped = [rid for (rid, _), (_, finished) in zip(chosen, answers) if not finished]
    return kept, dropped


@dataclass
class Loaded:
    """A model ready for the recipe: weights in the run's precision, the format it is prompted in."""
    model: object
    tokenizer: object
    renderer: Renderer
    precision: models.Precision
    seconds: float

    @property
    def fmt(self) -> str:
        return self.renderer.fmt


def load(cfg: RunConfig, device: str = "cpu", cache=None, mixed: bool | None = None) -> Loaded:
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    precision = models.pick_precision(device, trains_all_weights=cfg.full_finetune, mixed=mixed)
    model, tok = models.load(cfg.model, device=precision, cache=cache)
    return Loaded(model, tok, Renderer(tok, resolve_format(cfg, tok)), precision, time.perf_counter() - t0)


@dataclass
class Fitted:
    """What training left: the adapter's injection report and the trained result (both checkpoints)."""
    injection: dict
    strict_error: str | None  # the strict injection's error when lora_strict=False let the run go on
    train_examples: int
    validation_examples: int
    result: TrainResult
    initial: dict | None = None  # the trainable weights before training (kept for `interpolate`)


def fit(loaded: Loaded, cfg: RunConfig, knowledge: KnowledgeSet, replayed: list[tuple[str, str, str]],
        progress: bool = True, desc: str | None = None, announce=None, scored: frozenset[str] = frozenset(),
        keep_initial: bool = False) -> Fitted:
    """Attach the adapter (or unfreeze every weight), build the examples and train; epochs=0 trains nothing.
    announce(train_examples, steps): called once the examples are built, before training (progress lines).
    scored: the selections of SCORED_SELECTIONS whose best weights training keeps too (selection_scores).
    keep_initial: keep the trainable weights as they are before training (Fitted.initial, for interpolate).
    Raises TrainingError or InjectionError."""
    model = loaded.model
    torch.manual_seed(cfg.seed)  # LoRA A initialisation depends only on the seed
    injection, strict_error = (no_adapter(model), None) if cfg.epochs == 0 else attach_adapter(model, cfg)
    train_ex = build_train_examples(knowledge, cfg, loaded.renderer, replayed)
    val_ex = build_validation_examples(knowledge, cfg, loaded.renderer)
    if announce is not None:
        announce(len(train_ex), -(-len(train_ex) // cfg.batch_size) * cfg.epochs)
    initial = trainable_state(model) if keep_initial else None
    result = TrainResult.untrained() if cfg.epochs == 0 else train(
        model, train_ex, val_ex, cfg, loaded.tokenizer.pad_token_id, progress=progress,
        desc=desc or f"train {cfg.key()[:6]}", precision=loaded.precision,
        val_scores=selection_scores(loaded, cfg, knowledge, scored) if scored and val_ex else None)
    return Fitted(injection, strict_error, len(train_ex), len(val_ex), result, initial)


SCORED_SELECTIONS = ("best_recall", "best_recall_retention")  # kept by a validation score (selection_scores)


def keeps_best(fitted: Fitted, selection: str) -> bool:
    """best = the lowest validation loss, best_recall and best_recall_retention = the highest validation score
    (selection_scores), last = the final epoch. Without validation examples there is no best, and the last epoch
    is kept."""
    return selection in ("best", *SCORED_SELECTIONS) and fitted.validation_examples > 0


def use_checkpoint(model, fitted: Fitted, selection: str, interpolate: float = 1.0) -> int:
    """Load the weights `selection` keeps (keeps_best), their update scaled by `interpolate` (lora.scaled_update),
    and return their epoch."""
    result = fitted.result
    if not keeps_best(fitted, selection):
        epoch, state = result.last_epoch, result.last_state
    elif selection in SCORED_SELECTIONS:
        epoch, state = result.by_score[selection]
    else:
        epoch, state = result.best_epoch, result.best_state
    if interpolate != 1.0:
        state = scaled_update(fitted.initial, state, interpolate)
    load_trainable_state(model, state)
    return epoch


def selection_scores(loaded: Loaded, cfg: RunConfig, knowledge: KnowledgeSet, wanted: frozenset[str]):
    """The validation scores of the wanted selections, as one function of the weights (greedy, in the run's
    precision): best_recall, the share of the validation questions answered with their fact (under the run's
    evaluation prompts); best_recall_retention, that plus the share of the validation general-knowledge probes
    (validation_probes, never reported) still answered right among those the model answered right at its first
    call (epoch 0: before training)."""
    pairs = qa_pairs(knowledge, cfg)[1]
    before: dict[str, bool] = {}

    def scores(model) -> dict[str, float]:
        with loaded.precision.autocast():
            recall = validation_recall(model, loaded.renderer, knowledge, cfg, pairs)
            out = {"best_recall": recall} if "best_recall" in wanted else {}
            if "best_recall_retention" in wanted:
                right = probes_answered(model, loaded.renderer, knowledge, knowledge.validation_probes,
                                        cfg.max_new_tokens)
                before.update(right if not before else {})
                known = [k for k, ok in before.items() if ok]
                out["best_recall_retention"] = recall + (sum(right[k] for k in known) / len(known) if known else 0.0)
        return out
    return scores


def run_group(configs: list[RunConfig], knowledge: KnowledgeSet, device: str = "cpu", cache=None,
              progress: bool = True, reference: Reference | None = None, mixed: bool | None = None
              ) -> list[RunRecord]:
    """Train once and evaluate each config of a group that differs only in the evaluation-only fields (selection,
    interpolate)."""
    base = configs[0]
    if any(training_of(c.to_dict()) != training_of(base.to_dict()) for c in configs):
        raise ValueError("run_group: the configs of a group must differ only in selection and interpolate")
    t0 = time.perf_counter()
    loaded = load(base, device, cache, mixed)
    common = dict(model_identity=models.weights_fingerprint(base.model), model_card=models.model_card(base.model),
                  data_sha256=knowledge.sha256, resolved_format=loaded.fmt,
                  environment=dict(environment(device), precision=loaded.precision.tag),
                  shared_training=len(configs) > 1)
    replayed, replay_dropped = [], []
    if base.replay and base.epochs:  # answered before any adapter exists: the model's own behaviour
        replayed, replay_dropped = replay_triples(loaded.model, loaded.renderer, load_replay(knowledge), base.replay,
                                                  progress, base.replay_source)
    try:
        fitted = fit(loaded, base, knowledge, replayed, progress,
                     scored=frozenset(c.selection for c in configs) & frozenset(SCORED_SELECTIONS),
                     keep_initial=any(c.interpolate != 1.0 for c in configs))
    except (TrainingError, InjectionError) as e:
        return [RunRecord(**common, config=c.to_dict(), status="failed", error=f"{e.__class__.__name__}: {e}",
                          timings={"load": loaded.seconds, "total": time.perf_counter() - t0}, finished=now())
                for c in configs]
    result = fitted.result
    records = []
    for cfg in configs:
        selected = use_checkpoint(loaded.model, fitted, cfg.selection, cfg.interpolate)
        with loaded.precision.autocast():
            ev = evaluate(loaded.model, loaded.renderer, knowledge, cfg, progress=progress,
                          reference=reference)
        records.append(RunRecord(
            **common, config=cfg.to_dict(), status="ok", error=None, injection=fitted.injection,
            strict_error=fitted.strict_error, history=result.history, best_epoch=result.best_epoch,
            selected_epoch=selected, metrics=ev.metrics, per_fact=ev.per_fact, samples=ev.samples,
            retention_correct=ev.retention_correct,
            replay=[{"id": rid, "question": q, "answer": a} for rid, q, a in replayed], replay_dropped=replay_dropped,
            counts={"train_examples": fitted.train_examples, "validation_examples": fitted.validation_examples},
            timings={"load": loaded.seconds, "train": result.seconds, "eval": ev.seconds,
                     "total": time.perf_counter() - t0}, finished=now(),
            throughput={"steps": result.steps, "tokens": result.tokens, "label_tokens": result.label_tokens,
                        "tokens_per_s": result.tokens / result.seconds if result.seconds else None},
        ))
    return records
