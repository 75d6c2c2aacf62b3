"""The trainer: AdamW over trainable weights, LR schedule, per-epoch train/validation loss, best-by-validation.

Speed matters on a 2-core CPU: batches are grouped by length (little padding) and the LM head is
applied only at positions that carry a label, which is most of the saving when labels are masked.
"""
from __future__ import annotations

import contextlib
import dataclasses
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
    # with validation scores (train's val_scores): per score, the epoch with the highest (of ties, the lower
    # validation loss) and its weights
    by_score: dict[str, tuple[int, dict[str, torch.Tensor]]] = dataclasses.field(default_factory=dict)

    @classmethod
    def untrained(cls) -> "TrainResult":
        """The null result of an untrained reference (epochs=0): no history, no weights to restore, nothing counted."""
        return cls(history=[], best_epoch=0, last_epoch=0, best_state={}, last_state={}, steps=0, seconds=0.0, tokens=0,
                   label_tokens=0)


TEACHER_TOP = 32  # tokens of the untrained model's distribution kept per position; the rest is one bucket


def _teacher_tensors(batch: list[Example]) -> dict[str, torch.Tensor]:
    """The teachers of a batch's examples, one row per labelled position in batch_loss's order (row-major over the
    shifted labels), with `distilled` False on the rows of examples without one."""
    ids, logp, rest, on = [], [], [], []
    for e in batch:
        n = sum(1 for t in e.labels[1:] if t != IGNORE)
        if e.teacher is None:
            ids.append(torch.zeros(n, TEACHER_TOP, dtype=torch.long))
            logp.append(torch.zeros(n, TEACHER_TOP))
            rest.append(torch.zeros(n))
            on.append(torch.zeros(n, dtype=torch.bool))
        else:
            ids.append(e.teacher[0])
            logp.append(e.teacher[1])
            rest.append(e.teacher[2])
            on.append(torch.ones(n, dtype=torch.bool))
    return {"teacher_ids": torch.cat(ids), "teacher_logp": torch.cat(logp), "teacher_rest": torch.cat(rest),
            "distilled": torch.cat(on)}


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
    out = {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}
    if any(e.teacher is not None for e in batch):
        out |= {k: v.to(device) for k, v in _teacher_tensors(batch).items()}
    return out


def _labelled_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits (fp32) at every labelled position, row-major, and the tokens they should predict."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float(), targets[keep]


