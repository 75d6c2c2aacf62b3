#!/usr/bin/env python
"""Benchmark: this project's trainer and evaluator against transformers.Trainer + peft and one-at-a-time generate.

    python benchmarks/bench.py [--model smollm2-135m-instruct] [--steps 20] [--batch-size 8] [--seed 0]
                               [--eval-questions 32] [--threads N] [--out benchmarks/RESULTS.md]

Three measurements, all fp32 on the CPU, with the same model, data, LoRA, batch size, steps and seed:

1. Training. The baseline's training examples (core.run.examples.build_train_examples under RunConfig defaults) are cut
   into a fixed list of `--steps` full batches, once, by the project's own length-grouped batcher. Both arms train
   on exactly these batches in this order, from identical LoRA weights (A from the project's initialiser with the
   seed, B = 0), with AdamW (same lr / weight decay / grad clip), a constant LR and no warmup:
     * ours: core.run.train.train itself (one epoch over the fixed batches, given through its `batches` parameter; each
       step's loss recorded through `on_step`; the validation set is empty so no evaluation runs inside the timing);
     * reference: transformers.Trainer + peft (LoraConfig with the same r / alpha / targets, dropout 0), a
       sequential sampler over the same examples, a padding collator, per_device_train_batch_size, max_steps.
   Each arm runs in its own fresh process so its peak memory (psutil RSS, sampled in a thread) is its own.
2. Evaluation. core.run.evaluate.generate (batched, left-padded, KV cache) against model.generate called once per
   question, on the first --eval-questions test questions under the baseline's evaluation prompts, greedy,
   same max_new_tokens; answers per second and whether the answers are identical.
3. CPU matmul ceiling. fp32 torch.matmul throughput on the model's own layer shapes at the training batch's
   token count, best of several repeats, and the training run's achieved FLOP/s as a fraction of it.

The default --out depends on the model: benchmarks/RESULTS.md only for the default (real) model; tiny-qwen2
numbers go to the temporary directory unless --out is given, and are never written to benchmarks/RESULTS.md.

This file is the command line and the parent process; each measurement is a worker module run in a fresh process
(train_ours.py, train_trainer.py, generation.py, matmul.py, sharing common.py), and summary.py writes the tables.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/bench.py` puts benchmarks/ first on the path, not the repo
    sys.path.insert(0, str(ROOT))

from benchmarks.common import DEFAULT_MODEL, TINY_MODEL, say  # noqa: E402
from benchmarks.generation import worker_eval  # noqa: E402
from benchmarks.matmul import worker_matmul  # noqa: E402
from benchmarks.summary import machine_info, report  # noqa: E402
from benchmarks.train_ours import worker_ours  # noqa: E402
from benchmarks.train_trainer import worker_trainer  # noqa: E402

PUBLISHED = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_JSON = ROOT / "benchmarks" / "results.json"
KEPT_SECTIONS = ("<!-- run_level -->", "<!-- ray_vs_local -->")  # bench.py rewrites the file above them only
WORKER_FNS = {"ours": worker_ours, "trainer": worker_trainer, "eval": worker_eval, "matmul": worker_matmul}


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
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec as in core.run.models.load (default {DEFAULT_MODEL})")
    p.add_argument("--steps", type=int, default=20, help="training steps per arm (default 20)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch size (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-questions", type=int, default=32, help="test questions generated in the evaluation benchmark")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--out", default=None,
                   help="markdown report (default: benchmarks/RESULTS.md for the default model, "
                        "benchmarks/RESULTS-<model>.md for other real models, <tmp>/bench_tiny-qwen2.md for tiny-qwen2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--worker", choices=tuple(WORKER_FNS), help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.eval_questions < 1:
        p.error("--steps, --batch-size and --eval-questions must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


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
    say("[2/4] training with transformers.Trainer + peft")
    ref = run_worker("trainer", args, argv)
    say("[3/4] evaluation: batched vs one question at a time")
    ev = run_worker("eval", args, argv)
    say("[4/4] CPU matmul ceiling")
    mm = run_worker("matmul", args, argv)
    mach["load_avg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    text, md, figures = report(args, command, date, mach, ours, ref, ev, mm)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.read_text() if out.exists() else ""
    kept = [old.index(m) for m in KEPT_SECTIONS if m in old]  # the sections other scripts and notes own
    if kept:
        md = md.rstrip("\n") + "\n\n" + old[min(kept):]
    out.write_text(md)
    if out.resolve() == PUBLISHED.resolve():  # the machine-readable figures, beside run_speed.py's
        merged = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
        merged["bench"] = dict(figures, cpu=mach["cpu"], date=date)
        merged.update(figures)
        RESULTS_JSON.write_text(json.dumps(merged, indent=1) + "\n")
    say(f"done in {time.perf_counter() - t0:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
