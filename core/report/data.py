"""What the report reads and the numbers it shows: the results folder loaded, run status and gaps, an arm's
mean with its interval and per-seed values, and the comparisons from verdicts.json that decide each verdict.

Everything here only reads results; the pages (core/report/render.py and its sections) only present it.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.analysis.compare import arm_summary
from core.analysis.verdicts import BY_WORD, AblationVerdict, Comparison, read_verdicts
from core.run.config import training_of
from core.run.metrics import METRICS
from core.run.record import RunRecord
from core.study.ablation import Ablation, listing_order
from core.study.store import PlanRow, planned_keys, run_path


class ReportError(RuntimeError):
    """The results folder cannot be reported on; the message says what is missing."""


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_results(results_dir: Path) -> tuple[list[dict], dict[str, dict], dict[str, AblationVerdict],
                                             dict[str, RunRecord | None]]:
    """(plan rows, ablation metas sorted by order, verdicts, {key: run record or None when not on disk})."""
    plan = _read_json(results_dir / "plan.json")
    if not plan or "rows" not in plan:
        raise ReportError(f"{results_dir / 'plan.json'} is missing or unreadable: run `python run_all.py` first "
                          f"(or pass --results DIR with a finished run)")
    metas = listing_order({name: dict(meta, name=name) for name, meta in plan.get("ablations", {}).items()})
    verdicts = read_verdicts(_read_json(results_dir / "verdicts.json"))
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


def study_totals(rows: list[PlanRow], runs: dict) -> dict:
    """How many planned run records are finished, failed or missing, how many trainings the finished ones took and
    how many are still to run, and their summed stored time (a training shared by two selection arms counted
    once): the report's header, the README's generated numbers and tools/study_status.py all read this."""
    keys = planned_keys(rows)
    counts = {"ok": 0, "failed": 0, "missing": 0}
    for k in keys:
        counts[status(runs.get(k))] += 1
    done = [runs[k] for k in keys if status(runs.get(k)) == "ok"]
    trained = [rec for rec in done if rec.config.get("epochs")]
    per_training: dict[tuple, float] = {}  # a training shared by several configs counted once (its longest record)
    for rec in done:
        t = training_of(rec.config) if rec.shared_training else (rec.key,)
        per_training[t] = max(per_training.get(t, 0.0), (rec.timings or {}).get("total", 0.0))
    return {"planned": len(keys), **counts,
            "trainings": len({training_of(rec.config) for rec in trained}),
            "trainings_left": len({training_of(r["config"]) for r in rows if runs.get(r["key"]) is None}),
            "seconds": sum(per_training.values())}


def status(rec: RunRecord | None) -> str:
    if rec is None:
        return "missing"
    return "ok" if rec.ok else "failed"


def trained_nothing(rec: RunRecord | None) -> bool:
    """A finished run whose LoRA matched no module: it ran its epochs with 0 trainable parameters."""
    return status(rec) == "ok" and (rec.injection or {}).get("trainable_params") == 0


def cued(rows: list[PlanRow], runs: dict) -> list[dict]:
    """Where the system prompt a run answers under contains the reverse questions' own answer (the fixed "AI
    assistant" prompt names hiahia): per regime and arm, how many of its finished runs' reverse questions were
    asked under such a prompt, and one such prompt. There reverse_recall can be read off the prompt, and identity
    answers can repeat what the prompt says about the person."""
    out = []
    for g, a in dict.fromkeys((r["regime"], r["arm"]) for r in rows):
        asked = [smp for r in rows if r["regime"] == g and r["arm"] == a and status(rec := runs.get(r["key"])) == "ok"
                 for smp in rec.samples if smp["set"] == "reverse"]
        hit = [smp for smp in asked if smp.get("system") and smp.get("expected")
               and smp["expected"].lower() in smp["system"].lower()]
        if hit:
            out.append({"regime": g, "arm": a, "cued": len(hit), "asked": len(asked), "answer": hit[0]["expected"],
                        "system": hit[0]["system"]})
    return out


CUED_METRICS = ("reverse_recall", "identity_hallucination")  # what a prompt naming the person can give away


def gap(rec: RunRecord | None, key: str) -> dict:
    """What to show instead of a value for a run that did not finish."""
    if rec is None:
        return {"kind": "missing", "text": "missing run", "detail": f"run {key} is not on disk (never run or deleted)"}
    return {"kind": "failed", "text": "failed run", "detail": rec.error or "failed without an error message"}




def stat_text(stat: dict, digits: int = 2) -> str | None:
    """An arm_stat's mean and interval as printed; None without a mean; says when it rests on one seed, or on
    fewer than 2 items (no interval can be computed then)."""
    if stat["mean"] is None:
        return None
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f} (1 seed)"
    if stat["low"] is None:
        return f"{stat['mean']:.{digits}f} (no interval: fewer than 2 items)"
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def arm_stat(rows: list[PlanRow], runs: dict, metric: str) -> dict:
    """Mean and 95% interval (inside the metric's range) over the arm's finished seeds and items, with each seed's
    value and run key; the text says when it rests on one seed or none."""
    recs = [runs.get(r["key"]) for r in rows]
    ok = [r for r in recs if status(r) == "ok"]
    summary = arm_summary([r.to_json() for r in ok], metric)
    clip = METRICS[metric].clip if metric in METRICS else (lambda v: v)  # a metric an older plan names
    mean, low, high, n = clip(summary["mean"]), clip(summary["low"]), clip(summary["high"]), summary["n"]
    missing = sum(status(r) == "missing" for r in recs)
    failed = sum(status(r) == "failed" for r in recs)
    note = ", ".join(t for t in (f"{missing} missing" if missing else "", f"{failed} failed" if failed else "") if t)
    text = stat_text({"mean": mean, "low": low, "high": high, "n": n})
    reason = "" if mean is not None else ("no finished run" if not ok else f"{metric} undefined")
    keys = {r["seed"]: r["key"] for r in rows}
    seeds = [{"seed": sd, "value": v, "key": keys.get(sd)} for sd, v in sorted(summary["per_seed"].items())]
    return {"mean": mean, "low": low, "high": high, "n": n, "text": text, "reason": reason, "note": note,
            "per_seed": summary["per_seed"], "seeds": seeds}


def effect_text(cmp: Comparison | None) -> str | None:
    if cmp is None or cmp.diff is None:
        return None
    if cmp.low is None or cmp.high is None:
        return f"{cmp.diff:+.2f}"
    # a third decimal where two would print a number as one it is not and that decides something: an interval end
    # or the effect within rounding of +-min_effect (-0.097 as "-0.10" reads as reaching it), an end within rounding
    # of 0 (-0.0006 as "-0.00" reads as touching it)
    bound = cmp.min_effect or 0.0
    marks = {(cmp.low, m) for m in (0.0, bound, -bound)} | {(cmp.high, m) for m in (0.0, bound, -bound)} | \
        {(cmp.diff, m) for m in (bound, -bound) if bound}
    digits = 3 if any(v != m and round(v, 2) == round(m, 2) for v, m in marks) else 2
    text = f"{cmp.diff:+.{digits}f} [{cmp.low:+.{digits}f}, {cmp.high:+.{digits}f}]"
    if cmp.low == cmp.high == cmp.diff == 0:  # a zero-width interval: every paired item scored alike
        scores = {v for pair in cmp.per_seed.values() for v in pair}
        if scores == {0}:
            answers = len(cmp.seeds) * (cmp.items or 0)
            text += f" (none of {answers} answers per arm counted, in either arm)" if answers else \
                " (no answer counted in either arm)"
        else:
            text += " (no item differs between the arms)"
    return text


def seed_pairs(cmp: Comparison | None) -> list[tuple[float, float]]:
    """A stored comparison's (control, treatment) scores, one pair per seed both arms finished."""
    return [(c, t) for c, t in (cmp.per_seed if cmp else {}).values() if c is not None and t is not None]


def means_text(cmp: Comparison | None) -> str | None:
    """Control -> treatment on a comparison's metric, each the mean over the seeds both arms finished of the
    per-seed scores on the items both scored (the two means whose difference the effect is)."""
    pairs = seed_pairs(cmp)
    if not pairs:
        return None
    return f"{sum(c for c, _ in pairs) / len(pairs):.2f} -> {sum(t for _, t in pairs) / len(pairs):.2f}"


def stale(cmp: Comparison | None, rows: list[PlanRow], runs: dict, arms: tuple[str, str]) -> bool:
    """True when a stored comparison used a seed whose run (of either arm) is no longer finished on disk."""
    if cmp is None or not cmp.seeds:
        return False
    ok = {(r["arm"], r["seed"]) for r in rows if status(runs.get(r["key"])) == "ok"}
    return any((arm, seed) not in ok for arm in arms for seed in cmp.seeds)


def verdict_class(verdict: str | None) -> str:
    return BY_WORD[verdict].css if verdict in BY_WORD else "v-none"


NOT_YET = "not measured yet"  # a deciding comparison without a seed that has both arms finished (measured_verdict)


def measured_verdict(cmp: Comparison | None) -> str | None:
    """A stored comparison's verdict, or None while no seed has both arms finished (Comparison.measured_verdict)."""
    return cmp.measured_verdict if cmp is not None else None


def ablation_verdict(ab: dict, verdict: AblationVerdict) -> str | None:
    """The ablation's stored verdict, or None while none of its deciding comparisons is measured (measured_verdict)."""
    pairs, _ = primary_comparisons(ab, verdict)
    measured = any(measured_verdict(verdict.comparison(g, a, ab["signature"])) for g, a in pairs)
    return verdict.verdict if measured else None


def primary_comparisons(ab: dict, verdict: AblationVerdict) -> tuple[list[tuple[str, str]], bool]:
    """((regime, arm) of the comparisons that decide the verdict, declared): those flagged primary in
    verdicts.json, else those the ablation's `primary` names; results from before `primary` existed compare
    every treatment arm in every regime, and declared is False (all of them exploratory)."""
    flagged = verdict.flagged_primary(ab["signature"])
    if flagged:
        return flagged, True
    try:
        return Ablation.from_definition(ab["name"], ab).primary_comparisons(), True
    except (TypeError, ValueError):  # a first-edition definition: no `primary`, or keys this code no longer has
        regimes = list(ab.get("regimes") or {"baseline": {}})
        return [(g, a) for g in regimes for a in ab["arms"] if a != ab["control"]], False


def oriented(cmp: Comparison | None, expected: str | None) -> float | None:
    """A signature effect in the symptom's expected direction (positive = the symptom came back)."""
    if cmp is None or cmp.diff is None:
        return None
    return (-cmp.diff if expected == "decrease" else cmp.diff) + 0.0  # + 0.0: no "-0.00" on the page
