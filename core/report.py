"""The HTML report: results/ (plan.json, runs/, verdicts.json) -> report/index.html plus figures (core/figures.py).

It only reads results, so `python -m core.report` re-renders at any time without training. A run that
is missing or failed is shown as a marked gap with its error, never as a zero.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from . import figures
from .figures import fmt, regime_figures
from .metrics import METRICS
from .record import RunRecord
from .results import RESULTS, ROOT, arm_summary, run_path, write_atomic
from .version import git_commit

TEMPLATES = Path(__file__).resolve().parent / "templates"
REPORT = ROOT / "report"
QUESTION = "Can LoRA inject personal facts into a small chat model, and what breaks it?"
SAMPLE_TESTS = 6  # test questions shown side by side per regime
SAMPLE_IDENTITY = 5  # identity probes shown side by side per regime
SHOW_PATHS = 4  # matched module paths listed per injection report


class ReportError(RuntimeError):
    """The results folder cannot be reported on; the message says what is missing."""


# ---- reading results ------------------------------------------------------------------------------

def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_results(results_dir: Path) -> tuple[list[dict], dict[str, dict], dict, dict[str, RunRecord | None]]:
    """(plan rows, ablation metas sorted by order, verdicts, {key: run record or None when not on disk})."""
    plan = _read_json(results_dir / "plan.json")
    if not plan or "rows" not in plan:
        raise ReportError(f"{results_dir / 'plan.json'} is missing or unreadable: run `python run_all.py` first "
                          f"(or pass --results DIR with a finished run)")
    metas = {name: dict(meta, name=name) for name, meta in plan.get("ablations", {}).items()}
    metas = dict(sorted(metas.items(), key=lambda kv: (kv[1].get("order", 100), kv[0])))
    verdicts = _read_json(results_dir / "verdicts.json") or {}
    keys = [r["key"] for r in plan["rows"]] + [r["untrained_key"] for r in plan["rows"] if r.get("untrained_key")]
    runs = {}
    for key in dict.fromkeys(keys):
        path = run_path(results_dir, key)
        stored = _read_json(path) if path.exists() else None
        if path.exists() and not isinstance(stored, dict):
            runs[key] = RunRecord(key=key, config={}, status="failed",
                                  error=f"{path.name} exists but is not readable JSON")
        else:
            runs[key] = RunRecord.from_json(stored) if stored is not None else None
    return plan["rows"], metas, verdicts, runs


def status(rec: RunRecord | None) -> str:
    if rec is None:
        return "missing"
    return "ok" if rec.ok else "failed"


def gap(rec: RunRecord | None, key: str) -> dict:
    """What to show instead of a value for a run that did not finish."""
    if rec is None:
        return {"kind": "missing", "text": "missing run", "detail": f"run {key} is not on disk (never run or deleted)"}
    return {"kind": "failed", "text": "failed run", "detail": rec.error or "failed without an error message"}


# ---- numbers ------------------------------------------------------------------------------------

def arm_stat(rows: list[dict], runs: dict, metric: str) -> dict:
    """Mean and 95% interval (inside [0, 1]) over the arm's finished seeds and items, with the per-seed
    values; the text says when it rests on one seed or none."""
    recs = [runs.get(r["key"]) for r in rows]
    ok = [r for r in recs if status(r) == "ok"]
    summary = arm_summary([r.to_json() for r in ok], metric)
    mean, low, high, n = summary["mean"], summary["low"], summary["high"], summary["n"]
    missing = sum(status(r) == "missing" for r in recs)
    failed = sum(status(r) == "failed" for r in recs)
    note = ", ".join(t for t in (f"{missing} missing" if missing else "", f"{failed} failed" if failed else "") if t)
    if mean is None:
        text, reason = None, ("no finished run" if not ok else f"{metric} undefined")
    elif n == 1:
        text, reason = f"{mean:.2f} (1 seed)", ""
    else:
        text, reason = f"{mean:.2f} [{low:.2f}, {high:.2f}]", ""
    return {"mean": mean, "low": low, "high": high, "n": n, "text": text, "reason": reason, "note": note,
            "per_seed": summary["per_seed"]}


def effect_text(cmp: dict | None) -> str | None:
    if not cmp or cmp.get("diff") is None:
        return None
    if cmp.get("low") is None or cmp.get("high") is None:
        return f"{cmp['diff']:+.2f}"
    return f"{cmp['diff']:+.2f} [{cmp['low']:+.2f}, {cmp['high']:+.2f}]"


def stale(cmp: dict | None, rows: list[dict], runs: dict, arms: tuple[str, str]) -> bool:
    """True when a stored comparison used a seed whose run (of either arm) is no longer finished on disk."""
    if not cmp or not cmp.get("seeds"):
        return False
    ok = {(r["arm"], r["seed"]) for r in rows if status(runs.get(r["key"])) == "ok"}
    return any((arm, seed) not in ok for arm in arms for seed in cmp["seeds"])


def verdict_class(verdict: str | None) -> str:
    return {"reproduced": "v-yes", "not reproduced": "v-no", "inconclusive": "v-maybe"}.get(verdict or "", "v-none")


# ---- page sections ------------------------------------------------------------------------------

def pick_run(rows: list[dict], runs: dict) -> tuple[dict, RunRecord | None]:
    """The row shown for sample answers: seed 0 if planned, else the lowest seed."""
    row = min(rows, key=lambda r: r["seed"])
    return row, runs.get(row["key"])


def _spread(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def sample_table(columns: list[tuple[str, dict, RunRecord | None]]) -> dict:
    """Test questions and identity probes side by side: columns are (label, row, record)."""
    ref = next((rec for _, _, rec in columns if status(rec) == "ok"), None)
    head = [{"label": label, "seed": row["seed"], "gap": None if status(rec) == "ok" else gap(rec, row["key"])}
            for label, row, rec in columns]
    if ref is None:
        return {"head": head, "rows": []}
    samples = ref.samples
    first_per_fact = list({s["id"]: s for s in reversed([s for s in samples if s["set"] == "test"])}.values())[::-1]
    chosen = _spread(first_per_fact, SAMPLE_TESTS) + _spread([s for s in samples if s["set"] == "identity"],
                                                             SAMPLE_IDENTITY)
    index = [{(s["set"], s["id"], s["question"]): s for s in rec.samples} if status(rec) == "ok"
             else None for _, _, rec in columns]
    out = []
    for s in chosen:
        cells, systems = [], []
        for (label, _, _), idx in zip(columns, index):
            got = idx.get((s["set"], s["id"], s["question"])) if idx is not None else None
            if idx is None:
                cells.append({"gap": True})
                continue
            if got is None:
                cells.append({"answer": None})
                continue
            cells.append({"answer": got["answer"], "hit": bool(got.get("hit")), "echo": bool(got.get("echo"))})
            systems.append((label, got.get("system")))
        out.append({"set": s["set"], "id": s["id"], "question": s["question"], "expected": s["expected"],
                    "systems": [(label, "(no system prompt)" if sys_ is None else sys_) for label, sys_ in systems],
                    "cells": cells})
    return {"head": head, "rows": out}


def injection_report(rec: RunRecord | None) -> dict | None:
    if status(rec) != "ok":
        return None
    inj = rec.injection
    matched = inj.get("matched") or []
    total = inj.get("total_params") or 0
    trainable = inj.get("trainable_params") or 0
    return {"targets": inj.get("targets") or [], "matched": len(matched), "paths": matched[:SHOW_PATHS],
            "more": max(len(matched) - SHOW_PATHS, 0), "trainable": f"{trainable:,}", "total": f"{total:,}",
            "share": f"{100 * trainable / total:.3f}%" if total else "n/a",
            "warning": "" if (inj.get("warning") or "") in (rec.strict_error or "") else inj["warning"],
            "strict_error": rec.strict_error}


def show_value(v) -> str:
    """A config value as written in ablation.yaml: strings bare, lists in brackets."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(show_value(x) for x in v) + "]"
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    return str(v)


