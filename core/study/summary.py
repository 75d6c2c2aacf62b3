"""The study's summary files (plan.json, verdicts.json, summary.csv) and where an invocation writes them.

The published study (results/, report/) is written only by a run of the whole published plan, and its verdicts,
CSV and report only once every planned run is finished (until then they go to results/partial/in-progress/); any
other run writes its summary files and report into results/partial/<name>/ or into its own --results folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import NamedTuple

from core.analysis.verdicts import AblationVerdict, ablation_verdict, holm_across
from core.files import locked, write_atomic, write_json_atomic
from core.paths import RESULTS
from core.run import metrics
from core.run.knowledge import DEFAULT_DATA
from core.run.record import RunRecord
from core.study.ablation import Ablation, listing_order
from core.study.store import PlanRow, load_run, planned_keys, precision_flags

log = logging.getLogger("run_all")


def tidy_rows(plan: list[PlanRow], records: dict[str, RunRecord]) -> list[dict]:
    rows = []
    for p in plan:
        rec = records.get(p["key"])
        status = rec.status if rec else "missing"
        for m in metrics.METRICS:
            value = rec.metrics.get(m) if rec and rec.ok else None
            rows.append({"ablation": p["ablation"], "regime": p["regime"], "arm": p["arm"], "seed": p["seed"],
                         "key": p["key"], "status": status, "metric": m, "value": value})
    return rows


class Saved(NamedTuple):
    """What save_summary / refresh_summary wrote: the verdicts, the folder they went to, and the planned run keys
    that had no finished run (for the published study: its verdicts are provisional while any is missing)."""
    summary: dict[str, AblationVerdict]
    folder: Path
    missing: list[str]


def save_summary(results: Path, ablations: list[Ablation], plan: list[PlanRow], records: dict,
                 runs: Path | None = None) -> Saved:
    """Merge this invocation's plan into results/plan.json and rewrite the CSV and verdicts (see _summarise for
    where). runs: the folder whose runs/ holds the stored runs (default: results itself; a partial run's folder
    reads the shared one)."""
    runs = runs or results
    with locked(results / "plan.lock"):  # another invocation may be merging its own plan right now
        rows, metas = _merge_plan(results, ablations, plan)
        return _summarise(results, rows, metas, records, runs)


def canonical_order(rows: list[PlanRow], metas: dict) -> tuple[list[dict], dict]:
    """Plan rows and ablation definitions in the order the ablations are listed (ablation.yaml `order`, then name),
    each ablation's rows in plan order: the files come out the same however the plan was put together."""
    metas = listing_order(metas)
    position = {n: i for i, n in enumerate(metas)}
    ordered = sorted(enumerate(rows), key=lambda ir: (position.get(ir[1]["ablation"], len(position)), ir[0]))
    return [r for _, r in ordered], metas


def _merge_plan(results: Path, ablations: list[Ablation], plan: list[PlanRow]) -> tuple[list[dict], dict]:
    """results/plan.json with this invocation's ablations replaced by `plan` and their current definitions."""
    plan_file = results / "plan.json"
    old = json.loads(plan_file.read_text()) if plan_file.exists() else {"rows": [], "ablations": {}}
    names = {a.name for a in ablations}
    rows = [r for r in old["rows"] if r["ablation"] not in names]
    rows += [{k: (v.to_dict() if k == "config" else v) for k, v in r.items()} for r in plan]
    metas = {k: v for k, v in old["ablations"].items() if k not in names}
    metas.update({a.name: a.meta() for a in ablations})
    rows, metas = canonical_order(rows, metas)
    write_json_atomic(plan_file, {"rows": rows, "ablations": metas})
    return rows, metas


