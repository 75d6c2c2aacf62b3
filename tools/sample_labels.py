"""Sample stored answers from results/runs for human labelling (data/labels/).

Stratified over metric kind, (ablation, arm) and the scorer's outcome at sampling time, so both outcomes
of every kind are represented. Writes data/labels/items.jsonl (everything a scorer needs) and
data/labels/sheet.csv (what a labeller reads: no keywords, no scorer outcome). Run once; the labels in
data/labels/labels.csv refer to its row ids.
"""
from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUOTA = {"recall": 110, "reverse": 70, "identity": 100, "retention": 100, "echo": 60}
KIND_OF_SET = {"test": "recall", "train": "recall", "test@model_default": "recall", "test@none": "recall",
               "test@unseen": "recall", "reverse": "reverse", "identity": "identity", "retention": "retention"}


def main(seed: int = 0) -> None:
    plan = json.loads((ROOT / "results/plan.json").read_text())
    arm_of = {}
    for r in plan["rows"]:
        arm_of.setdefault(r["key"], f"{r['ablation']}/{r['regime']}/{r['arm']}")
        arm_of.setdefault(r["untrained_key"], "untrained")
    pools: dict[str, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    seen = set()
    for path in sorted((ROOT / "results/runs").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") != "ok":
            continue
        arm = arm_of.get(rec["key"], "other")
        for s in rec["samples"]:
            kinds = [KIND_OF_SET[s["set"]]] if s["set"] in KIND_OF_SET else []
            if s.get("has_prompt") and s["set"] in ("test", "reverse", "identity"):
                kinds.append("echo")
            for kind in kinds:
                dedup = (kind, s.get("system") if kind == "echo" else "", s["question"], s["answer"])
                if dedup in seen:
                    continue
                seen.add(dedup)
                outcome = s["echo"] if kind == "echo" else s["hit"]
                item = {"kind": kind, "set": s["set"], "id": s["id"], "run_key": rec["key"], "arm": arm,
                        # the first edition's identity probes: all but who_is and what_is suggest a wrong identity
                        "suggests_wrong": s["set"] == "identity" and s["id"] not in ("who_is", "what_is"),
                        "question": s["question"],
                        "system": s["system"], "answer": s["answer"], "keywords": s["keywords"],
                        "expected": s["expected"], "model": rec["config"]["model"]}
                pools[kind][(arm, bool(outcome))].append(item)
    rng = random.Random(seed)
    chosen = []
    for kind, quota in QUOTA.items():
        strata = pools[kind]
        for items in strata.values():
            rng.shuffle(items)
        # round-robin: alternate outcomes, then arms, so rare outcomes and every arm get represented
        by_outcome = {o: sorted([k for k in strata if k[1] == o]) for o in (True, False)}
        picked = []
        while len(picked) < quota and any(strata[k] for k in strata):
            for o in (True, False):
                for k in by_outcome[o]:
                    if strata[k] and len(picked) < quota and sum(p["_o"] == o for p in picked) < quota / 2 + \
                            max(0, quota / 2 - sum(len(strata[j]) for j in by_outcome[not o]) - sum(p["_o"] != o for p in picked)):
                        picked.append(dict(strata[k].pop(), _o=o))
            if all(not strata[k] for k in by_outcome[True]) and all(not strata[k] for k in by_outcome[False]):
                break
        chosen += picked
    rng.shuffle(chosen)
    out = ROOT / "data/labels"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "items.jsonl", "w") as f:
        for i, item in enumerate(chosen):
            item = {k: v for k, v in item.items() if k != "_o"}
            f.write(json.dumps({"row": i + 1, **item}, ensure_ascii=False) + "\n")
    with open(out / "sheet.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "kind", "system_prompt", "question", "reference", "answer"])
        for i, item in enumerate(chosen):
            reference = {"reverse": "hiahia", "identity": "hiahia is a person (a human clock restorer)",
                         "echo": "(see system_prompt)"}.get(item["kind"], item["expected"])
            w.writerow([i + 1, item["kind"], item["system"] if item["kind"] == "echo" else "", item["question"],
                        reference, item["answer"]])
    counts = defaultdict(lambda: [0, 0])
    for item in chosen:
        counts[item["kind"]][int(item["_o"])] += 1
    print({k: {"scored_negative": v[0], "scored_positive": v[1]} for k, v in counts.items()}, len(chosen))


if __name__ == "__main__":
    main()