def overrides(over: dict, resolved: dict | None) -> list[dict]:
    """Each override of the baseline; placeholders such as {pair.chat} also show what they resolved to."""
    out = []
    for k, v in (over or {}).items():
        shown = resolved.get(k) if resolved and isinstance(v, str) and v.startswith("{") else None
        out.append({"field": k, "value": show_value(v), "resolved": show_value(shown) if shown is not None else None})
    return out


def ablation_section(ab: dict, rows: list[dict], runs: dict, verdict: dict, fig_dir: Path) -> dict:
    name, arms = ab["name"], list(ab["arms"])
    metrics = [ab["signature"], *[m for m in ab.get("also") or [] if m != ab["signature"]]]
    regimes_meta = ab.get("regimes") or {"baseline": {}}
    any_row = {r["arm"]: r for r in rows}
    diff = [{"what": "arm", "name": a, "control": a == ab["control"],
             "overrides": overrides(ab["arms"][a], any_row.get(a, {}).get("config"))} for a in arms]
    diff += [{"what": "regime", "name": g, "control": False, "overrides": overrides(o, None)}
             for g, o in regimes_meta.items()]
    show = ab.get("show") or []
    mark_best = "selection" in show
    show_injection = "injection" in show or any(getattr(runs.get(r["key"]), "strict_error", None) for r in rows)
    regimes = []
    for regime in regimes_meta:
        rrows = [r for r in rows if r["regime"] == regime]
        by_arm = {a: [r for r in rrows if r["arm"] == a] for a in arms}
        stats = {a: {m: arm_stat(by_arm[a], runs, m) for m in metrics} for a in arms}
        figs = regime_figures(ab, regime, rrows, runs, stats, metrics, fig_dir, mark_best)
        comparisons = (verdict.get("comparisons") or {}).get(regime) or {}
        vrows = []
        for arm in arms:
            if arm == ab["control"]:
                continue
            for m in metrics:
                c = (comparisons.get(arm) or {}).get(m)
                vrows.append({"arm": arm, "metric": m, "signature": m == ab["signature"], "cmp": c,
                              "stale": stale(c, rrows, runs, (arm, ab["control"])),
                              "effect": effect_text(c), "verdict": (c or {}).get("verdict"),
                              "class": verdict_class((c or {}).get("verdict"))})
        shown = [(a, *pick_run(by_arm[a], runs)) for a in arms if by_arm[a]]
        problems = [{"arm": r["arm"], "seed": r["seed"], "key": r["key"], **gap(runs.get(r["key"]), r["key"])}
                    for r in rrows if status(runs.get(r["key"])) != "ok"]
        regimes.append({
            "name": regime, "figs": figs, "stats": stats, "verdicts": vrows, "problems": problems,
            "seeds": sorted({r["seed"] for r in rrows}), "samples": sample_table(shown) if shown else None,
            "injection": [{"arm": a, "seed": row["seed"], "report": injection_report(rec), "gap": gap(rec, row["key"])}
                          for a, row, rec in shown] if show_injection else None,
        })
    return {"name": name, "title": ab.get("title", name), "meta": ab, "metrics": metrics, "arms": arms, "diff": diff,
            "regimes": regimes, "confound": bool(ab.get("confounded")), "mark_best": mark_best}