def _copy_plan(store: Path, out: Path, rows: list[PlanRow], metas: dict) -> None:
    """Make `out` a results folder of its own for the plan: its plan.json and links to the stored runs."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "plan.json", {"rows": rows, "ablations": metas})
    link_runs(store, out, dict.fromkeys(planned_keys(rows)))


def _summarise(results: Path, rows: list[PlanRow], metas: dict, records: dict, runs: Path) -> Saved:
    """Verdicts and CSV of the plan `rows`, from this invocation's `records` or else the runs stored in `runs`, each
    read once. They go to `results` itself, except for the published study while any planned run (trained or
    untrained reference) is unfinished (being run, killed or failed): its verdicts would be provisional, so they go,
    with the plan and links to the stored runs, to results/partial/in-progress/ and the published files stay as
    they are."""
    stored = {k: records.get(k) or load_run(runs, k) for k in planned_keys(rows)}
    missing = [k for k, rec in stored.items() if not (rec and rec.ok)] if is_published(results) else []
    out = results / PARTIAL / IN_PROGRESS if missing else results
    if out != results:
        _copy_plan(runs, out, rows, metas)
    return Saved(_save_summary(out, rows, metas, {k: v for k, v in stored.items() if v}), out, missing)


def _save_summary(results: Path, rows: list[PlanRow], metas: dict, all_records: dict[str, RunRecord]
                  ) -> dict[str, AblationVerdict]:
    import pandas as pd

    all_abs = [Ablation.from_definition(name, m) for name, m in metas.items()]
    summary = {a.name: ablation_verdict(a, [r for r in rows if r["ablation"] == a.name], all_records)
               for a in all_abs}
    holm_across(summary)
    write_json_atomic(results / "verdicts.json", {name: v.to_json() for name, v in summary.items()})
    write_atomic(results / "summary.csv", pd.DataFrame(tidy_rows(rows, all_records)).to_csv(index=False))
    return summary


def refresh_summary(results: Path, available: dict[str, Ablation]) -> Saved:
    """Recompute verdicts and the CSV from the runs stored in `results`, with the current ablation definitions
    (see _summarise for where; results/plan.json takes the definitions only when the verdicts go beside it)."""
    with locked(results / "plan.lock"):
        plan = json.loads((results / "plan.json").read_text())
        rows, metas = plan["rows"], plan["ablations"]
        for name in metas:
            if name in available:
                metas[name] = available[name].meta()
        saved = _summarise(results, rows, metas, {}, results)
        if saved.folder == results:
            write_json_atomic(results / "plan.json", {"rows": rows, "ablations": metas})
        return saved


# ---- where an invocation writes ----------------------------------------------------------------

PARTIAL = "partial"  # results/partial/<name>/: plan, verdicts, summary and report of a run that is not the study
IN_PROGRESS = "in-progress"  # results/partial/in-progress/: the published study's verdicts while it is unfinished


def is_published(results: Path) -> bool:
    return results.resolve() == RESULTS.resolve()


def output_folder(args, results: Path, plan: list[PlanRow], full_plan) -> Path:
    """Where this invocation writes its plan, verdicts, summary (and, by default, its report): the results folder
    itself, unless that is the published study and this run is not the whole published plan (every ablation, its
    declared seeds, the baseline and data as shipped), which goes to results/partial/<name>/ instead.
    full_plan(): the rows of that whole published plan."""
    if not is_published(results):
        return results
    def rows(p: list[dict]) -> set[tuple]:  # the declared seeds' rows: confirmation seeds follow from stored results
        return {(r["ablation"], r["regime"], r["arm"], r["seed"], r["key"]) for r in p if not r.get("confirm")}

    full = Path(args.data).resolve() == DEFAULT_DATA.resolve() and rows(plan) == rows(full_plan())
    published = _published_rows(results)
    if full and published is not None and rows(published) != rows(plan):
        renamed = _renamed(rows(published), rows(plan))
        if renamed:  # the same runs: only the definitions' names changed
            log.warning("the whole plan with the published run keys, but other names than the published %s (%s): "
                        "written as a partial run. Remove %s to adopt the new names (every stored run is reused)",
                        results / "plan.json", renamed, results / "plan.json")
        else:
            log.warning("the whole plan, but with other run keys than the published %s (%s): written as a partial "
                        "run. Rerun with the published runs' options to reuse them, or remove %s to start a new "
                        "edition", results / "plan.json", _published_precision(results, published),
                        results / "plan.json")
        full = False
    return results if full else results / PARTIAL / partial_name(args)


def _renamed(published: set[tuple], planned: set[tuple]) -> str:
    """Where two plans of the same run keys name them differently, e.g. "weight_interpolation / recipe / scale_1 /
    seed 0 is now weight_interpolation / baseline / scale_1 / seed 0, and 9 more"; "" where their keys differ.
    Rows are (ablation, regime, arm, seed, key)."""
    before, now = _names_by_key(published), _names_by_key(planned)
    if before.keys() != now.keys():
        return ""
    moved = sorted((min(before[k] - now[k]), min(now[k] - before[k])) for k in before
                   if before[k] - now[k] and now[k] - before[k])
    if not moved:
        return "the same runs, named by more or fewer rows"
    (old, new), more = moved[0], len(moved) - 1
    return f"{_row_name(old)} is now {_row_name(new)}" + (f", and {more} more" if more else "")


def _names_by_key(rows: set[tuple]) -> dict[str, set[tuple]]:
    out: dict[str, set[tuple]] = {}
    for *where, key in rows:
        out.setdefault(key, set()).add(tuple(where))
    return out


def _row_name(where: tuple) -> str:
    ablation, regime, arm, seed = where
    return f"{ablation} / {regime} / {arm} / seed {seed}"


def _published_rows(results: Path) -> list[dict] | None:
    try:
        return json.loads((results / "plan.json").read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _published_tag(results: Path, rows: list[PlanRow]) -> str | None:
    """The precision tag the published runs record (e.g. cpu-bfloat16-mixed), from the first one stored."""
    for r in rows:
        stored = load_run(results, r["key"])
        if stored and stored.environment.get("precision"):
            return stored.environment["precision"]
    return None


def _published_precision(results: Path, rows: list[PlanRow]) -> str:
    """What the published runs record about where they computed, e.g. "they computed in cpu-bfloat16-mixed: add
    --precision bf16" (a run in another precision or on another device plans other keys)."""
    tag = _published_tag(results, rows)
    return f"they computed in {tag}: add {' '.join(precision_flags(tag))}" if tag else "another precision, device or code"


