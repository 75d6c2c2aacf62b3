"""One run: config -> model + LoRA -> examples -> training -> evaluation -> a RunRecord.

Configs that differ only in `selection` share one training: the final and the best-by-validation
weights are both evaluated from it (a selection ablation costs one training, not two).
Checkpoint selection is decided here and nowhere else.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from . import models
from .config import RunConfig
from .data import MODEL_DEFAULT, Renderer, build_train_examples, build_validation_examples
from .knowledge import KnowledgeSet, ReplaySet, load_replay
from .evaluate import evaluate, generate_finished
from .lora import InjectionError, enable_full_finetune, inject_lora, load_trainable_state
from .record import RunRecord
from .train import TrainingError, TrainResult, train
from .version import code_version, git_commit


def resolve_format(cfg: RunConfig, tokenizer) -> str:
    if cfg.format == "auto":
        return "chat" if models.is_chat_model(tokenizer) else "plain"
    return cfg.format


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


def replay_triples(model, renderer: Renderer, replay: ReplaySet, n: int, progress: bool
                   ) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The untrained model's own greedy answers to the first n replay questions, under its default prompt:
    (id, question, answer) for answers that ended by themselves, and the ids of those that did not."""
    chosen = replay.questions[:n]
    answers = generate_finished(model, renderer, [(MODEL_DEFAULT, q) for _, q in chosen], REPLAY_TOKENS,
                                progress=progress, desc="replay answers")
    kept = [(rid, q, a) for (rid, q), (a, finished) in zip(chosen, answers) if finished]
    dropped = [rid for (rid, _), (_, finished) in zip(chosen, answers) if not finished]
    return kept, dropped


def run_group(configs: list[RunConfig], knowledge: KnowledgeSet, device: str = "cpu", cache=None,
              progress: bool = True, retention_reference: dict | None = None, mixed: bool | None = None
              ) -> list[RunRecord]:
    """Train once and evaluate each config of a group that differs only in `selection`."""
    base = configs[0]
    assert all(c.replace(selection=base.selection) == base for c in configs), "group must differ only in selection"
    t0 = time.perf_counter()
    torch.manual_seed(base.seed)
    precision = models.pick_precision(device, trains_all_weights=base.full_finetune, mixed=mixed)
    model, tok = models.load(base.model, device=precision, cache=cache)
    fmt = resolve_format(base, tok)
    renderer = Renderer(tok, fmt)
    load_s = time.perf_counter() - t0
    torch.manual_seed(base.seed)  # LoRA A initialisation depends only on the seed
    common = dict(model_identity=models.weights_fingerprint(base.model), model_card=models.model_card(base.model),
                  data_sha256=knowledge.sha256, resolved_format=fmt,
                  environment=dict(environment(device), precision=precision.tag), shared_training=len(configs) > 1)
    replayed, replay_dropped = [], []
    if base.replay and base.epochs:  # answered before any adapter exists: the model's own behaviour
        replayed, replay_dropped = replay_triples(model, renderer, load_replay(knowledge), base.replay, progress)
    try:
        injection, strict_error = (no_adapter(model), None) if base.epochs == 0 else attach_adapter(model, base)
        train_ex = build_train_examples(knowledge, base, renderer, replayed)
        val_ex = build_validation_examples(knowledge, base, renderer)
        result = TrainResult.untrained() if base.epochs == 0 else train(
            model, train_ex, val_ex, base, tok.pad_token_id, progress=progress, desc=f"train {base.key()[:6]}",
            precision=precision)
    except (TrainingError, InjectionError) as e:
        return [RunRecord(**common, config=c.to_dict(), status="failed", error=f"{e.__class__.__name__}: {e}",
                          timings={"load": load_s, "total": time.perf_counter() - t0}) for c in configs]

    records = []
    for cfg in configs:
        best = cfg.selection == "best"
        load_trainable_state(model, result.best_state if best else result.last_state)
        with precision.autocast():
            ev = evaluate(model, renderer, knowledge, cfg, progress=progress, retention_reference=retention_reference)
        records.append(RunRecord(
            **common, config=cfg.to_dict(), status="ok", error=None, injection=injection, strict_error=strict_error,
            history=result.history, best_epoch=result.best_epoch,
            selected_epoch=result.best_epoch if best else result.last_epoch, metrics=ev.metrics,
            per_fact=ev.per_fact, samples=ev.samples, retention_correct=ev.retention_correct,
            replay=[{"id": rid, "question": q, "answer": a} for rid, q, a in replayed], replay_dropped=replay_dropped,
            counts={"train_examples": len(train_ex), "validation_examples": len(val_ex)},
            timings={"load": load_s, "train": result.seconds, "eval": ev.seconds, "total": time.perf_counter() - t0},
            throughput={"steps": result.steps, "tokens": result.tokens, "label_tokens": result.label_tokens,
                        "tokens_per_s": result.tokens / result.seconds if result.seconds else None},
        ))
    return records
