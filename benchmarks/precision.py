#!/usr/bin/env python
"""fp32 against bf16 mixed precision on this CPU: one baseline run each, same code, fresh processes.

    python benchmarks/precision.py [--seed 1] [--threads 2] [--untrained]

Prints per precision the phase times (load, train, eval), training tokens/s, held-out recall and the ratios;
with --untrained also how many of the untrained model's answers are identical in both precisions and its
metrics in each (what the precision changes in the scores, not only in the wording). Run it alone: two
baseline runs take about 7 minutes of a 2-core CPU (about 11 with --untrained).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from core.run.config import RunConfig
from core.run.knowledge import load_knowledge
from core.run.recipe import run_group
t0 = time.perf_counter()
cfg = RunConfig(seed=int(sys.argv[2]), epochs=int(sys.argv[3]), model=sys.argv[4])
rec = run_group([cfg], load_knowledge(), progress=False, mixed=sys.argv[5] == "bf16")[0]
print("RESULT " + json.dumps({"wall": time.perf_counter() - t0, "timings": rec.timings, "metrics": rec.metrics,
      "precision": rec.environment["precision"], "tokens": rec.throughput.get("tokens"),
      "answers": {f"{s['set']}|{s['id']}|{s['question']}": s["answer"] for s in rec.samples if s["set"] != "overrun"}}))
"""


def child(precision: str, threads: int, seed: int, epochs: int, model: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(seed), str(epochs), model, precision], cwd=ROOT,
                          env=env,
                          capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{precision} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--untrained", action="store_true")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="tiny-qwen2 checks the script in seconds")
    args = ap.parse_args()
    runs = {p: child(p, args.threads, args.seed, 4, args.model) for p in ("fp32", "bf16")}
    for p, r in runs.items():
        t = r["timings"]
        print(f"{r['precision']:20s} wall {r['wall']:6.1f} s  load {t['load']:5.1f}  train {t['train']:6.1f}  "
              f"eval {t['eval']:6.1f}  train tokens/s {r['tokens'] / t['train']:6.1f}  "
              f"heldout_recall {r['metrics']['heldout_recall']:.3f}")
    a, b = runs["fp32"], runs["bf16"]
    print(f"bf16 / fp32 speed: run {a['wall'] / b['wall']:.2f}x, train {a['timings']['train'] / b['timings']['train']:.2f}x, "
          f"eval {a['timings']['eval'] / b['timings']['eval']:.2f}x")
    if args.untrained:
        before = {p: child(p, args.threads, 0, 0, args.model) for p in ("fp32", "bf16")}
        same = sum(before["fp32"]["answers"][k] == before["bf16"]["answers"].get(k) for k in before["fp32"]["answers"])
        print(f"untrained model: {same} of {len(before['fp32']['answers'])} answers identical in both precisions; "
              f"eval {before['fp32']['timings']['eval']:.1f} s fp32, {before['bf16']['timings']['eval']:.1f} s bf16")
        for name in sorted(before["fp32"]["metrics"]):
            x, y = before["fp32"]["metrics"][name], before["bf16"]["metrics"][name]
            if x is not None and y is not None:
                print(f"  {name:36s} fp32 {x:.3f}  bf16 {y:.3f}  diff {y - x:+.3f}")


if __name__ == "__main__":
    main()
