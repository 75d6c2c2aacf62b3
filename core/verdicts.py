"""Each ablation's verdict from its comparisons: primary comparisons at a corrected level, the verdict
in words naming its regimes, and whether validation loss turned up in each regime."""
from __future__ import annotations

from .ablation import Ablation
from .record import RunRecord
from .results import compare


def verdicts(ablations: list[Ablation], plan: list[dict], records: dict[str, RunRecord]) -> dict:
    out = {}
    for ab in ablations:
        rows = [r for r in plan if r["ablation"] == ab.name]
        primary = ab.primary_comparisons()
        per_regime = {}
        for regime in ab.regimes:
            runs = {arm: [records[r["key"]].to_json() for r in rows if r["regime"] == regime and r["arm"] == arm
                          and r["key"] in records] for arm in ab.arms}
            per_regime[regime] = {}
            for arm in ab.arms:
                if arm == ab.control:
                    continue
                is_primary = (regime, arm) in primary
                per_regime[regime][arm] = {
                    m: dict(compare(runs[ab.control], runs[arm], m, ab.expected if m == ab.signature else None,
                                    ab.min_effect, ab.primary_level() if is_primary and m == ab.signature else 0.95),
                            primary=is_primary and m == ab.signature)
                    for m in [ab.signature, *ab.secondary_metrics]}
        out[ab.name] = per_regime
    return out


def overall(ab: Ablation, per_regime: dict) -> tuple[str, str]:
    """The ablation's verdict from its primary comparisons only: reproduced in one of them > inconclusive >
    not reproduced (in all of them). Other comparisons are exploratory and decide nothing."""
    found = [(regime, per_regime[regime][arm][ab.signature]["verdict"]) for regime, arm in ab.primary_comparisons()
             if arm in per_regime.get(regime, {})]
    for wanted in ("reproduced", "inconclusive", "not reproduced"):
        for regime, verdict in found:
            if verdict == wanted:
                return verdict, regime
    return "inconclusive", ""


def statement(ab: Ablation, per_regime: dict) -> str:
    """The verdict in words, naming the regimes of the primary comparisons: "reproduced under: original_budget",
    "not reproduced under: baseline, overfit, varied" ..."""
    by_verdict: dict[str, list[str]] = {}
    for regime, arm in ab.primary_comparisons():
        verdict = per_regime.get(regime, {}).get(arm, {}).get(ab.signature, {}).get("verdict") or "inconclusive"
        label = regime if len(ab.arms) == 2 else f"{regime}/{arm}"
        by_verdict.setdefault(verdict, []).append(label)
    return "; ".join(f"{v} under: {', '.join(by_verdict[v])}" for v in ("reproduced", "inconclusive", "not reproduced")
                     if v in by_verdict)


def validation_turns(rows: list[dict], records: dict[str, RunRecord]) -> dict[str, list[dict]]:
    """Per regime and seed, for runs that trained: the epoch of the lowest validation loss against the last
    epoch. Validation loss "turns up" (overfitting can show) when the minimum comes before the end."""
    out: dict[str, list[dict]] = {}
    seen = set()
    for r in rows:
        rec = records.get(r["key"])
        history = rec.history if rec is not None else []
        val = [h for h in history if h["split"] == "validation"]
        training = (r["regime"], r["seed"], tuple(h["loss"] for h in val))  # arms differing only in selection
        if not val or training in seen:
            continue
        seen.add(training)
        best = min(val, key=lambda h: h["loss"])
        out.setdefault(r["regime"], []).append({
            "seed": r["seed"], "arm": r["arm"], "best_epoch": best["epoch"], "last_epoch": val[-1]["epoch"],
            "min_loss": best["loss"], "last_loss": val[-1]["loss"], "turned_up": best["epoch"] < val[-1]["epoch"]})
    return out
