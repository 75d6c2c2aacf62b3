"""The trainer: AdamW over trainable weights, LR schedule, per-epoch train/validation loss, best-by-validation.

Speed matters on a 2-core CPU: batches are grouped by length (little padding) and the LM head is
applied only at positions that carry a label, which is most of the saving when labels are masked.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from core.run.config import RunConfig
from core.run.examples import IGNORE, Example
from core.run.lora import trainable_state


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss)."""


@dataclass
class TrainResult:
    """What training produced; which weights a run keeps (best or last) is the caller's choice."""
    history: list[dict]  # tidy: {"epoch", "split", "loss"}
    best_epoch: int  # epoch with the lowest validation loss (0 = before training)
    last_epoch: int
    best_state: dict[str, torch.Tensor]  # trainable weights at best_epoch
    last_state: dict[str, torch.Tensor]  # trainable weights after the last epoch
    steps: int
    seconds: float
    tokens: int  # all non-pad tokens processed in training
    label_tokens: int  # tokens that carried a loss
    # with a validation score (train's val_score): the epoch with the highest score (of ties, the lowest validation
    # loss) and its weights
    best_score_epoch: int | None = None
    best_score_state: dict[str, torch.Tensor] | None = None

    @classmethod
    def untrained(cls) -> "TrainResult":
        """The null result of an untrained reference (epochs=0): no history, no weights to restore, nothing counted."""
        return cls(history=[], best_epoch=0, last_epoch=0, best_state={}, last_state={}, steps=0, seconds=0.0, tokens=0,
                   label_tokens=0)


def collate(batch: list[Example], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def batch_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over labelled positions, and their count."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss, int(keep.sum())


def length_grouped_batches(examples: list[Example], batch_size: int, rng: random.Random) -> list[list[Example]]:
    """Shuffle, sort by length inside windows of 8 batches, then shuffle the batch order."""
    order = examples[:]
    rng.shuffle(order)
    window = batch_size * 8
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda e: len(e.input_ids))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def evaluate_loss(model, examples: list[Example], batch_size: int, pad_id: int, device,
                  autocast=contextlib.nullcontext) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    ordered = sorted(examples, key=lambda e: len(e.input_ids))
    for i in range(0, len(ordered), batch_size * 2):
        with autocast():
            loss, n = batch_loss(model, collate(ordered[i:i + batch_size * 2], pad_id, device))
        total += float(loss)
        count += n
    model.train(was_training)
    return total / max(count, 1)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# Tests only: a training that reaches optimizer step KILL_AT_STEP kills its own process with SIGKILL, as a crash or
# `kill -9` would, at an exact point instead of after a sleep. With KILL_TOKENS set (a folder of files), each kill
# takes one file and no file left means no kill, so a test decides how many processes die.
KILL_AT_STEP = "HIAHIA_TEST_KILL_AT_STEP"
KILL_TOKENS = "HIAHIA_TEST_KILL_TOKENS"


def _kill_point(step: int) -> None:
    at = os.environ.get(KILL_AT_STEP)
    if at is None or int(at) != step:
        return
    if tokens := os.environ.get(KILL_TOKENS):
        for token in sorted(Path(tokens).iterdir()):
            try:
                token.unlink()  # exactly one process removes each file
                break
            except FileNotFoundError:
                continue
        else:
            return
    os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def training_attention(model, device):
    """On a CPU, train (and compute validation losses) with eager attention, then give the model back its own.

    At the study's sequence lengths (tens of tokens) the CPU SDPA flash-attention kernel takes about a quarter of
    a training step for ~2% of its FLOPs; eager attention trains 1.3-1.45x faster. It changes losses at the bf16
    rounding level, so it is part of what a run executes (the code version in every run key); a GPU keeps its
    fused kernels."""
    before = model.config._attn_implementation
    wanted = "eager" if torch.device(device).type == "cpu" else before
    if wanted != before:
        model.set_attn_implementation(wanted)
    try:
        yield
    finally:
        if wanted != before:
            model.set_attn_implementation(before)


@dataclass
class _Scored:
    """The best weights by a validation score so far (train's val_score; nothing without one); of equal scores, the
    lower validation loss."""
    score_of: Callable[[object], float] | None
    best: tuple[float, float] = (-math.inf, -math.inf)
    epoch: int | None = None
    state: dict[str, torch.Tensor] | None = None

    def take(self, model, epoch: int, history: list[dict]) -> None:
        if self.score_of is None:
            return
        was_training, rng = model.training, torch.get_rng_state()
        model.eval()
        with torch.no_grad():
            score = float(self.score_of(model))
        torch.set_rng_state(rng)
        model.train(was_training)
        loss = next(h["loss"] for h in reversed(history) if h["split"] == "validation")
        history.append({"epoch": epoch, "split": "validation_recall", "recall": score})
        if (score, -loss) > self.best:
            self.best, self.epoch, self.state = (score, -loss), epoch, trainable_state(model)


