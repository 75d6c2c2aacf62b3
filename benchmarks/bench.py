#!/usr/bin/env python
"""Benchmark: this project's trainer and evaluator against transformers.Trainer + peft and one-at-a-time generate.

    python benchmarks/bench.py [--model smollm2-135m-instruct] [--steps 20] [--batch-size 8] [--seed 0]
                               [--eval-questions 32] [--threads N] [--out benchmarks/RESULTS.md]

Three measurements, all fp32 on the CPU, with the same model, data, LoRA, batch size, steps and seed:

1. Training. The baseline's training examples (core.data.build_train_examples under RunConfig defaults) are cut
   into a fixed list of `--steps` full batches, once, by the project's own length-grouped batcher. Both arms train
   on exactly these batches in this order, from identical LoRA weights (A from the project's initialiser with the
   seed, B = 0), with AdamW (same lr / weight decay / grad clip), a constant LR and no warmup:
     * ours: core.train.train itself (one epoch over the fixed batches; its batcher is swapped for the fixed
       list and the per-step loss recorded; the validation set is empty so no evaluation runs inside the timing);
     * reference: transformers.Trainer + peft (LoraConfig with the same r / alpha / targets, dropout 0), a
       sequential sampler over the same examples, a padding collator, per_device_train_batch_size, max_steps.
   Each arm runs in its own fresh process so its peak memory (psutil RSS, sampled in a thread) is its own.
2. Evaluation. core.evaluate.generate (batched, left-padded, KV cache) against model.generate called once per
   question, on the first --eval-questions test questions under the baseline's evaluation prompts, greedy,
   same max_new_tokens; answers per second and whether the answers are identical.
3. CPU matmul ceiling. fp32 torch.matmul throughput on the model's own layer shapes at the training batch's
   token count, best of several repeats, and the training run's achieved FLOP/s as a fraction of it.

The default --out depends on the model: benchmarks/RESULTS.md only for the default (real) model; tiny-qwen2
numbers go to the temporary directory unless --out is given, and are never written to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/bench.py` puts benchmarks/ first on the path, not the repo
    sys.path.insert(0, str(ROOT))

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-qwen2"
PUBLISHED = ROOT / "benchmarks" / "RESULTS.md"
LOSS_TOLERANCE = 0.05
TARGET_TRAIN_SPEEDUP = 1.5
TARGET_FLOP_FRACTION = 0.5
TARGET_EVAL_SPEEDUP = 5.0
LAST_STEPS = 5  # the final training loss is the mean over this many last steps


# ---- command line -------------------------------------------------------------------------------

def default_out(model: str) -> Path:
    if model == DEFAULT_MODEL:
        return PUBLISHED
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"
    if model == TINY_MODEL:
        return Path(tempfile.gettempdir()) / f"bench_{slug}.md"
    return ROOT / "benchmarks" / f"RESULTS-{slug}.md"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec as in core.models.load (default {DEFAULT_MODEL})")
    p.add_argument("--steps", type=int, default=20, help="training steps per arm (default 20)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-questions", type=int, default=32, help="test questions generated in the evaluation benchmark")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--out", default=None,
                   help="markdown report (default: benchmarks/RESULTS.md for the default model, "
                        "benchmarks/RESULTS-<model>.md for other real models, <tmp>/bench_tiny-qwen2.md for tiny-qwen2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--worker", choices=("ours", "ours-loop", "trainer", "eval", "matmul"), help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.eval_questions < 1:
        p.error("--steps, --batch-size and --eval-questions must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


# ---- shared worker set-up -----------------------------------------------------------------------

class PeakRSS:
    """Peak resident set size of this process, sampled by a thread every `interval` seconds."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.base = self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    def to_dict(self) -> dict:
        mb = 1024 * 1024
        return {"rss_before_mb": self.base / mb, "rss_peak_mb": self.peak / mb, "rss_delta_mb": (self.peak - self.base) / mb}


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def setup(args) -> dict:
    """Model, tokenizer, config, knowledge set, renderer, the baseline's training examples and the fixed batches."""
    import torch
    from transformers.utils import logging as hf_logging

    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    from core import models
    from core.config import RunConfig
    from core.data import Renderer, build_train_examples, load_knowledge

    t0 = time.perf_counter()
    model, tok = models.load(args.model, device="cpu")
    load_s = time.perf_counter() - t0
    # the baseline's defaults everywhere, except what the benchmark fixes: seed, batch size, constant LR, no warmup,
    # keep the last weights (nothing is restored after training)
    cfg = RunConfig(model=args.model, seed=args.seed, batch_size=args.batch_size, lr_schedule="constant",
                    warmup_ratio=0.0, selection="last")
    ks = load_knowledge()
    renderer = Renderer(tok, "chat")
    examples = build_train_examples(ks, cfg, renderer)
    return dict(torch=torch, model=model, tok=tok, cfg=cfg, ks=ks, renderer=renderer, examples=examples,
                batches=fixed_batches(examples, args.batch_size, args.steps, args.seed), load_s=load_s)


