"""Sample stored answers of a study for a blind scorer check (data/labels/blind/).

    python tools/sample_labels.py --out data/labels/blind [--results results] [--per-kind 130] [--dev 30] [--seed 0]
                                  [--batch heldout] [--kinds recall,reverse,...] [--arms ABLATION/REGIME/ARM,...]

Kinds: recall, reverse, identity, retention, intrusion and echo. For each kind the answers of every finished run are
pooled by arm (ABLATION/REGIME/ARM, or "untrained"); arms are visited round-robin and each visit takes an answer drawn
uniformly at random from that arm's pool. Nothing about a scorer's outcome enters the draw, so each arm's answers are
represented as they are, not as a scorer sees them. Of each kind's answers, --dev go to OUT/dev (for improving
scorers) and the rest to OUT/heldout (agreement is reported there only, and its labels are written before any further
scorer change). Answers already in a batch under OUT (items.jsonl in any subfolder, e.g. an earlier development
batch) are never drawn again; with --dev 0 only OUT/heldout is written. Each folder gets items.jsonl (everything a
scorer needs) and sheet.csv (what a reader sees: the question, a reference, the answer; no keywords, no scorer
outcome). Labels (labels_a.csv, labels_b.csv: two
independent readers; labels.csv: the settled label) refer to the rows, so an existing sample is never overwritten.

intrusion reads answers to the general-knowledge probes of trained runs, next to the untrained model's answer to
the same probe (the scorer's reference; readers never see it). echo reads answers given under an explicit system
prompt.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.analysis.blind import KINDS, answers_by_kind, dedup  # noqa: E402


def pick(by_arm: dict[str, list[dict]], n: int, rng: random.Random) -> list[dict]:
    """n answers: arms visited round-robin (in a shuffled order), each visit a uniform draw from that arm's pool."""
    pools_left = {arm: items[:] for arm, items in by_arm.items()}
    arms = sorted(pools_left)
    rng.shuffle(arms)
    picked = []
    while len(picked) < n and any(pools_left.values()):
        for arm in arms:
            if pools_left[arm] and len(picked) < n:
                picked.append(pools_left[arm].pop(rng.randrange(len(pools_left[arm]))))
    return picked


def write_batch(folder: Path, items: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "items.jsonl", "w") as f:
        for i, item in enumerate(items, start=1):
            f.write(json.dumps({"row": i, **item}, ensure_ascii=False) + "\n")
    with open(folder / "sheet.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "kind", "system_prompt", "question", "reference", "answer"])
        for i, item in enumerate(items, start=1):
            w.writerow([i, item["kind"], item["system"] if item["kind"] == "echo" else "", item["question"],
                        item["reference"], item["answer"]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--out", type=Path, required=True, help="folder for dev/ and heldout/ (must not hold a sample)")
    ap.add_argument("--per-kind", type=int, default=130, help="answers per kind, dev and held-out together")
    ap.add_argument("--dev", type=int, default=30, help="of each kind's answers, how many go to the development batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", default="heldout", help="the held-out batch's folder under --out (a further batch of "
                    "an existing sample takes a new name, e.g. heldout2)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated kinds to draw (default: all: "
                    f"{', '.join(KINDS)})")
    ap.add_argument("--arms", default="", help="comma-separated arms (ABLATION/REGIME/ARM) to draw from only, for a "
                    "check of one population (e.g. the base model's answers); default: every arm")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    only = {a.strip() for a in args.arms.split(",") if a.strip()}
    if not kinds or any(k not in KINDS for k in kinds):
        raise SystemExit(f"error: --kinds {args.kinds!r}: give some of {', '.join(KINDS)}")
    batches = {"dev": [], args.batch: []} if args.dev else {args.batch: []}
    if any((args.out / b / "items.jsonl").exists() for b in batches):
        raise SystemExit(f"error: {args.out} already holds a {' or '.join(batches)} batch whose labels refer to its "
                         f"rows: "
                         f"choose a new --out")
    if not 0 <= args.dev < args.per_kind:
        raise SystemExit(f"error: --dev {args.dev}: give 0 <= dev < --per-kind ({args.per_kind})")
    taken = {dedup(i["kind"], i) for path in args.out.glob("*/items.jsonl")
             for i in map(json.loads, path.read_text().splitlines())}
    found = answers_by_kind(args.results, taken)
    if only:
        found = {kind: {arm: items for arm, items in arms.items() if arm in only} for kind, arms in found.items()}
    if not any(found.values()):
        raise SystemExit(f"error: {args.results / 'runs'}: no finished run of {args.results / 'plan.json'} to sample")
    rng = random.Random(args.seed)
    for kind in kinds:
        chosen = pick(found[kind], args.per_kind, rng)
        if args.dev:
            batches["dev"] += chosen[:args.dev]
        batches[args.batch] += chosen[args.dev:]
    for name, items in batches.items():
        rng.shuffle(items)
        write_batch(args.out / name, items)
        counts = defaultdict(int)
        for item in items:
            counts[item["kind"]] += 1
        print(f"{name}: {len(items)} answers into {args.out / name}: {dict(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
