#!/usr/bin/env python3
"""Where a study stands against its plan, and whether its runs may be published together.

    python tools/study_status.py [--results results] [--write results/PROGRESS.md] [--check]

Reads the plan the suite wrote first (results/plan.json) and the stored runs (results/runs/<key>.json), and
prints, per ablation, how many planned runs are stored, failed or missing, the code versions and data hashes
the stored runs were made with, and an estimate of the time left (core/study/plan.py's estimated_seconds: the
trainings and evaluations left, at the stored runs' median times).

--check exits 1 unless every planned run is stored, finished ok, and was made by the code and data in this
checkout: one code version (core/run/version.py: a hash of what decides results, not the commit) and the current
data hash. That is the condition for publishing a study; a partial or mixed one is listed, not hidden.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def status(results: Path) -> dict:
    """Per ablation: planned, stored ok, failed, missing; overall (core/report_data.study_totals, the counts the
    report and README show): records, trainings done and left; here only: code versions, data hashes, time left."""
    from core.report.data import ReportError, load_results, study_totals
    from core.report.data import status as run_status
    from core.study.plan import estimated_seconds

    try:
        rows, _, _, runs = load_results(results)
    except ReportError as e:
        raise SystemExit(f"error: {e}") from None
    per_ablation: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        per_ablation[row["ablation"]]["planned"] += 1
        per_ablation[row["ablation"]][run_status(runs.get(row["key"]))] += 1
    t = study_totals(rows, runs)
    found = {k: r for k, r in runs.items() if r is not None}
    left = [row for row in rows if runs.get(row["key"]) is None]
    return {
        "keys": t["planned"], "stored": t["ok"] + t["failed"], "ablations": per_ablation,
        "failed": sorted(k for k, r in found.items() if not r.ok),
        "code_versions": Counter(r.environment.get("code_version", "?") for r in found.values()),
        "data": Counter((r.data_sha256 or "?")[:16] for r in found.values()),
        "trainings_done": t["trainings"], "trainings_left": t["trainings_left"],
        "eta_s": estimated_seconds(left, list(found.values())),
    }


def render(s: dict) -> str:
    lines = ["| ablation | planned | stored | failed | missing |", "|---|---:|---:|---:|---:|"]
    for name, c in s["ablations"].items():
        lines.append(f"| {name} | {c['planned']} | {c['ok']} | {c['failed']} | {c['missing']} |")
    eta = f"about {s['eta_s'] / 3600:.1f} h of one 2-core CPU" if s["eta_s"] is not None else "unknown"
    versions = ", ".join(f"{v} ({n})" for v, n in s["code_versions"].most_common()) or "-"
    data = ", ".join(f"{v} ({n})" for v, n in s["data"].most_common()) or "-"
    return "\n".join([
        f"{s['stored']} of {s['keys']} planned run records stored ({s['trainings_done']} trainings done, "
        f"{s['trainings_left']} left: {eta}).", "",
        f"Code versions of the stored runs: {versions}. Data: {data}.", "", *lines, ""])


def check(s: dict, results: Path) -> list[str]:
    """Why the study cannot be published as it is (empty: it can)."""
    from core.run.knowledge import load_knowledge
    from core.run.version import code_version

    problems = []
    missing = sum(c["missing"] for c in s["ablations"].values())
    if missing or s["stored"] < s["keys"]:
        problems.append(f"{s['keys'] - s['stored']} planned run(s) not stored")
    if s["failed"]:
        problems.append(f"{len(s['failed'])} run(s) failed: {', '.join(s['failed'][:5])}")
    here, data = code_version(), load_knowledge().sha256[:16]
    if set(s["code_versions"]) - {here}:
        problems.append(f"runs made by other code than this checkout's ({here}): {dict(s['code_versions'])}")
    if set(s["data"]) - {data}:
        problems.append(f"runs made on other data than this checkout's ({data}): {dict(s['data'])}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--write", type=Path, help="also write the table (markdown) to this file")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the study is complete and of one code version")
    args = ap.parse_args(argv)
    s = status(args.results)
    text = render(s)
    print(text)
    if args.write:
        args.write.write_text("# Progress of the study\n\nWritten by tools/study_status.py.\n\n" + text)
    if args.check:
        problems = check(s, args.results)
        for p in problems:
            print(f"not publishable: {p}", file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
