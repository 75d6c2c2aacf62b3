"""What every benchmark worker shares: the model, the baseline's examples cut into fixed batches, counts, memory.

Each worker (benchmarks/train_ours.py, train_trainer.py, generation.py, matmul.py) runs in its own process started by
benchmarks/bench.py, calls setup() and returns a JSON-able dict.
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-qwen2"
LAST_STEPS = 5  # the final training loss is the mean over this many last steps


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
    from core.run import models
    from core.run.config import RunConfig
    from core.run.examples import Renderer, build_train_examples
    from core.run.knowledge import load_knowledge

    t0 = time.perf_counter()
    # fp32 in every worker, whatever precision runs default to here: the trainer comparison holds the numerics equal
    model, tok = models.load(args.model, device=models.pick_precision("cpu", mixed=False))
    load_s = time.perf_counter() - t0
    # the baseline's defaults everywhere, except what the benchmark fixes: seed, batch size, constant LR, no warmup,
    # keep the last weights (nothing is restored after training)
    cfg = RunConfig(model=args.model, seed=args.seed, batch_size=args.batch_size, lr_schedule="constant",
                    warmup_ratio=0.0, selection="last")
    knowledge = load_knowledge()
    renderer = Renderer(tok, "chat")
    examples = build_train_examples(knowledge, cfg, renderer)
    return dict(torch=torch, model=model, tok=tok, cfg=cfg, knowledge=knowledge, renderer=renderer, examples=examples,
                batches=fixed_batches(examples, args.batch_size, args.steps, args.seed), load_s=load_s)


def fixed_batches(examples, batch_size: int, steps: int, seed: int) -> list:
    """`steps` full batches from the project's own length-grouped batcher (epoch after epoch, short batches dropped)."""
    from core.run.train import length_grouped_batches

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
    from core.run.examples import IGNORE

    tokens = sum(len(e.input_ids) for b in batches for e in b)
    label_tokens = sum(sum(1 for t in e.labels[1:] if t != IGNORE) for b in batches for e in b)
    padded = sum(len(b) * max(len(e.input_ids) for e in b) for b in batches)
    return {"tokens": tokens, "label_tokens": label_tokens, "padded_tokens": padded, "batches": len(batches),
            "first_batch_tokens": sum(len(e.input_ids) for e in batches[0]),
            "batch_hashes": [batch_hash([e.input_ids for e in b]) for b in batches]}


def batch_hash(rows) -> str:
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