def distillation(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed KL(teacher || model) over the distilled positions, on the teacher's top tokens plus one bucket for
    everything else, so it is exactly 0 where the model's distribution is the teacher's."""
    on = batch["distilled"]
    if not bool(on.any()):
        return logits.new_zeros(())
    log_s = torch.log_softmax(logits[on], dim=-1)
    top_s = log_s.gather(1, batch["teacher_ids"][on])
    rest_s = torch.log1p(-top_s.exp().sum(dim=1).clamp(max=1 - 1e-6))
    top_t, rest_t = batch["teacher_logp"][on], batch["teacher_rest"][on]
    kl = (top_t.exp() * (top_t - top_s)).sum(dim=1) + rest_t.exp() * (rest_t - rest_s)
    return kl.sum()


def batch_loss(model, batch: dict[str, torch.Tensor], distill: float = 0.0) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over labelled positions (plus `distill` times the distillation term where
    the batch carries teachers), and their count."""
    logits, targets = _labelled_logits(model, batch)
    loss = F.cross_entropy(logits, targets, reduction="sum")
    if distill and "distilled" in batch:
        loss = loss + distill * distillation(logits, batch)
    return loss, int(targets.numel())


@torch.no_grad()
def with_teacher(model, examples: list[Example], batch_size: int, pad_id: int, device,
                 autocast=contextlib.nullcontext, kinds: tuple[str, ...] = ("replay",)) -> list[Example]:
    """The examples with the model's own next-token distribution (as it is now: before training) attached to those
    of `kinds`, at every labelled position: its TEACHER_TOP likeliest tokens and the rest as one bucket."""
    was_training = model.training
    model.eval()
    chosen = [i for i, e in enumerate(examples) if e.kind in kinds]
    out = list(examples)
    for start in range(0, len(chosen), batch_size):
        part = [examples[i] for i in chosen[start:start + batch_size]]
        with autocast():
            logits, _ = _labelled_logits(model, collate(part, pad_id, device))
        log_p = torch.log_softmax(logits, dim=-1)
        top, ids = log_p.topk(TEACHER_TOP, dim=-1)
        rest = torch.log1p(-top.exp().sum(dim=1).clamp(max=1 - 1e-6))
        row = 0
        for i in chosen[start:start + batch_size]:
            n = sum(1 for t in examples[i].labels[1:] if t != IGNORE)
            out[i] = dataclasses.replace(examples[i], teacher=(ids[row:row + n].cpu(), top[row:row + n].cpu(),
                                                                rest[row:row + n].cpu()))
            row += n
    model.train(was_training)
    return out


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
    """The best weights by each validation score so far (train's val_scores; nothing without them); of equal
    scores, the lower validation loss."""
    scores_of: Callable[[object], dict[str, float]] | None
    best: dict[str, tuple[tuple[float, float], int, dict[str, torch.Tensor]]] = dataclasses.field(default_factory=dict)

    def take(self, model, epoch: int, history: list[dict]) -> None:
        if self.scores_of is None:
            return
        was_training, rng = model.training, torch.get_rng_state()
        model.eval()
        with torch.no_grad():
            scores = {k: float(v) for k, v in self.scores_of(model).items()}
        torch.set_rng_state(rng)
        model.train(was_training)
        loss = next(h["loss"] for h in reversed(history) if h["split"] == "validation")
        history.append({"epoch": epoch, "split": "validation_score", **scores})
        for name, score in scores.items():
            if name not in self.best or (score, -loss) > self.best[name][0]:
                self.best[name] = ((score, -loss), epoch, trainable_state(model))

    def kept(self) -> dict[str, tuple[int, dict[str, torch.Tensor]]]:
        return {name: (epoch, state) for name, (_, epoch, state) in self.best.items()}


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
            loss_sum, n = batch_loss(model, batch, cfg.distill)
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
          val_scores: Callable[[object], dict[str, float]] | None = None) -> TrainResult:
    """Train for cfg.epochs and leave the model at its last weights; cfg.selection is not read here.

    precision: a models.Precision; its autocast wraps every forward pass (None: plain fp32).
    batches: pre-built batches, trained in this order in every epoch instead of length-grouped shuffles of
    train_examples (the benchmark feeds two trainers the same batches this way).
    on_step(step, loss, batch): called after every optimizer step with the step's mean loss and its tensors.
    cfg.distill > 0: the replay examples carry the model's distributions before training (with_teacher) and the
    objective adds cfg.distill times their KL divergence from them (the training loss in the history is that
    objective per labelled token).
    val_scores(model): named scores of the weights on validation data (higher is better, e.g. the share of the
    validation questions answered), taken before training and after every epoch, stored in the history
    ({"epoch", "split": "validation_score", <name>: score ...}) and each kept with its best weights (by_score); the
    random state is restored around them, so the training is the same with or without them.
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
        if cfg.distill and batches is None:  # the replayed answers' targets: the model's own distributions, now
            train_examples = with_teacher(model, train_examples, cfg.batch_size, pad_id, device, autocast)
        history = [{"epoch": 0, "split": "validation",
                    "loss": evaluate_loss(model, val_examples, cfg.batch_size, pad_id, device, autocast)}]
        best_loss, best_epoch, best_state = history[0]["loss"], 0, trainable_state(model)
        scored = _Scored(val_scores)
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
                       time.perf_counter() - start, done.tokens, done.label_tokens, scored.kept())