def summary_row(ab: dict, rows: list[dict], runs: dict, verdict: dict) -> dict:
    regime = verdict.get("regime") or next(iter(ab.get("regimes") or {"baseline": {}}))
    arms = list(ab["arms"])
    rrows = [r for r in rows if r["regime"] == regime]
    comparisons = (verdict.get("comparisons") or {}).get(regime) or {}
    effects = []
    for arm in arms:
        if arm != ab["control"]:
            c = (comparisons.get(arm) or {}).get(ab["signature"])
            effects.append({"arm": arm, "text": effect_text(c), "method": (c or {}).get("method"),
                            "stale": stale(c, rrows, runs, (arm, ab["control"])),
                            "reason": (c or {}).get("reason")})
    problems = sum(status(runs.get(r["key"])) != "ok" for r in rows)
    return {"name": ab["name"], "title": ab.get("title"),
            "factor": ab.get("factor"), "symptom": ab.get("symptom"), "signature": ab["signature"],
            "expected": ab.get("expected"), "control": ab["control"],
            "arms": [{"arm": a, **arm_stat([r for r in rrows if r["arm"] == a], runs, ab["signature"])} for a in arms],
            "verdict": verdict.get("verdict"), "class": verdict_class(verdict.get("verdict")),
            "regime": verdict.get("regime") or "", "shown_regime": regime, "effects": effects,
            "problems": problems, "confound": bool(ab.get("confounded"))}


def untrained_section(rows: list[dict], runs: dict) -> list[dict]:
    users: dict[str, list[str]] = {}
    for r in rows:
        if r.get("untrained_key"):
            users.setdefault(r["untrained_key"], [])
            if r["ablation"] not in users[r["untrained_key"]]:
                users[r["untrained_key"]].append(r["ablation"])
    out = []
    for key, abs_ in users.items():
        rec = runs.get(key)
        model = next((r["config"]["model"] for r in rows if r.get("untrained_key") == key), "?")
        entry = {"key": key, "model": model, "used_by": abs_, "gap": None if status(rec) == "ok" else gap(rec, key)}
        if status(rec) == "ok":
            ret = [s for s in rec.samples if s["set"] == "retention"]
            m = rec.metrics
            entry.update(
                model=rec.config.get("model", model), asked=rec.config.get("format"),
                format=rec.resolved_format or rec.config.get("format"),
                metrics={k: fmt(m.get(k)) for k, metric in METRICS.items() if m.get(k) is not None and not metric.needs_reference},
                kept=sum(bool(s.get("kept", s.get("hit"))) for s in ret), probes=len(ret),
                samples=sample_table([("untrained answer", {"seed": rec.config.get("seed", 0), "key": key}, rec)]))
        out.append(entry)
    return out


