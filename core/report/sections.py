"""The report's sections as plain data for the templates: the summary rows, one ablation's page (what was toggled,
per regime an arm x metric table, figures, injection report, sample answers), the untrained model, the models and
the run metadata.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.analysis.verdicts import AblationVerdict
from core.report.data import (
    NOT_YET,
    ablation_verdict,
    arm_stat,
    cued,
    effect_text,
    gap,
    means_text,
    measured_verdict,
    primary_comparisons,
    seed_pairs,
    stale,
    status,
    verdict_class,
)
from core.report.evidence import data_note, reproduce_command
from core.report.figures import fmt, regime_figures
from core.report.samples import sample_tables, shown_sets
from core.run.metrics import METRICS
from core.run.record import RunRecord
from core.study.store import PlanRow

SHOW_PATHS = 4  # matched module paths listed per injection report


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


def _cell(ab: dict, verdict: AblationVerdict, regime: str, arm: str, metric: str, stat: dict, rrows: list[PlanRow],
          runs: dict, primary: list[tuple[str, str]]) -> dict:
    """One arm's value on one metric, with its difference from the control where one was compared."""
    c = None if arm == ab["control"] else verdict.comparison(regime, arm, metric)
    pairs = seed_pairs(c)
    # the effect pairs the seeds both arms finished and the items both scored; where those are not the arm's own
    # (retention against each arm's own untrained reference, or an arm with more seeds than the other) the means it
    # is the difference of are shown beside it, saying which
    paired = None
    if pairs and stat["mean"] is not None and abs(sum(t for _, t in pairs) / len(pairs) - stat["mean"]) > 0.005:
        seeds = list(c.seeds)
        on = [f"the {c.items} items both arms scored"]
        if len(seeds) < stat["n"]:
            on.insert(0, f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} (both arms finished)")
        paired = "on " + " and ".join(on)
    # a signature comparison no seed has measured yet has no verdict (not an "inconclusive" that reads as measured)
    shown = measured_verdict(c) if c and metric == ab["signature"] else (c.verdict if c else None)
    return {"metric": metric, "stat": stat, "cmp": c, "effect": effect_text(c),
            "paired": f"{paired}: {means_text(c).replace('->', '→')}" if paired else None,
            "verdict": shown, "class": verdict_class(shown),
            "stale": stale(c, rrows, runs, (arm, ab["control"])),
            "primary": metric == ab["signature"] and (regime, arm) in primary}


def _regime(ab: dict, regime: str, rrows: list[PlanRow], runs: dict, verdict: AblationVerdict, metrics: list[str],
            fig_dir: Path, primary: list[tuple[str, str]], show_injection: bool) -> dict:
    arms = list(ab["arms"])
    by_arm = {a: [r for r in rrows if r["arm"] == a] for a in arms}
    stats = {a: {m: arm_stat(by_arm[a], runs, m) for m in metrics} for a in arms}
    table = [{"arm": a, "control": a == ab["control"],
              "cells": [_cell(ab, verdict, regime, a, m, stats[a][m], rrows, runs, primary) for m in metrics]}
             for a in arms]
    seeds = sorted({r["seed"] for r in rrows})
    by_seed = [(sd, [(a, r, runs.get(r["key"])) for a in arms for r in by_arm[a] if r["seed"] == sd]) for sd in seeds]
    first = [(a, *min(((r, runs.get(r["key"])) for r in by_arm[a]), key=lambda p: p[0]["seed"]))
             for a in arms if by_arm[a]]
    return {
        "name": regime, "figs": regime_figures(ab, regime, rrows, runs, stats, metrics, fig_dir, "selection" in
                                               (ab.get("show") or [])),
        "table": table, "seeds": seeds,
        "problems": [{"arm": r["arm"], "seed": r["seed"], "key": r["key"], **gap(runs.get(r["key"]), r["key"])}
                     for r in rrows if status(runs.get(r["key"])) != "ok"],
        "samples": sample_tables(by_seed, shown_sets(metrics)) if rrows else None,
        "injection": [{"arm": a, "seed": row["seed"], "report": injection_report(rec), "gap": gap(rec, row["key"])}
                      for a, row, rec in first] if show_injection else None,
    }


NOT_MEASURED = f"{NOT_YET}: no deciding comparison has a seed with both arms finished"


