#!/usr/bin/env python3
"""Write a published edition's snapshot for the "what changed" comparison (core/report/editions.py).

    python tools/edition_snapshot.py edition-2 --name "second edition" --renamed learning_rate=training_schedule
                                     [--out data/editions/edition-2.json]

Reads results/plan.json and results/verdicts.json as the tagged commit holds them (git show), summarises each
ablation as core.report.editions.snapshot does for the current edition (verdict, signature, design, seeds, the
deciding effect and its means), and writes it as JSON with the edition's name and --renamed: NEW=OLD for each
ablation that had another name in that edition. Run once per published edition; the file is committed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.analysis.verdicts import read_verdicts  # noqa: E402
from core.files import write_atomic  # noqa: E402
from core.report.editions import snapshot  # noqa: E402
from core.report.findings import forest_rows, outcomes, with_labels  # noqa: E402


def tagged(tag: str, path: str) -> dict:
    try:
        text = subprocess.run(["git", "show", f"{tag}:{path}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"error: {tag}:{path}: {e.stderr.strip() or 'not found'} (is the tag fetched? "
                         f"git fetch --tags)") from None
    return json.loads(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tag", help="the edition's git tag, e.g. edition-2")
    ap.add_argument("--name", required=True, help='how the README names the edition, e.g. "second edition"')
    ap.add_argument("--renamed", action="append", default=[], metavar="NEW=OLD",
                    help="an ablation's current name and its name in that edition (repeatable)")
    ap.add_argument("--out", type=Path, help="default: data/editions/<tag>.json")
    args = ap.parse_args(argv)
    bad = [r for r in args.renamed if r.count("=") != 1 or not all(r.split("="))]
    if bad:
        raise SystemExit(f"error: --renamed {bad[0]!r}: give NEW=OLD, e.g. learning_rate=training_schedule")
    plan, verdicts = tagged(args.tag, "results/plan.json"), read_verdicts(tagged(args.tag, "results/verdicts.json"))
    metas = with_labels(plan["ablations"])
    forest = forest_rows(metas, verdicts, plan["rows"], {})  # its comparisons store each seed's numbers
    out = args.out or ROOT / "data" / "editions" / f"{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"edition": args.name, "tag": args.tag, "renamed": dict(r.split("=") for r in args.renamed),
            "ablations": snapshot(metas, outcomes(metas, verdicts, forest))}
    write_atomic(out, json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