def model_table(rows: list[dict], runs: dict) -> list[dict]:
    """One row per model spec, described by the model card its runs recorded (runs stored before records carried
    one say so)."""
    out = []
    for spec in dict.fromkeys(r["config"]["model"] for r in rows):
        used = [r for r in rows if r["config"]["model"] == spec]
        formats = sorted({runs[r["key"]].resolved_format or "?" for r in used if status(runs.get(r["key"])) == "ok"}
                         - {"?"})
        cards = [rec.model_card for r in used for k in (r["key"], r.get("untrained_key"))
                 if (rec := runs.get(k)) is not None and rec.model_card]
        card = cards[0] if cards else {"name": spec, "kind": "-", "licence": "not recorded", "licence_url": None,
                                       "source": "not recorded (runs stored before records had a model card)"}
        out.append({"spec": spec, **card, "formats": formats})
    return out


def metadata_section(rows: list[dict], metas: dict, runs: dict) -> dict:
    used: dict[str, list[str]] = {}
    for r in rows:
        used.setdefault(r["key"], []).append(f"{r['ablation']} / {r['regime']} / {r['arm']} / seed {r['seed']}")
        if r.get("untrained_key"):
            label = f"untrained reference ({r['config']['model']}, format {r['config'].get('format')})"
            if label not in used.setdefault(r["untrained_key"], []):
                used[r["untrained_key"]].append(label)
    order = {name: i for i, name in enumerate(metas)}
    keys = sorted(used, key=lambda k: min(order.get(u.split(" / ")[0], -1) for u in used[k]))
    durations, totals = [], Counter()
    for key in keys:
        rec = runs.get(key)
        t = rec.timings if rec else {}
        durations.append({"key": key, "used_by": used[key], "status": status(rec),
                          "model": rec.config.get("model", "") if rec else "",
                          "error": rec.error if status(rec) == "failed" else None,
                          **{k: fmt(t.get(k), 1) if t.get(k) is not None else ""
                             for k in ("load", "train", "eval", "total")}})
        for k in ("load", "train", "eval", "total"):
            totals[k] += t.get(k) or 0.0
    ok = [r for r in runs.values() if status(r) == "ok"]
    envs = Counter(json.dumps(r.environment, sort_keys=True) for r in ok)
    packages = {}
    for name in ("pandas", "matplotlib", "seaborn", "jinja2"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "seeds": sorted({r["seed"] for r in rows}),
        "environments": [{"env": json.loads(e), "runs": n} for e, n in envs.most_common()],
        "durations": durations, "totals": {k: f"{v:.1f}" for k, v in totals.items()},
        "counts": Counter(status(runs.get(k)) for k in keys),
        "report_packages": packages, "python": sys.version.split()[0],
        "code_version": git_commit(),  # the commit the page is rendered at; each run records its own code
        "data_sha256": sorted({r.data_sha256 for r in ok if r.data_sha256}),
        "model_identities": sorted({r.model_identity for r in ok if r.model_identity}),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---- rendering ----------------------------------------------------------------------------------

def render(results_dir: Path = RESULTS, out_dir: Path = REPORT) -> Path:
    """Write out_dir/index.html and out_dir/figures/*.png from results_dir; returns the index path."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    rows, metas, verdicts, runs = load_results(results_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # figures of ablations or regimes that are gone must not linger
        old.unlink()
    figures.theme()
    try:
        sections = [ablation_section(ab, [r for r in rows if r["ablation"] == name], runs, verdicts.get(name) or {},
                                     fig_dir) for name, ab in metas.items()]
    finally:
        figures.close_all()
    summary = [summary_row(ab, [r for r in rows if r["ablation"] == name], runs, verdicts.get(name) or {})
               for name, ab in metas.items()]
    try:
        frontier = figures.frontier_figure(rows, runs, fig_dir / "frontier.png")
    finally:
        figures.close_all()
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    html = env.get_template("report.html.j2").render(
        css=Markup((TEMPLATES / "report.css").read_text()),  # our own file, not results text
        question=QUESTION, models=model_table(rows, runs), summary=summary, sections=sections,
        untrained=untrained_section(rows, runs), meta=metadata_section(rows, metas, runs), frontier=frontier,
    )
    write_atomic(out_dir / "index.html", html)
    return out_dir / "index.html"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.report", description="Re-render the report from stored results.")
    p.add_argument("--results", default=str(RESULTS), help="results folder (default results/)")
    p.add_argument("--out", default=str(REPORT), help="report folder (default report/)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        out = render(Path(args.results), Path(args.out))
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