def published_precision(results: Path) -> str | None:
    """The --precision of the published study (fp32 or bf16, from what its stored runs record), for an invocation
    that names none: the precision belongs to the study, so regenerating it plans the same keys on any CPU. None
    where `results` is not the published folder or records none."""
    rows = _published_rows(results) if is_published(results) else None
    tag = _published_tag(results, rows) if rows else None
    return None if tag is None else ("fp32" if tag.endswith("-fp32") else "bf16")


def partial_name(args) -> str:
    """A folder name saying what the partial run chose, e.g. wrong_layer_path-seeds1 or all-set-lr=0.0001."""
    parts = ["+".join(n.strip() for n in args.only.split(",") if n.strip()) if args.only else "all"]
    parts += [f"seeds{args.seeds}"] if args.seeds is not None else []
    parts += [f"model-{args.model}"] if args.model else []
    parts += [f"pair-{args.pair}"] if args.pair else []
    parts += [f"set-{s}" for s in args.set]
    parts += [f"precision-{args.precision}"] if getattr(args, "precision", None) else []
    parts += [f"data-{Path(args.data).stem}"] if Path(args.data).resolve() != DEFAULT_DATA.resolve() else []
    name = re.sub(r"[^A-Za-z0-9._+=-]+", "_", "-".join(parts))
    return name if len(name) <= 80 else f"{name[:60]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def link_runs(store: Path, out: Path, records: dict) -> None:
    """Make a partial run's folder readable on its own (the report reads <folder>/runs): hard links to the shared
    stored runs (copies where links are impossible)."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for key in records:
        src, dst = store / "runs" / f"{key}.json", out / "runs" / f"{key}.json"
        if not src.is_file():
            continue
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def report_folder(args, results: Path) -> Path:
    """--report, else report/ for the published study and <results>/report for any other folder."""
    if args.report:
        return Path(args.report)
    from core.report.render import REPORT

    return REPORT if is_published(results) else results / "report"
