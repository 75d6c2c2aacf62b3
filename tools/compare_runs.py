#!/usr/bin/env python3
"""Do two stores of runs agree on the runs they share? A determinism check across processes, sessions or code
versions that should not change results.

    python tools/compare_runs.py OLD_RUNS_DIR [NEW_RUNS_DIR]     (NEW default: results/runs)

For every key stored in both folders: are the metrics equal, and how many answers differ? Prints one line per
shared key and a total; exits 1 when a shared finished run differs in any metric or answer, and 2 when the folders
share no finished run (nothing compared: nothing shown).
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
    for folder in (args.old, args.new):
        if not folder.is_dir():
            print(f"error: {folder}: no such folder. Fix: name a folder of stored runs (results/runs)", file=sys.stderr)
            return 2
    old, new = load(args.old), load(args.new)
    shared = sorted(k for k in set(old) & set(new) if old[k].get("status") == new[k].get("status") == "ok")
    if not shared:  # a determinism check that compared nothing has shown nothing
        print(f"error: no finished run is in both {args.old} ({len(old)} runs) and {args.new} ({len(new)} runs): "
              f"nothing was compared. Fix: name two folders of runs of the same plan", file=sys.stderr)
        return 2
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