def fixed_batches(examples, batch_size: int, steps: int, seed: int) -> list:
    """`steps` full batches from the project's own length-grouped batcher (epoch after epoch, short batches dropped)."""
    from core.train import length_grouped_batches

    rng = random.Random(seed)
    out = []
    while len(out) < steps:
        full = [b for b in length_grouped_batches(examples, batch_size, rng) if len(b) == batch_size]
        if not full:
            raise SystemExit(f"--batch-size {batch_size} is larger than the {len(examples)} training examples")
        out += full
    return out[:steps]


def batch_stats(batches) -> dict:
    """Token counts exactly as the project's trainer counts them (labels shifted by one)."""
    from core.data import IGNORE

    tokens = sum(len(e.input_ids) for b in batches for e in b)
    label_tokens = sum(sum(1 for t in e.labels[1:] if t != IGNORE) for b in batches for e in b)
    padded = sum(len(b) * max(len(e.input_ids) for e in b) for b in batches)
    return {"tokens": tokens, "label_tokens": label_tokens, "padded_tokens": padded, "batches": len(batches),
            "first_batch_tokens": sum(len(e.input_ids) for e in batches[0]),
            "batch_hashes": [batch_hash([e.input_ids for e in b]) for b in batches]}


def batch_hash(rows) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([list(map(int, r)) for r in rows]).encode()).hexdigest()[:12]


def model_shape(model) -> dict:
    """Parameter counts and dimensions used by the FLOP formula (taken from the base model, before LoRA)."""
    from torch import nn

    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    skip = {id(emb)} | ({id(head.weight)} if head is not None else set())
    nonemb = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    linear = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head}
    return {"n_params": sum(p.numel() for p in model.parameters()), "n_params_nonembedding": nonemb,
            "n_linear_weights": sum(m.weight.numel() for m in linear.values()),
            "hidden": int(emb.shape[1]), "vocab": int(head.weight.shape[0] if head is not None else emb.shape[0]),
            "tied": head is not None and head.weight is emb}