@dataclass
class _Progress:
    """Counters of one training, across its epochs."""
    step: int = 0
    tokens: int = 0
    label_tokens: int = 0


def _epoch(model, batches: list[list[Example]], optimizer, params, cfg: RunConfig, pad_id: int, device, autocast,
           schedule: tuple[int, int], epoch: int, done: _Progress, bar, on_step) -> float:
    """One pass over `batches`; returns the epoch's mean training loss per labelled token."""
    total_steps, warmup = schedule
    epoch_loss, epoch_count = 0.0, 0
    for batch_examples in batches:
        _kill_point(done.step)
        batch = collate(batch_examples, pad_id, device)
        for group in (optimizer.param_groups if optimizer else []):
            group["lr"] = cfg.lr * lr_factor(done.step, total_steps, warmup, cfg.lr_schedule)
        with torch.set_grad_enabled(optimizer is not None), autocast():
            loss_sum, n = batch_loss(model, batch)
            loss = loss_sum / max(n, 1)
        if not torch.isfinite(loss):
            baseline = RunConfig().lr
            suggested = baseline if cfg.lr > baseline else cfg.lr / 10  # the recipe's rate, unless already below it
            raise TrainingError(
                f"non-finite training loss ({loss.detach().item()}) at epoch {epoch}, step {done.step} with "
                f"lr={cfg.lr:g}; lower the learning rate (e.g. --set lr={suggested:g}"
                + (", the recipe's rate)" if suggested == baseline else ")"))
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
        epoch_loss += loss_sum.item()
        epoch_count += n
        done.tokens += int(batch["attention_mask"].sum())
        done.label_tokens += n
        if on_step is not None:
            on_step(done.step, loss.item(), batch)
        done.step += 1
        bar.update(1)
        bar.set_postfix(epoch=f"{epoch}/{cfg.epochs}", loss=f"{loss.item():.3f}")
    return epoch_loss / max(epoch_count, 1)


def train(model, train_examples: list[Example], val_examples: list[Example], cfg: RunConfig, pad_id: int,
          progress: bool = True, desc: str = "train", precision=None, batches: list[list[Example]] | None = None,
          on_step: Callable[[int, float, dict[str, torch.Tensor]], None] | None = None,
          val_score: Callable[[object], float] | None = None) -> TrainResult:
    """Train for cfg.epochs and leave the model at its last weights; cfg.selection is not read here.

    precision: a models.Precision; its autocast wraps every forward pass (None: plain fp32).
    batches: pre-built batches, trained in this order in every epoch instead of length-grouped shuffles of
    train_examples (the benchmark feeds two trainers the same batches this way).
    on_step(step, loss, batch): called after every optimizer step with the step's mean loss and its tensors.
    val_score(model): a score of the weights on the validation questions (higher is better, e.g. the share answered),
    taken before training and after every epoch, stored in the history ({"split": "validation_recall", "recall"})
    and kept with its weights (best_score_epoch); the random state is restored around it, so the training is the
    same with or without it.
    """
    device = next(model.parameters()).device
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    not_fp32 = sorted({str(p.dtype) for p in model.parameters() if p.requires_grad} - {"torch.float32"})
    if not_fp32:
        raise TrainingError(f"trainable weights must be fp32 (found {', '.join(not_fp32)}): updates would round away")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay) if params else None
    steps_per_epoch = len(batches) if batches is not None else math.ceil(len(train_examples) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    schedule = (total_steps, int(cfg.warmup_ratio * total_steps))
    bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not progress, leave=False, dynamic_ncols=True)
    with training_attention(model, device), contextlib.closing(bar):
        history = [{"epoch": 0, "split": "validation",
                    "loss": evaluate_loss(model, val_examples, cfg.batch_size, pad_id, device, autocast)}]
        best_loss, best_epoch, best_state = history[0]["loss"], 0, trainable_state(model)
        scored = _Scored(val_score)
        scored.take(model, 0, history)
        done = _Progress()
        start = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            epoch_batches = (batches if batches is not None
                             else length_grouped_batches(train_examples, cfg.batch_size, rng))
            loss = _epoch(model, epoch_batches, optimizer, params, cfg, pad_id, device, autocast, schedule, epoch,
                          done, bar, on_step)
            val = evaluate_loss(model, val_examples, cfg.batch_size, pad_id, device, autocast)
            history.append({"epoch": epoch, "split": "train", "loss": loss})
            history.append({"epoch": epoch, "split": "validation", "loss": val})
            if val < best_loss:
                best_loss, best_epoch, best_state = val, epoch, trainable_state(model)
            scored.take(model, epoch, history)
    model.eval()
    return TrainResult(history, best_epoch, cfg.epochs, best_state, trainable_state(model), done.step,
                       time.perf_counter() - start, done.tokens, done.label_tokens, scored.epoch, scored.state)
