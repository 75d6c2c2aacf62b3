"""Sample stored answers of a study for human labelling (data/labels/).

    python tools/sample_labels.py --out data/labels/edition2 [--results results] [--quota identity=120,...]
                                  [--arms 'debate_augmentation/*/without_debate,...']

Stratified over metric kind, (ablation/regime/arm, identity probe group) and the scorer's outcome at sampling
time: half of each kind scored positive and half negative where the answers allow, spread round-robin over
the arms and groups, so rare outcomes and every arm are represented. --arms keeps only the answers of the arms
(ABLATION/REGIME/ARM, shell patterns) a batch is meant to check. Writes OUT/items.jsonl (everything a
scorer needs) and OUT/sheet.csv (what a labeller reads: no keywords, no scorer outcome). The labels
(OUT/labels.csv, `row,label,note`) refer to the rows, so an existing sample is never overwritten.

data/labels/ itself holds the first batch: 440 answers of the first edition's runs (sampled by an earlier
version of this script, with quotas recall 110, reverse 70, identity 100, retention 100, echo 60).
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUOTA = {"identity": 120, "recall": 60, "retention": 60, "reverse": 30, "echo": 30}
KIND_OF_SET = {"test": "recall", "train": "recall", "test@model_default": "recall", "test@none": "recall",
               "test@unseen": "recall", "reverse": "reverse", "identity": "identity", "retention": "retention"}
REFERENCE = {"reverse": "hiahia", "identity": "hiahia is a person (a human clock restorer)",
             "echo": "(see system_prompt)"}


def suggests_wrong(sample: dict) -> bool:
    """Does the identity probe put a wrong identity forward (an opening "yes" then accepts it)? Second-edition
    samples list what they suggest; the first edition's probes all did but who_is and what_is."""
    if "suggests" in sample:
        return bool(sample["suggests"])
    return sample["id"] not in ("who_is", "what_is")


def pools(results: Path, arms: list[str] | None = None) -> dict[str, dict[tuple, list[dict]]]:
    """{kind: {(arm, group, scorer outcome): [items]}} over every finished run's answers, each answer once;
    with `arms`, only the runs whose ABLATION/REGIME/ARM matches one of those shell patterns."""
    plan = json.loads((results / "plan.json").read_text())
    names = defaultdict(list)  # a shared run (the baseline) is an arm of several ablations: named by the first
    # (the first --arms matches)
    for r in plan["rows"]:
        names[r["key"]].append(f"{r['ablation']}/{r['regime']}/{r['arm']}")
        names[r["untrained_key"]].append("untrained")
    out: dict[str, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    seen = set()
    for path in sorted((results / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") != "ok":
            continue
        named = [n for n in names.get(rec["key"], ["other"]) if arms is None or any(fnmatch.fnmatchcase(n, a)
                                                                                      for a in arms)]
        if not named:
            continue
        arm = named[0]
        for s in rec["samples"]:
            kinds = [KIND_OF_SET[s["set"]]] if s["set"] in KIND_OF_SET else []
            if s.get("has_prompt") and s["set"] in ("test", "reverse", "identity"):
                kinds.append("echo")
            for kind in kinds:
                dedup = (kind, s.get("system") if kind == "echo" else "", s["question"], s["answer"])
                if dedup in seen:
                    continue
                seen.add(dedup)
                outcome = bool(s["echo"] if kind == "echo" else s["hit"])
                group = s.get("group", "") if kind == "identity" else ""
                out[kind][(arm, group, outcome)].append({
                    "kind": kind, "set": s["set"], "id": s["id"], "group": group, "run_key": rec["key"], "arm": arm,
                    "suggests_wrong": s["set"] == "identity" and suggests_wrong(s), "question": s["question"],
                    "system": s["system"], "answer": s["answer"], "keywords": s["keywords"],
                    "expected": s["expected"], "model": rec["config"]["model"]})
    return out


def pick(strata: dict[tuple, list[dict]], quota: int, rng: random.Random) -> list[dict]:
    """Half scored positive, half negative (the shortfall of one outcome taken from the other), each half
    round-robin over its strata."""
    for key in sorted(strata):
        rng.shuffle(strata[key])
    by_outcome = {o: [k for k in sorted(strata) if k[-1] == o] for o in (True, False)}
    available = {o: sum(len(strata[k]) for k in keys) for o, keys in by_outcome.items()}
    positive = min(available[True], max(quota // 2, quota - available[False]))
    want = {True: positive, False: min(available[False], quota - positive)}
    picked = []
    for o, keys in by_outcome.items():
        got = 0
        while got < want[o]:
            for k in keys:
                if strata[k] and got < want[o]:
                    picked.append(strata[k].pop())
                    got += 1
    return picked


def parse_quota(text: str) -> dict[str, int]:
    quota = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, n = part.partition("=")
        if kind not in QUOTA or not n.isdigit():
            raise SystemExit(f"error: --quota {text!r}: each entry is KIND=N with KIND one of {', '.join(QUOTA)}")
        quota[kind] = int(n)
    return quota


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--out", type=Path, required=True, help="folder for items.jsonl and sheet.csv (must not hold a "
                                                            "sample yet)")
    ap.add_argument("--quota", default=",".join(f"{k}={n}" for k, n in QUOTA.items()))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", help="comma-separated ABLATION/REGIME/ARM shell patterns: sample only these runs' "
                                   "answers (default: every run, the untrained references included)")
    args = ap.parse_args(argv)
    if (args.out / "items.jsonl").exists():
        raise SystemExit(f"error: {args.out / 'items.jsonl'} exists and its labels refer to its rows: choose a new "
                         f"--out")
    rng = random.Random(args.seed)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    found = pools(args.results, arms)
    if not any(found.values()):
        raise SystemExit(f"error: --arms {args.arms!r}: no finished run in {args.results / 'runs'} belongs to these "
                         f"arms (ABLATION/REGIME/ARM, e.g. 'debate_augmentation/*/without_debate')" if arms else
                         f"error: {args.results / 'runs'}: no finished run to sample from")
    chosen = [item for kind, n in parse_quota(args.quota).items() for item in pick(found[kind], n, rng)]
    rng.shuffle(chosen)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "items.jsonl", "w") as f:
        for i, item in enumerate(chosen, start=1):
            f.write(json.dumps({"row": i, **item}, ensure_ascii=False) + "\n")
    with open(args.out / "sheet.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "kind", "system_prompt", "question", "reference", "answer"])
        for i, item in enumerate(chosen, start=1):
            w.writerow([i, item["kind"], item["system"] if item["kind"] == "echo" else "", item["question"],
                        REFERENCE.get(item["kind"], item["expected"]), item["answer"]])
    counts = defaultdict(lambda: defaultdict(int))
    for item in chosen:
        counts[item["kind"]][item["group"] or "-"] += 1
    print(f"{len(chosen)} answers sampled into {args.out}: " + json.dumps({k: dict(v) for k, v in counts.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
