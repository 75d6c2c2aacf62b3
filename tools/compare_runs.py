#!/usr/bin/env python3
"""Do two stores of runs agree on the runs they share? A determinism check across processes, sessions or code
versions that should not change results.

    python tools/compare_runs.py OLD_RUNS_DIR [NEW_RUNS_DIR]     (NEW default: results/runs)

For every key stored in both folders: are the metrics equal, and how many answers differ? Prints one line per
shared key and a total; exits 1 when a shared finished run differs in any metric or answer.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def compare(old: dict, new: dict) -> dict:
    answers_old = [(s["set"], s["id"], s["question"], s["answer"]) for s in old.get("samples") or []]
    answers_new = [(s["set"], s["id"], s["question"], s["answer"]) for s in new.get("samples") or []]
    differing = sum(a != b for a, b in zip(answers_old, answers_new)) + abs(len(answers_old) - len(answers_new))
    return {"metrics_equal": old.get("metrics") == new.get("metrics"), "answers": len(answers_new),
            "answers_differing": differing, "versions": (old.get("environment", {}).get("code_version"),
                                                         new.get("environment", {}).get("code_version"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path, nargs="?", default=ROOT / "results" / "runs")
    args = ap.parse_args(argv)
    old, new = load(args.old), load(args.new)
    shared = sorted(k for k in set(old) & set(new) if old[k].get("status") == new[k].get("status") == "ok")
    same = 0
    for key in shared:
        c = compare(old[key], new[key])
        ok = c["metrics_equal"] and not c["answers_differing"]
        same += ok
        print(f"{key}  {'identical' if ok else 'DIFFERENT'}  metrics {'equal' if c['metrics_equal'] else 'differ'}, "
              f"{c['answers_differing']} of {c['answers']} answers differ  (code {c['versions'][0]} -> "
              f"{c['versions'][1]})")
    print(f"{same} of {len(shared)} shared finished runs identical ({len(old)} in {args.old}, {len(new)} in {args.new})")
    return 0 if same == len(shared) else 1


if __name__ == "__main__":
    sys.exit(main())