def info(torch) -> dict:
    return {"torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def last_mean(values: list[float], k: int = LAST_STEPS) -> float:
    tail = values[-k:]
    return sum(tail) / len(tail) if tail else float("nan")


# ---- worker: the project's trainer --------------------------------------------------------------

def attach_ours(env: dict, seed: int) -> dict:
    from core.lora import inject_lora

    cfg, torch = env["cfg"], env["torch"]
    torch.manual_seed(seed)  # as core.run: the LoRA A initialisation depends only on the seed
    rep = inject_lora(env["model"], cfg.lora_targets, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.use_rslora,
                      strict=True)
    return {"matched": len(rep.matched), "trainable_params": rep.trainable_params}


def worker_ours(args) -> dict:
    """core.train.train on the fixed batches: its batcher returns them, one epoch, no validation examples."""
    env = setup(args)
    torch, model, cfg, batches = env["torch"], env["model"], env["cfg"], env["batches"]
    shape = model_shape(model)
    lora = attach_ours(env, args.seed)
    import core.train as ct

    flat = [e for b in batches for e in b]
    run_cfg = cfg.replace(epochs=1)
    seen = {"batcher_calls": 0, "losses": [], "hashes": [], "starts": []}
    orig_batcher, orig_loss = ct.length_grouped_batches, ct.batch_loss

    def fixed_batcher(examples, batch_size, rng):
        seen["batcher_calls"] += 1
        return [list(b) for b in batches]

    def recording_loss(m, batch):
        if torch.is_grad_enabled():
            seen["starts"].append(time.perf_counter())
        loss_sum, n = orig_loss(m, batch)
        if torch.is_grad_enabled():  # training steps only
            seen["losses"].append(float(loss_sum.detach()) / max(n, 1))
            mask = batch["attention_mask"].bool()
            seen["hashes"].append(batch_hash([row[keep].tolist() for row, keep in zip(batch["input_ids"], mask)]))
        return loss_sum, n

    ct.length_grouped_batches, ct.batch_loss = fixed_batcher, recording_loss
    say(f"ours: core.train.train, {len(batches)} steps of batch {args.batch_size}, "
        f"{torch.get_num_threads()} torch threads")
    try:
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            result = ct.train(model, flat, [], run_cfg, env["tok"].pad_token_id, progress=not args.no_progress,
                              desc="ours")
        end = time.perf_counter()
        wall = end - t0
    finally:
        ct.length_grouped_batches, ct.batch_loss = orig_batcher, orig_loss
    problems = []
    if seen["batcher_calls"] != 1:
        problems.append(f"core.train.train called length_grouped_batches {seen['batcher_calls']} times (expected 1)")
    if result.steps != len(batches) or len(seen["losses"]) != len(batches):
        problems.append(f"core.train.train ran {result.steps} steps / recorded {len(seen['losses'])} losses, "
                        f"expected {len(batches)}")
    if problems:
        return {"error": "; ".join(problems) + " -- falling back to a loop that mirrors core.train.train"}
    steady = (end - seen["starts"][1]) if len(seen["starts"]) > 1 else None
    return dict(path="core.train.train", steady_s=steady, losses=seen["losses"], step_hashes=seen["hashes"], wall_s=wall,
                loop_s=result.seconds, tokens_counted=result.tokens, label_tokens_counted=result.label_tokens,
                memory=mem.to_dict(), shape=shape, lora=lora, load_s=env["load_s"], stats=batch_stats(batches),
                **info(torch))


def worker_ours_loop(args) -> dict:
    """Fallback when core.train.train cannot be fed fixed batches: its inner loop, step for step."""
    env = setup(args)
    torch, model, cfg, batches = env["torch"], env["model"], env["cfg"], env["batches"]
    from core.train import batch_loss, collate

    shape = model_shape(model)
    lora = attach_ours(env, args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses, hashes = [], []
    from tqdm.auto import tqdm

    say(f"ours: mirrored core.train loop, {len(batches)} steps of batch {args.batch_size}")
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        model.train()
        starts = []
        for b in tqdm(batches, desc="ours (loop)", disable=args.no_progress, leave=False):
            starts.append(time.perf_counter())
            batch = collate(b, env["tok"].pad_token_id, torch.device("cpu"))
            loss_sum, n = batch_loss(model, batch)
            loss = loss_sum / max(n, 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            losses.append(loss.item())
            hashes.append(batch_hash([e.input_ids for e in b]))
        end = time.perf_counter()
        loop = end - t0
    return dict(path="loop mirroring core.train.train", steady_s=(end - starts[1]) if len(starts) > 1 else None,
                losses=losses, step_hashes=hashes, wall_s=loop, loop_s=loop,
                memory=mem.to_dict(), shape=shape, lora=lora, load_s=env["load_s"], stats=batch_stats(batches),
                **info(torch))


# ---- worker: transformers.Trainer + peft --------------------------------------------------------

def lora_target_names(model, targets) -> list[str]:
    """The module paths the project's injector wraps, in its order (same matching rule as core.lora)."""
    from torch import nn

    try:
        from core.lora import _matcher

        _, match = _matcher(targets)
    except ImportError:  # same rule, if the private helper is renamed
        targets = list(targets)

        def match(name):
            return any(name == t or name.endswith("." + t) for t in targets)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and match(n)]


def worker_trainer(args) -> dict:
    env = setup(args)
    torch, model, cfg, batches, tok = env["torch"], env["model"], env["cfg"], env["batches"], env["tok"]
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from core.data import IGNORE
    from core.lora import LoRALinear

    shape = model_shape(model)
    # identical starting adapter: A exactly as the project's injector draws it (same seed, same module order)
    names = lora_target_names(model, cfg.lora_targets)
    torch.manual_seed(args.seed)
    init = {n: LoRALinear(model.get_submodule(n), cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout,
                          cfg.use_rslora).lora_A.detach().clone() for n in names}
    regex = len(cfg.lora_targets) == 1 and any(c in cfg.lora_targets[0] for c in "*[]()|\\^$+?")
    peft_cfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          target_modules=cfg.lora_targets[0] if regex else list(cfg.lora_targets),
                          lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", use_rslora=cfg.use_rslora)
    pm = get_peft_model(model, peft_cfg)
    inner = pm.base_model.model
    wrapped = {n for n, m in inner.named_modules() if isinstance(m, LoraLayer)}
    if wrapped != set(names):
        raise SystemExit(f"peft wrapped {sorted(wrapped ^ set(names))[:4]} differently from the project's injector")
    scaling = None
    with torch.no_grad():
        for n in names:
            layer = inner.get_submodule(n)
            layer.lora_A["default"].weight.copy_(init[n])
            layer.lora_B["default"].weight.zero_()
            scaling = layer.scaling["default"]
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)

    flat = [e for b in batches for e in b]
    pad_id = tok.pad_token_id
    seen_hashes: list[str] = []

    class Examples(torch.utils.data.Dataset):
        def __len__(self):
            return len(flat)

        def __getitem__(self, i):
            return {"input_ids": flat[i].input_ids, "labels": flat[i].labels}

    def pad_collator(features):
        """Right padding: pad id / -100 / attention mask 0 (the same tensors core.train.collate builds)."""
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        seen_hashes.append(batch_hash([f["input_ids"] for f in features]))
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    class SequentialTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    class Clock(TrainerCallback):
        begin = None
        begins: list = []
        ends: list = []

        def on_train_begin(self, a, state, control, **kw):
            Clock.begin = time.perf_counter()

        def on_step_begin(self, a, state, control, **kw):
            Clock.begins.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            Clock.ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as out_dir:
        targs = TrainingArguments(
            output_dir=out_dir, per_device_train_batch_size=args.batch_size, max_steps=len(batches),
            learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type="constant", warmup_steps=0,
            max_grad_norm=cfg.grad_clip, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
            seed=args.seed, remove_unused_columns=False, train_sampling_strategy="sequential",
            dataloader_num_workers=0, dataloader_pin_memory=False, label_names=["labels"],
            disable_tqdm=args.no_progress,
        )
        trainer = SequentialTrainer(model=pm, args=targs, train_dataset=Examples(), data_collator=pad_collator,
                                    callbacks=[Clock()])
        say(f"trainer: transformers.Trainer + peft, {len(batches)} steps of batch {args.batch_size}, "
            f"optim={getattr(targs.optim, 'value', targs.optim)}, {torch.get_num_threads()} torch threads")
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            trainer.train()
        wall = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    optim = getattr(targs.optim, "value", targs.optim)
    steady = (Clock.ends[-1] - Clock.begins[1]) if len(Clock.begins) > 1 else None
    return dict(path=f"transformers.Trainer + peft ({optim})", steady_s=steady, losses=losses, step_hashes=seen_hashes,
                wall_s=wall, loop_s=(Clock.ends[-1] - Clock.begin) if Clock.ends else wall,
                memory=mem.to_dict(), shape=shape, lora={"matched": len(names), "trainable_params": trainable,
                                                          "scaling": scaling},
                load_s=env["load_s"], stats=batch_stats(batches), **info(torch))


# ---- worker: evaluation -------------------------------------------------------------------------

def worker_eval(args) -> dict:
    env = setup(args)
    torch, model, cfg, ks, renderer, tok = (env[k] for k in ("torch", "model", "cfg", "ks", "renderer", "tok"))
    from tqdm.auto import tqdm

    from core.data import eval_system_prompts
    from core.evaluate import generate

    tests = [(f, q) for f in ks.facts for q in f.test]
    systems = eval_system_prompts(ks, cfg, cfg.eval_prompt, len(tests))
    items = [(s, q) for (_, q), s in zip(tests, systems)][:args.eval_questions]
    stop = renderer.stop_ids()
    pad = tok.pad_token_id if tok.pad_token_id is not None else stop[0]

    def one(system, question, max_new):
        ids = renderer.prompt_ids(system, question)
        x = torch.tensor([ids])
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                             eos_token_id=stop, pad_token_id=pad)
        new = out[0, len(ids):].tolist()
        cut = next((k for k, t in enumerate(new) if t in stop), len(new))
        return tok.decode(new[:cut], skip_special_tokens=True).strip()

    model.eval()
    with torch.no_grad():  # warm-up, untimed: first-call allocations are paid by neither arm
        one(*items[0], max_new=2)
        generate(model, renderer, items[:2], 2, progress=False)
    say(f"eval: core.evaluate.generate on {len(items)} questions, max_new_tokens={cfg.max_new_tokens}")
    t0 = time.perf_counter()
    batched = generate(model, renderer, items, cfg.max_new_tokens, progress=not args.no_progress, desc="batched")
    batched_s = time.perf_counter() - t0
    say(f"eval: model.generate one question at a time on {len(items)} questions")
    single = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for s, q in tqdm(items, desc="one-at-a-time", disable=args.no_progress, leave=False):
            single.append(one(s, q, cfg.max_new_tokens))
    single_s = time.perf_counter() - t0
    mismatches = [i for i, (a, b) in enumerate(zip(batched, single)) if a != b]
    first = None
    if mismatches:
        i = mismatches[0]
        first = {"index": i, "question": items[i][1], "batched": batched[i], "single": single[i]}
    return dict(questions=len(items), available=len(tests), max_new_tokens=cfg.max_new_tokens, batched_s=batched_s,
                single_s=single_s, mismatches=len(mismatches), first_mismatch=first,
                sample={"question": items[0][1], "answer": batched[0]}, **info(torch))


