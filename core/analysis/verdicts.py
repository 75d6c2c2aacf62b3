"""Verdicts: the verdict words and the rule that gives them (one place), each ablation's comparisons with their
verdicts (primary comparisons at a corrected level), the ablation's verdict in words naming its regimes, and whether
validation loss turned up in each regime."""
from __future__ import annotations

from dataclasses import dataclass

from core.analysis.compare import compare
from core.run.record import RunRecord
from core.study.ablation import Ablation

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


@dataclass(frozen=True)
class Word:
    """A verdict as the summaries, README and report write and colour it."""
    word: str
    css: str  # the report's class for it
    colour: str  # its colour in figures
    meaning: str


WORDS = (  # in the order the report lists them
    Word(REPRODUCED, "v-yes", "#2e7d32", "the interval excludes 0 in the expected direction and the effect is at "
                                         "least min_effect"),
    Word(NOT_REPRODUCED, "v-no", "#607d8b", "the whole interval lies below min_effect"),
    Word(INCONCLUSIVE, "v-maybe", "#e0a800", "neither: the interval reaches min_effect but does not exclude 0, or "
                                             "the effect is smaller than min_effect though its interval excludes 0"),
)
BY_WORD = {w.word: w for w in WORDS}
PRECEDENCE = (REPRODUCED, INCONCLUSIVE, NOT_REPRODUCED)  # an ablation's verdict: the first its primaries give


def judge(cmp: dict, expected: str, min_effect: float) -> str:
    """The rule: the effect in the symptom's expected direction against min_effect, from compare()'s interval."""
    if cmp["diff"] is None:
        return INCONCLUSIVE
    sign = 1.0 if expected == "increase" else -1.0
    effect = sign * cmp["diff"]
    e_low, e_high = min(sign * cmp["low"], sign * cmp["high"]), max(sign * cmp["low"], sign * cmp["high"])
    if e_low > 0 and effect >= min_effect:
        return REPRODUCED
    if e_high < min_effect:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def judged(control: list[dict], treatment: list[dict], metric: str, expected: str | None, min_effect: float,
           level: float = 0.95) -> dict:
    """compare() with the verdict (None for a secondary metric, expected None: a difference and its interval only),
    as verdicts.json stores each comparison."""
    cmp = compare(control, treatment, metric, level)
    verdict = judge(cmp, expected, min_effect) if expected else None
    head = {"metric": metric, "expected": expected, "min_effect": min_effect}
    numbers = {k: v for k, v in cmp.items() if k not in ("metric", "diff", "low", "high", "method", "reason")}
    return {**head, **numbers, "verdict": verdict, "diff": cmp["diff"], "low": cmp["low"], "high": cmp["high"],
            "method": cmp["method"], "reason": cmp["reason"]}


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
                    m: dict(judged(runs[ab.control], runs[arm], m, ab.expected if m == ab.signature else None,
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
    for wanted in PRECEDENCE:
        for regime, verdict in found:
            if verdict == wanted:
                return verdict, regime
    return INCONCLUSIVE, ""


def statement(ab: Ablation, per_regime: dict) -> str:
    """The verdict in words, naming the regimes of the primary comparisons: "reproduced under: original_budget",
    "not reproduced under: baseline, overfit, varied" ..."""
    by_verdict: dict[str, list[str]] = {}
    for regime, arm in ab.primary_comparisons():
        verdict = per_regime.get(regime, {}).get(arm, {}).get(ab.signature, {}).get("verdict") or INCONCLUSIVE
        label = regime if len(ab.arms) == 2 else f"{regime}/{arm}"
        by_verdict.setdefault(verdict, []).append(label)
    return "; ".join(f"{v} under: {', '.join(by_verdict[v])}" for v in PRECEDENCE if v in by_verdict)


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
