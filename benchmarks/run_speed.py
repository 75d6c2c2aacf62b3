#!/usr/bin/env python
"""Run-level speed: a baseline run (load + train + evaluate) of an older commit against the working tree.

    python benchmarks/run_speed.py [--old 9da8426] [--reps 2] [--threads 2] [--out benchmarks/results.json]

Both codes run the default RunConfig (seed 0) on the embedded chat model, each in a fresh process, old and
new alternating `--reps` times in one invocation so both see the same machine state. The old commit is
exported with `git archive` into a temporary folder (nothing is checked out here). Each run reports its
own phase times (load, train, eval), training tokens/s, evaluation answers/s and held-out recall; with
--untrained both codes also answer as the untrained model, and the answers to the questions both ask are
compared. The result is merged into --out (machine-readable) and printed as a table.

The data and the metrics changed between the two codes (the second edition asks more questions), so the
report gives, next to the whole-run ratio, ratios per unit of work: training tokens/s and answers/s.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results.json"
# what each child process runs: one baseline run through the code it finds in its working directory
CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
try:  # core/ as packages
    from core.run.config import RunConfig
    from core.run.knowledge import load_knowledge
    from core.run.recipe import run_group
except ImportError:  # a commit before core/ became packages
    from core.config import RunConfig
    try:
        from core.knowledge import load_knowledge
    except ImportError:
        from core.data import load_knowledge
    from core.run import run_group
epochs = int(sys.argv[2])
mixed = {"auto": None, "fp32": False, "bf16": True}[sys.argv[3]]  # --precision, as run_group's `mixed`
ks = load_knowledge()
t0 = time.perf_counter()
rec = run_group([RunConfig(seed=0, epochs=epochs)], ks, progress=False, mixed=mixed)[0]
rec = rec.to_json() if hasattr(rec, "to_json") else rec
wall = time.perf_counter() - t0
samples = rec["samples"]
print("RESULT " + json.dumps({
    "wall": wall, "timings": rec["timings"], "metrics": rec["metrics"],
    "precision": rec.get("environment", {}).get("precision", "cpu-fp32"),
    "tokens": rec.get("throughput", {}).get("tokens"), "answers": len(samples),
    "qa": {f"{s['set']}|{s.get('system')}|{s['question']}": s["answer"] for s in samples}}))
"""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def export_commit(commit: str, dest: Path) -> Path:
    archive = dest / "old.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), commit], cwd=ROOT, check=True)
    tree = dest / "old"
    tree.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def run_child(tree: Path, threads: int, epochs: int, precision: str = "auto") -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(epochs), precision], cwd=tree, env=env,
                          capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"benchmark run in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def summarise(runs: list[dict]) -> dict:
    med = statistics.median
    phases = {p: med(r["timings"].get(p, 0.0) for r in runs) for p in ("load", "train", "eval", "total")}
    return {"runs": len(runs), "wall_s": med(r["wall"] for r in runs), "phases_s": phases,
            "train_tokens_per_s": med(r["tokens"] / r["timings"]["train"] for r in runs if r["timings"]["train"]),
            "eval_answers_per_s": med(r["answers"] / r["timings"]["eval"] for r in runs),
            "answers": runs[0]["answers"], "heldout_recall": [r["metrics"]["heldout_recall"] for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", default="9da8426", help="commit to compare with (default: the code before the speed work)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--untrained", action="store_true", help="also compare the untrained model's answers")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    results: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"old": export_commit(args.old, Path(tmp)), "new": ROOT}
        for rep in range(args.reps):
            for name in ("old", "new"):
                results[name].append(run_child(trees[name], args.threads, 4))
                r = results[name][-1]
                print(f"rep {rep + 1}/{args.reps} {name}: {r['wall']:.0f} s "
                      f"(train {r['timings']['train']:.0f} s, eval {r['timings']['eval']:.0f} s)", flush=True)
        untrained = None
        if args.untrained:  # the old code computes in fp32; the new one in its default precision and in fp32
            untrained = {"old": run_child(trees["old"], args.threads, 0), "new": run_child(trees["new"], args.threads, 0),
                         "new-fp32": run_child(trees["new"], args.threads, 0, "fp32")}
    old, new = summarise(results["old"]), summarise(results["new"])
    out = {
        "date": datetime.date.today().isoformat(), "cpu": cpu_name(), "threads": args.threads, "old_commit": args.old,
        "run_speedup": old["wall_s"] / new["wall_s"],
        "train_speedup": old["phases_s"]["train"] / new["phases_s"]["train"],
        "train_tokens_per_s_ratio": new["train_tokens_per_s"] / old["train_tokens_per_s"],
        "eval_answers_per_s_ratio": new["eval_answers_per_s"] / old["eval_answers_per_s"],
        "old": old, "new": new,
    }
    if untrained is not None:
        out["precision"] = results["new"][0]["precision"]
        out["untrained"] = {}
        for a, b in (("old", "new-fp32"), ("old", "new"), ("new-fp32", "new")):
            qa_a, qa_b = untrained[a]["qa"], untrained[b]["qa"]
            common = sorted(set(qa_a) & set(qa_b))
            out["untrained"][f"{a} vs {b}"] = {"common_questions": len(common),
                                               "identical_answers": sum(qa_a[k] == qa_b[k] for k in common)}
        # what a precision change does to the scores, not only to the wording: the untrained model's metrics
        out["untrained"]["metrics"] = {name: {k: v for k, v in untrained[name]["metrics"].items() if v is not None}
                                       for name in ("new-fp32", "new")}
    merged = json.loads(args.out.read_text()) if args.out.exists() else {}
    merged.update({"run_level": out, "run_speedup": out["run_speedup"], "cpu": out["cpu"], "date": out["date"]})
    args.out.write_text(json.dumps(merged, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("old", "new")}, indent=1))
    for name, s in (("old", old), ("new", new)):
        print(f"{name}: wall {s['wall_s']:.0f} s, phases {s['phases_s']}, {s['answers']} answers, "
              f"recall {s['heldout_recall']}")


if __name__ == "__main__":
    main()