# ---- worker: matmul ceiling ---------------------------------------------------------------------

def best_matmul_seconds(torch, m: int, k: int, n: int, repeats: int = 200, chunk_time: float = 0.001,
                        budget: float = 1.0) -> float:
    """Best (lowest) mean time per call over up to `repeats` short chunks of calls (at least 5, then until
    `budget` seconds are spent): the ceiling, not the typical time."""
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    out = torch.empty(m, n)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    t0 = time.perf_counter()
    torch.matmul(a, b, out=out)
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(chunk_time / one))
    best = math.inf
    start = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - t0) / inner)
        if i >= 4 and time.perf_counter() - start > budget:
            break
    return best


def worker_matmul(args) -> dict:
    env = setup(args)
    torch, model, batches = env["torch"], env["model"], env["batches"]
    from torch import nn

    from core.config import ALL_LINEAR

    stats = batch_stats(batches)
    width = stats["padded_tokens"] / len(batches) / args.batch_size
    m = args.batch_size * round(width)  # tokens in one (padded) training batch
    m_label = max(1, round(stats["label_tokens"] / len(batches)))  # LM-head rows per batch (labelled positions)
    shapes, counts = {}, {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            suffix = name.rsplit(".", 1)[-1]
            if suffix in ALL_LINEAR:
                shapes.setdefault(suffix, (mod.in_features, mod.out_features))
                counts[suffix] = counts.get(suffix, 0) + 1
    head = model.get_output_embeddings().weight  # [vocab, hidden]
    rows = []
    say(f"matmul: fp32 ceiling on {len(shapes) + 2} shapes, M={m} tokens per batch, "
        f"{torch.get_num_threads()} torch threads")
    for suffix in ALL_LINEAR:
        if suffix in shapes:
            k, n = shapes[suffix]
            rows.append({"name": suffix, "m": m, "k": k, "n": n, "count": counts[suffix]})
    rows.append({"name": "lm_head", "m": m, "k": int(head.shape[1]), "n": int(head.shape[0]), "count": 0})
    rows.append({"name": "lm_head (labelled rows)", "m": m_label, "k": int(head.shape[1]), "n": int(head.shape[0]),
                 "count": 1})
    with torch.no_grad():
        for r in rows:
            r["seconds"] = best_matmul_seconds(torch, r["m"], r["k"], r["n"])
            r["flops"] = 2.0 * r["m"] * r["k"] * r["n"]
            r["gflops"] = r["flops"] / r["seconds"] / 1e9
            say(f"  {r['name']:<24} [{r['m']}x{r['k']}] x [{r['k']}x{r['n']}]  {r['gflops']:8.1f} GFLOP/s")
    # one forward pass's mix: every layer shape as often as the model has it, the LM head on labelled rows only
    total_flops = sum(r["flops"] * r["count"] for r in rows)
    total_s = sum(r["seconds"] * r["count"] for r in rows)
    return dict(rows=rows, m=m, m_label=m_label, ceiling_gflops=total_flops / total_s / 1e9,
                best_shape_gflops=max(r["gflops"] for r in rows), **info(torch))


WORKER_FNS = {"ours": worker_ours, "ours-loop": worker_ours_loop, "trainer": worker_trainer, "eval": worker_eval,
              "matmul": worker_matmul}


# ---- the parent: run the workers, put the numbers together --------------------------------------

def run_worker(name: str, args, argv: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(prefix=f"bench_{name}_", suffix=".json", delete=False) as f:
        path = f.name
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", name, "--worker-out", path]
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        # the workers' chatter (progress bars, Trainer's log lines) goes to stderr; stdout keeps only the table
        proc = subprocess.run(cmd, cwd=str(ROOT), env=env, stdout=sys.stderr)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark worker {name!r} failed with exit code {proc.returncode}")
        return json.loads(Path(path).read_text())
    finally:
        Path(path).unlink(missing_ok=True)


def training_flops(shape: dict, tokens: int, label_tokens: int) -> dict:
    fwd = 2 * shape["n_params_nonembedding"] * tokens + 2 * shape["hidden"] * shape["vocab"] * label_tokens
    return {"forward": fwd, "total": 2 * fwd}


FLOP_FORMULA = (
    "forward = 2 * N_nonemb * T + 2 * d * V * T_lab;  training = forward + backward = 2 * forward\n"
    "  N_nonemb = base-model parameters without the input embedding / LM head, T = non-pad tokens,\n"
    "  T_lab = labelled (loss) positions, d = hidden size, V = vocabulary; the LM head runs only where labels\n"
    "  exist, as the project's trainer does. Backward of a frozen base with LoRA ~ 1x forward: activation\n"
    "  gradients only (no weight gradients for frozen weights; LoRA's own FLOPs and attention scores ignored)."
)


def fmt_table(header: list[str], rows: list[list], markdown: bool = False) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def machine_info() -> dict:
    import peft
    import psutil
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "cpus_usable": usable,
            "ram_gb": psutil.virtual_memory().total / 2**30, "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "load_avg_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def report(args, command: str, date: str, mach: dict, ours: dict, ref: dict, ev: dict, mm: dict) -> tuple[str, str]:
    """(plain-text table for the terminal, markdown file)."""
    st = ours["stats"]
    same_batches = ours["step_hashes"] == ref["step_hashes"] == st["batch_hashes"]
    shape = ours["shape"]
    flops = training_flops(shape, st["tokens"], st["label_tokens"])
    st_first_tokens = st["first_batch_tokens"]

    def arm(r):
        s = r["loop_s"]
        steady = None
        if r.get("steady_s"):  # steps 2..N: the first step's one-off costs left out
            first = st_first_tokens
            steady = (st["tokens"] - first) / r["steady_s"]
        return {"tok_s": st["tokens"] / s, "lab_s": st["label_tokens"] / s, "loss": last_mean(r["losses"]),
                "steady_tok_s": steady,
                "first": r["losses"][0] if r["losses"] else float("nan"), "flops_s": flops["total"] / s}

    a, b = arm(ours), arm(ref)
    speedup = b["lab_s"] and a["lab_s"] / b["lab_s"]
    loss_rel = abs(a["loss"] - b["loss"]) / abs(b["loss"]) if b["loss"] else float("inf")
    loss_ok = loss_rel <= LOSS_TOLERANCE
    ceiling = mm["ceiling_gflops"] * 1e9
    frac = a["flops_s"] / ceiling
    ev_rate_b = ev["questions"] / ev["batched_s"]
    ev_rate_s = ev["questions"] / ev["single_s"]
    ev_ratio = ev_rate_b / ev_rate_s

    train_header = ["trainer", "steps", "wall s", "loop s", "tokens/s", "labelled tok/s", "tok/s steps 2+",
                    "peak RSS +MB",
                    "peak RSS MB", "first loss", f"loss (last {LAST_STEPS})", "GFLOP/s"]
    train_rows = [[name, len(r["losses"]), f"{r['wall_s']:.2f}", f"{r['loop_s']:.2f}", f"{x['tok_s']:.0f}",
                   f"{x['lab_s']:.0f}", "-" if x["steady_tok_s"] is None else f"{x['steady_tok_s']:.0f}",
                   f"{r['memory']['rss_delta_mb']:.0f}", f"{r['memory']['rss_peak_mb']:.0f}",
                   f"{x['first']:.4f}", f"{x['loss']:.4f}", f"{x['flops_s'] / 1e9:.1f}"]
                  for name, r, x in (("ours (" + ours["path"] + ")", ours, a), (ref["path"], ref, b))]
    eval_header = ["generation", "answers", "seconds", "answers/s"]
    eval_rows = [["core.evaluate.generate (batched)", ev["questions"], f"{ev['batched_s']:.2f}", f"{ev_rate_b:.2f}"],
                 ["model.generate, one at a time", ev["questions"], f"{ev['single_s']:.2f}", f"{ev_rate_s:.2f}"]]
    mm_header = ["matmul (fp32)", "M", "K", "N", "per fwd", "GFLOP/s"]
    mm_rows = [[r["name"], r["m"], r["k"], r["n"], r["count"], f"{r['gflops']:.1f}"] for r in mm["rows"]]

    targets = [
        ("training throughput >= 1.5x Trainer+peft at equal loss (within 5%)",
         speedup >= TARGET_TRAIN_SPEEDUP and loss_ok, f"{speedup:.2f}x, loss diff {loss_rel:.1%}"),
        ("achieved training FLOP/s >= 50% of the matmul ceiling", frac >= TARGET_FLOP_FRACTION,
         f"{a['flops_s'] / 1e9:.1f} / {mm['ceiling_gflops']:.1f} GFLOP/s = {frac:.0%}"),
        ("evaluation >= 5x one-at-a-time generate", ev_ratio >= TARGET_EVAL_SPEEDUP, f"{ev_ratio:.2f}x"),
    ]
    notes = [
        f"same batches in both training arms: {'yes' if same_batches else 'NO'} "
        f"({st['batches']} batches, {st['tokens']} non-pad tokens, {st['label_tokens']} labelled, "
        f"{st['padded_tokens']} padded = {1 - st['tokens'] / st['padded_tokens']:.0%} padding)",
        f"training speedup (ours / Trainer+peft): {speedup:.2f}x",
        f"final losses agree within {LOSS_TOLERANCE:.0%}: {'yes' if loss_ok else 'NO'} "
        f"(ours {a['loss']:.4f}, Trainer+peft {b['loss']:.4f}, relative difference {loss_rel:.2%})",
        f"LoRA: r={ours_cfg_value('lora_r')}, alpha={ours_cfg_value('lora_alpha')}, "
        f"{ours['lora']['matched']} modules, {ours['lora']['trainable_params']} trainable (peft: "
        f"{ref['lora']['trainable_params']}, scaling {ref['lora']['scaling']})",
        f"evaluation speedup (batched / one at a time): {ev_ratio:.2f}x; identical answers: "
        f"{ev['questions'] - ev['mismatches']}/{ev['questions']} ({ev['mismatches']} mismatches)",
        f"matmul ceiling (forward mix, M={mm['m']}, LM head on {mm['m_label']} labelled rows): "
        f"{mm['ceiling_gflops']:.1f} GFLOP/s; best single shape {mm['best_shape_gflops']:.1f} GFLOP/s",
        f"achieved training FLOP/s: {a['flops_s'] / 1e9:.1f} GFLOP/s = {frac:.0%} of the ceiling "
        f"(Trainer+peft: {b['flops_s'] / 1e9:.1f} GFLOP/s = {b['flops_s'] / ceiling:.0%}); "
        f"training FLOPs {flops['total']:.3e} (N_nonemb={shape['n_params_nonembedding']}, d={shape['hidden']}, "
        f"V={shape['vocab']}); counting backward as 2x forward instead (total 3x forward, as for full fine-tuning) "
        f"would give {1.5 * frac:.0%}",
        "evaluation uses the untrained base model (no LoRA) in both arms, so both generate from identical weights",
    ]
    if "tokens_counted" in ours and (ours["tokens_counted"], ours["label_tokens_counted"]) != (st["tokens"],
                                                                                             st["label_tokens"]):
        notes.append(f"WARNING: core.train.train counted {ours['tokens_counted']} tokens / "
                     f"{ours['label_tokens_counted']} labelled, the benchmark {st['tokens']} / {st['label_tokens']}")
    load = mach.get("load_avg_start")
    if load and load[0] > 0.5 * (mach["cpus_usable"] or 1):
        notes.append(f"WARNING: the machine was busy (1-minute load average {load[0]:.2f} on {mach['cpus_usable']} "
                     f"CPUs at the start): with torch threads = {ours['torch_threads']} competing for cores, timings "
                     f"(small matmuls especially) are unreliable")
    if ev["first_mismatch"]:
        fm = ev["first_mismatch"]
        notes.append(f"first evaluation mismatch (#{fm['index']}) {fm['question']!r}: batched {fm['batched']!r} "
                     f"vs one-at-a-time {fm['single']!r}")
    if ev["questions"] < args.eval_questions:
        notes.append(f"only {ev['questions']} test questions exist (asked for {args.eval_questions})")

    def verdict(ok):
        return "PASS" if ok else "FAIL"

    text = "\n".join([
        "", "== Training ==", fmt_table(train_header, train_rows), "",
        "== Evaluation ==", fmt_table(eval_header, eval_rows), "",
        "== CPU matmul ceiling ==", fmt_table(mm_header, mm_rows), "",
        "FLOP count: " + FLOP_FORMULA, "",
        *notes, "",
        "== Targets ==", *[f"{verdict(ok)}  {name}: {detail}" for name, ok, detail in targets], "",
    ])
    md = "\n".join([
        f"# Benchmark: {args.model}", "",
        f"- command: `{command}`",
        f"- date: {date}",
        f"- machine: {mach['cpu']}; cpu_count {mach['cpu_count']} ({mach['cpus_usable']} usable), "
        f"{mach['ram_gb']:.0f} GiB RAM; load average at start {fmt_load(mach['load_avg_start'])}, "
        f"at end {fmt_load(mach.get('load_avg_end'))}",
        f"- torch {mach['torch']} (torch threads: {ours['torch_threads']}), transformers {mach['transformers']}, "
        f"peft {mach['peft']}, Python {mach['python']}, {mach['platform']}",
        f"- settings: {args.steps} steps, batch size {args.batch_size}, seed {args.seed}, "
        f"{ev['questions']} evaluation questions, max_new_tokens {ev['max_new_tokens']}, fp32 on CPU",
        "",
        "## Targets", "",
        fmt_table(["target", "result", "measured"], [[n, verdict(ok), d] for n, ok, d in targets], markdown=True), "",
        "## Training", "",
        "Both arms train on the same fixed list of batches (the project's length-grouped batcher over the baseline's",
        "training examples, full batches only), from the same LoRA initialisation, with AdamW at the baseline's",
        "lr / weight decay / grad clip and a constant LR without warmup. Each arm runs in a fresh process;",
        "`loop s` is the training loop (first step to last step), `wall s` includes set-up; throughput uses",
        "`loop s`. Peak RSS is sampled every 5 ms; `+MB` is above the RSS just before training.", "",
        fmt_table(train_header, train_rows, markdown=True), "",
        "## Evaluation", "",
        fmt_table(eval_header, eval_rows, markdown=True), "",
        "## CPU matmul ceiling", "",
        "`per fwd`: how often the shape occurs in one forward pass (the ceiling weights shapes by it).", "",
        fmt_table(mm_header, mm_rows, markdown=True), "",
        "FLOP count:", "", "```", FLOP_FORMULA, "```", "",
        "## Notes", "", *[f"- {n}" for n in notes], "",
        "Per-step training losses:", "",
        f"- ours: {', '.join(f'{x:.4f}' for x in ours['losses'])}",
        f"- Trainer+peft: {', '.join(f'{x:.4f}' for x in ref['losses'])}", "",
    ])
    return text, md


_CFG_VALUES: dict = {}


def ours_cfg_value(name: str):
    if not _CFG_VALUES:
        from core.config import RunConfig

        _CFG_VALUES.update(RunConfig().to_dict())
    return _CFG_VALUES[name]


def fmt_load(load) -> str:
    return "n/a" if not load else " / ".join(f"{x:.2f}" for x in load)


def main(argv=None) -> None:
    script = sys.argv[0] if argv is None else "benchmarks/bench.py"
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        result = WORKER_FNS[args.worker](args)
        Path(args.worker_out).write_text(json.dumps(result))
        return

    out = Path(args.out) if args.out else default_out(args.model)
    if args.model != DEFAULT_MODEL and out.resolve() == PUBLISHED.resolve():
        raise SystemExit(f"refusing to write {args.model} numbers to {PUBLISHED} (reserved for {DEFAULT_MODEL}); "
                         f"pass another --out")
    command = "python " + shlex.join([script, *argv])
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    mach = machine_info()
    say(f"{args.model}: {args.steps} steps x batch {args.batch_size}, seed {args.seed}, "
        f"{args.eval_questions} eval questions; report -> {out}")
    t0 = time.perf_counter()
    say("[1/4] training with the project's trainer")
    ours = run_worker("ours", args, argv)
    if "error" in ours:
        say(ours["error"])
        ours = run_worker("ours-loop", args, argv)
    say("[2/4] training with transformers.Trainer + peft")
    ref = run_worker("trainer", args, argv)
    say("[3/4] evaluation: batched vs one question at a time")
    ev = run_worker("eval", args, argv)
    say("[4/4] CPU matmul ceiling")
    mm = run_worker("matmul", args, argv)
    mach["load_avg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    text, md = report(args, command, date, mach, ours, ref, ev, mm)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.read_text() if out.exists() else ""
    if "<!-- ray_vs_local -->" in old:  # benchmarks/ray_vs_local.py's section is kept
        md = md.rstrip("\n") + "\n\n" + old[old.index("<!-- ray_vs_local -->"):]
    out.write_text(md)
    say(f"done in {time.perf_counter() - t0:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