def ablation_section(ab: dict, rows: list[PlanRow], runs: dict, verdict: AblationVerdict, fig_dir: Path) -> dict:
    name, arms = ab["name"], list(ab["arms"])
    metrics = [ab["signature"], *[m for m in ab.get("also") or [] if m != ab["signature"]]]
    regimes_meta = ab.get("regimes") or {"baseline": {}}
    any_row = {r["arm"]: r for r in rows}
    diff = [{"what": "arm", "name": a, "control": a == ab["control"],
             "overrides": overrides(ab["arms"][a], any_row.get(a, {}).get("config"))} for a in arms]
    diff += [{"what": "regime", "name": g, "control": False, "overrides": overrides(o, None)}
             for g, o in regimes_meta.items()]
    show_injection = "injection" in (ab.get("show") or []) or any(
        getattr(runs.get(r["key"]), "strict_error", None) for r in rows)
    primary, declared = primary_comparisons(ab, verdict)
    shown = ablation_verdict(ab, verdict)
    levels = sorted({c.level for g, a in primary if (c := verdict.comparison(g, a, ab["signature"])) and c.level})
    regimes = [_regime(ab, g, [r for r in rows if r["regime"] == g], runs, verdict, metrics, fig_dir,
                       primary if declared else [], show_injection) for g in regimes_meta]
    if "selection" in (ab.get("show") or []):  # did validation loss turn up, per seed (verdicts.validation_turns)
        for g in regimes:
            g["turns"] = sorted(verdict.validation.get(g["name"], []), key=lambda t: t["seed"])
    defined = [{"name": m, "description": METRICS[m].description, "better": METRICS[m].better}
               for m in metrics if m in METRICS]
    return {"name": name, "title": ab.get("title", name), "meta": ab, "metrics": metrics, "arms": arms, "diff": diff,
            "defined": defined,
            "regimes": regimes, "confound": bool(ab.get("confounded")), "cued": cued(rows, runs),
            "mark_best": "selection" in (ab.get("show") or []),
            "verdict": shown, "class": verdict_class(shown),
            "statement": verdict.statement if shown else NOT_MEASURED,
            "primary": [f"{g}/{a}" for g, a in primary],
            "declared": declared, "levels": levels, "command": reproduce_command(ab, rows, runs),
            "data_note": data_note(sorted({rec.data_sha256 for r in rows if status(rec := runs.get(r["key"])) == "ok"
                                           and rec.data_sha256})),
            "problems": sum(status(runs.get(r["key"])) != "ok" for r in rows),
            "planned_seeds": max((len({r["seed"] for r in rows if r["arm"] == a}) for a in arms), default=0)}


def summary_row(ab: dict, rows: list[PlanRow], runs: dict, verdict: AblationVerdict) -> dict:
    regime = verdict.regime or next(iter(ab.get("regimes") or {"baseline": {}}))
    arms = list(ab["arms"])
    rrows = [r for r in rows if r["regime"] == regime]
    effects = []
    for arm in arms:
        if arm != ab["control"]:
            c = verdict.comparison(regime, arm, ab["signature"])
            method, level = (c.method, c.level) if c else (None, None)
            effects.append({"arm": arm, "text": effect_text(c),
                            "method": f"{method}; {100 * level:.1f}% interval" if method and level else method,
                            "stale": stale(c, rrows, runs, (arm, ab["control"])),
                            "reason": c.reason if c else None})
    problems = sum(status(runs.get(r["key"])) != "ok" for r in rows)
    shown = ablation_verdict(ab, verdict)
    return {"name": ab["name"], "title": ab.get("title"),
            "factor": ab.get("factor"), "symptom": ab.get("symptom"), "signature": ab["signature"],
            "expected": ab.get("expected"), "control": ab["control"],
            "arms": [{"arm": a, **arm_stat([r for r in rrows if r["arm"] == a], runs, ab["signature"])} for a in arms],
            "verdict": shown, "class": verdict_class(shown),
            "regime": verdict.regime if shown else "", "shown_regime": regime, "effects": effects,
            "problems": problems, "confound": bool(ab.get("confounded"))}


def untrained_section(rows: list[PlanRow], runs: dict) -> list[dict]:
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
            row = {"seed": rec.config.get("seed", 0), "key": key}
            entry.update(
                model=rec.config.get("model", model), asked=rec.config.get("format"),
                format=rec.resolved_format or rec.config.get("format"),
                metrics={k: fmt(m.get(k)) for k, metric in METRICS.items()
                         if m.get(k) is not None and not metric.needs_reference},
                kept=sum(bool(s.get("kept", s.get("hit"))) for s in ret), probes=len(ret),
                samples=sample_tables([(row["seed"], [("untrained answer", row, rec)])]))
        out.append(entry)
    return out


def model_table(rows: list[PlanRow], runs: dict) -> list[dict]:
    """One row per model spec, described by the model card its runs recorded (runs stored before records carried
    one say so)."""
    out = []
    for spec in dict.fromkeys(r["config"]["model"] for r in rows):
        used = [r for r in rows if r["config"]["model"] == spec]
        recs = [rec for r in used for k in (r["key"], r.get("untrained_key")) if (rec := runs.get(k)) is not None]
        formats = sorted({rec.resolved_format or "?" for rec in recs if status(rec) == "ok"} - {"?"})
        cards = [rec.model_card for rec in recs if rec.model_card]
        card = cards[0] if cards else {"name": spec, "kind": "-", "licence": "not recorded", "licence_url": None,
                                       "source": "not recorded (runs stored before records had a model card)"}
        out.append({"spec": spec, **card, "formats": formats})
    return out
