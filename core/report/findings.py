"""The answer at the top of the report, generated from verdicts.json and the stored runs (never written by hand):
what reproduced and under which regimes, what did not, the fixes ranked by their signature effect, and what
learning the facts costs (core/report/frontier.py).
"""
from __future__ import annotations

from core.analysis.verdicts import PRECEDENCE, AblationVerdict, Comparison
from core.report.data import (
    CUED_METRICS,
    NOT_YET,
    ablation_verdict,
    cued,
    effect_text,
    means_text,
    oriented,
    primary_comparisons,
    seed_pairs,
    status,
    verdict_class,
)
from core.report.frontier import arm_stats, forgetting, goal, goals_by_measure, prices
from core.study.ablation import ROLE_NAMES, ROLES, discover
from core.study.store import PlanRow

VERDICTS = PRECEDENCE


def seed_differences(rows: list[PlanRow], runs: dict, regime: str, arm: str, control: str, metric: str) -> list[float]:
    """Treatment minus control on `metric`, one value per seed both arms finished (from the stored runs, for
    verdicts.json files that predate per-seed values)."""
    def values(which: str) -> dict[int, float]:
        return {r["seed"]: rec.metrics.get(metric) for r in rows if r["regime"] == regime and r["arm"] == which
                and status(rec := runs.get(r["key"])) == "ok" and rec.metrics.get(metric) is not None}
    c, t = values(control), values(arm)
    return [t[sd] - c[sd] for sd in sorted(set(c) & set(t))]


def forest_rows(metas: dict, verdicts: dict, rows: list[PlanRow], runs: dict) -> list[dict]:
    """One row per deciding comparison (ablation x regime x arm) with its signature effect, interval and the
    paired difference of each seed."""
    out = []
    for name, ab in metas.items():
        own = [r for r in rows if r["ablation"] == name]
        verdict = verdicts.get(name) or AblationVerdict()
        pairs, declared = primary_comparisons(ab, verdict)
        several_arms = len(ab["arms"]) > 2
        for regime, arm in pairs:
            cmp = (verdict.comparison(regime, arm, ab["signature"])
                   or Comparison(ab["signature"], min_effect=ab.get("min_effect", 0.1)))
            where = regime + (f" / {arm}" if several_arms else "")
            label = name + (f" / {regime}" if len(ab.get("regimes") or {}) > 1 else "") + \
                (f" / {arm}" if several_arms else "")
            out.append({"ablation": name, "role": ab.get("role") or "lever", "regime": regime, "arm": arm, "label": label,
                        "where": where,
                        "metric": ab["signature"],
                        "expected": ab.get("expected"), "min_effect": cmp.min_effect,
                        "diff": cmp.diff, "low": cmp.low, "high": cmp.high,
                        # nothing measured yet (no stored comparison, or no seed with both arms finished): no
                        # verdict, rather than an "inconclusive" that reads as measured
                        "level": cmp.level, "verdict": cmp.measured_verdict,
                        "class": verdict_class(cmp.measured_verdict),
                        "mde": cmp.mde, "reason": cmp.reason or "", "declared": declared,
                        "seeds": len(cmp.seeds),  # of the plan's (a run_all --seeds N plans N)
                        "planned_seeds": len({r["seed"] for r in own if r["regime"] == regime and r["arm"] == arm}),
                        "per_seed": [t - c for c, t in seed_pairs(cmp)] if cmp.per_seed
                        else seed_differences(own, runs, regime, arm, ab["control"], ab["signature"]),
                        "oriented": oriented(cmp, ab.get("expected")), "effect": effect_text(cmp),
                        "means": means_text(cmp)})
    return out


# an ablation verdicts.json does not cover: the study computes verdicts once, when it completes (tools/study.sh runs
# with --no-report), so mid-study a finished seed is not yet a measured comparison
NOT_COMPUTED = "not computed yet"


def _where(rows: list[dict], verdict: str | None) -> list[str]:
    return [r["where"] for r in rows if r["verdict"] == verdict]


def so_far(seeds: int, planned: int) -> str | None:
    """"on k of n seeds so far" where a measured effect rests on fewer seeds than the plan runs (a provisional look
    mid-study; a `run_all --seeds N` plans N), else None."""
    return f"on {seeds} of {planned} seeds so far" if 0 < seeds < planned else None


def against(rows: list[dict]) -> list[dict]:
    """Deciding comparisons whose interval excludes 0 on the side opposite to the symptom: the fix's absence
    helped. A verdict of "not reproduced" says the symptom did not come back; these say what came instead."""
    out = []
    for r in rows:
        if r["low"] is None or r["high"] is None or r["expected"] not in ("increase", "decrease"):
            continue
        if (r["high"] < 0) if r["expected"] == "increase" else (r["low"] > 0):
            out.append({"where": r["where"], "effect": r["effect"], "means": r["means"]})
    return out


def side_effects(ab: dict, verdict: AblationVerdict, rows: list[dict], prompted: set = frozenset(), limit: int = 3
                 ) -> list[dict]:
    """The largest effects on the other measured metrics in the deciding comparisons: interval clear of 0 and
    at least min_effect in size, largest first, at most `limit` (the rest counted). Exploratory: each at 95%,
    not corrected for how many there are. `prompted`: the (regime, arm) whose system prompt names the person
    (report_data.cued); an effect on a metric that prompt gives away is flagged as cued."""
    found = []
    for r in rows:
        for metric, cmp in verdict.comparisons.get(r["regime"], {}).get(r["arm"], {}).items():
            if metric == ab["signature"] or cmp.diff is None or cmp.low is None:
                continue
            if (cmp.low > 0 or cmp.high < 0) and abs(cmp.diff) >= cmp.min_effect:
                found.append({"metric": metric, "where": r["where"], "effect": effect_text(cmp),
                              "means": means_text(cmp), "size": abs(cmp.diff),
                              "cued": metric.split("@")[0] in CUED_METRICS and bool(
                                  {(r["regime"], r["arm"]), (r["regime"], ab["control"])} & prompted)})
    found.sort(key=lambda e: -e["size"])
    return found[:limit] + ([{"more": len(found) - limit}] if len(found) > limit else [])


def outcomes(metas: dict, verdicts: dict, forest: list[dict], prompted: dict | None = None) -> dict[str, list[dict]]:
    """The ablations grouped by verdict, each naming the regimes (or regime/arm) behind every verdict it got, the
    deciding comparisons that went against the symptom, and the largest effects on its other metrics."""
    out: dict[str, list[dict]] = {v: [] for v in (*VERDICTS, "no verdict")}
    for name, ab in metas.items():
        rows = [r for r in forest if r["ablation"] == name]
        stored = verdicts.get(name) or AblationVerdict()
        verdict = ablation_verdict(ab, stored)
        decisive = max((r for r in rows if r["verdict"] == verdict and r["oriented"] is not None),
                       key=lambda r: r["oriented"], default=None)
        out[verdict if verdict in VERDICTS else "no verdict"].append({
            "name": name, "title": ab.get("title", name), "metric": ab["signature"], "expected": ab.get("expected"),
            "where": {v or (NOT_YET if name in verdicts else NOT_COMPUTED): _where(rows, v)
                      for v in (*VERDICTS, None) if _where(rows, v)},
            "effect": decisive["effect"] if decisive else None,
            "means": decisive["means"] if decisive else None, "mde": decisive["mde"] if decisive else None,
            # the comparison the effect is from, named where the verdict rests on several
            "effect_where": decisive["where"] if decisive and len(_where(rows, verdict)) > 1 else None,
            "against": against(rows),
            "side_effects": side_effects(ab, stored, rows, (prompted or {}).get(name, set())),
            "from_original": [{"start": ab.get("original") or "", "where": where, "metric": c.metric,
                               "effect": effect_text(c), "means": means_text(c)}
                              for where, c in stored.from_original.items()
                              if c.diff is not None],
            "measured_seeds": max((r["seeds"] for r in rows), default=0),  # the most any deciding comparison had
            "so_far": so_far(min((r["seeds"] for r in rows if r["verdict"]), default=0),
                             max((r["planned_seeds"] for r in rows if r["verdict"]), default=0)),
            "reference": ab.get("kind") == "reference", "confounded": bool(ab.get("confounded"))})
    return out


ROLE_HEADINGS = {role: name + (", in its order" if role == "step" else ", ranked among themselves by effect")
                 for role, name in ROLE_NAMES.items()}
# a remedy the original never tried "works" or "does not help"; it does not "reproduce" anything
REMEDY_WORDS = {"reproduced": "works", "not reproduced": "does not help", "the other way": "hurts"}


def with_labels(metas: dict) -> dict:
    """The stored definitions, each with its `role` (ROLES) and `short` name. Results stored before those existed
    take the role from the current definitions (read once), and the short name too where the design (arms,
    regimes) is the same; else "lever" and the title."""
    defined = discover() if any("role" not in ab or "short" not in ab for ab in metas.values()) else {}
    out = {}
    for name, ab in metas.items():
        d = defined.get(name)
        role = ab.get("role") or (d.role if d is not None else "lever")
        short = ab.get("short") or (d.short if d is not None and d.short and d.same_design(ab) else "") \
            or ab.get("title", name)
        out[name] = dict(ab, role=role, short=short)
    return out


def shown_word(role: str, verdict: str) -> str:
    """The verdict word a reader sees for an ablation of `role`."""
    return REMEDY_WORDS.get(verdict, verdict) if role == "remedy" else verdict


def from_original_text(f: dict) -> str:
    """"; from the original's setting (constant/lr_2e-4) to warmup_cosine/lr_1e-3 (exploratory, 95%): `recall_mc`
    0.55 → 0.82, +0.27 [+0.20, +0.34]": where a user starting from the original's setting ends up
    (AblationVerdict.from_original); both settings are named, so what else differs (a schedule) is in view."""
    start = f" ({f['start']})" if f["start"] else ""
    means = f" {f['means'].replace('->', '→')}," if f["means"] else ""
    return f"; from the original's setting{start} to {f['where']} (exploratory, 95%): `{f['metric']}`{means} {f['effect']}"


def answer(metas: dict, outcomes_by_verdict: dict, ranked: list[dict]) -> list[dict]:
    """The answer on the report's first screen and in the README's headline, one generated sentence per ablation:
    [{role, heading, rows: [{name, short, verdict, word, sentence ...}]}]; the steps in the original's order,
    levers and remedies each ranked by their own signature effect (ranking), never against each other."""
    found = {o["name"]: (v, o) for v, items in outcomes_by_verdict.items() for o in items}
    order = {b["name"]: i for i, b in enumerate(ranked)}
    out: dict[str, list[dict]] = {role: [] for role in ROLE_HEADINGS}
    for name, ab in with_labels(metas).items():
        verdict, o = found[name]
        role = ab["role"]
        word = shown_word(role, verdict)
        if verdict in VERDICTS:
            where = "; ".join(f"{shown_word(role, v)} under {', '.join(r)}" for v, r in o["where"].items()
                              if v in VERDICTS)
            measured = (f"`{o['metric']}` {o['means'].replace('->', '→')}, " if o["means"] else f"`{o['metric']}` "
                        ) + (o["effect"] or "no effect measured") if o["effect"] else f"`{o['metric']}`"
            sentence = f"{where}; " + (f"the largest effect, in {o['effect_where']}: " if o["effect_where"] else "") \
                + measured + "".join(from_original_text(f) for f in o["from_original"])
        else:
            sentence = ""  # no verdict yet: the verdict word says all there is
        out[role].append({"name": name, "short": ab["short"], "verdict": verdict,
                          "word": word, "class": verdict_class(verdict), "sentence": sentence,
                          "confounded": bool(ab.get("confounded")), "reference": ab.get("kind") == "reference",
                          "so_far": o["so_far"]})
    for role in ("lever", "remedy"):  # references (several fields at once) after the single factors
        out[role].sort(key=lambda a: (a["reference"], order.get(a["name"], len(order))))
    return [{"role": role, "heading": heading, "rows": out[role]} for role, heading in ROLE_HEADINGS.items()
            if out[role]]


def ranking(metas: dict, forest: list[dict]) -> list[dict]:
    """Each ablation's largest signature effect in the symptom's direction, largest first: how much each fix
    matters. Ablations without a measured effect come last; references (`kind: reference`, several fields changed
    at once) are flagged, for listing apart: their effect belongs to no single fix."""
    best = []
    for name, ab in metas.items():
        rows = [r for r in forest if r["ablation"] == name and r["oriented"] is not None]
        top = max(rows, key=lambda r: r["oriented"], default=None)
        best.append({"name": name, "title": ab.get("title", name), "metric": ab["signature"],
                     "role": ab.get("role") or "lever",
                     "expected": ab.get("expected"), "row": top, "reference": ab.get("kind") == "reference",
                     "size": top["oriented"] if top else None, "against": against(rows),
                     "confounded": bool(ab.get("confounded")),
                     "so_far": so_far(top["seeds"], top["planned_seeds"]) if top else None})
    return sorted(best, key=lambda b: (b["size"] is None, -(b["size"] or 0.0)))


RANK_HEADINGS = {**ROLE_NAMES, "reference": "References (several fields changed at once, so not ranked as one fix)"}


def ranked_by_role(ranked: list[dict]) -> list[dict]:
    """The ranking split as the first screen splits the answer: steps, levers and remedies each ranked only among
    themselves (a bug's effect is no measure of a lever's), then the references: [{role, heading, rows}]."""
    parts = {role: [b for b in ranked if not b["reference"] and b["role"] == role] for role in ROLES}
    parts["reference"] = [b for b in ranked if b["reference"]]
    return [{"role": role, "heading": RANK_HEADINGS[role], "rows": rows} for role, rows in parts.items() if rows]


def study_wide(verdicts: dict) -> dict | None:
    """Holm's correction across every primary comparison of the study (verdicts.holm_across, stored as each
    comparison's `holm`): the family's size and the comparisons whose effect holds there; None for verdicts
    stored before it existed."""
    family = [(name, regime, arm, c) for name, v in verdicts.items() for regime, arm, c in v.primaries()
              if c.holm is not None]
    if not family:
        return None
    return {"family": len(family), "held": [f"{name} / {regime} / {arm}" for name, regime, arm, c in family
                                            if c.holm]}


def findings(metas: dict, verdicts: dict, rows: list[PlanRow], runs: dict) -> dict:
    metas = with_labels(metas)
    forest = forest_rows(metas, verdicts, rows, runs)
    arms = arm_stats(metas, rows, runs)
    levels = sorted({r["level"] for r in forest if r["level"]})
    prompted = {name: {(c["regime"], c["arm"]) for c in cued([r for r in rows if r["ablation"] == name], runs)}
                for name in metas}
    grouped, ranked = outcomes(metas, verdicts, forest, prompted), ranking(metas, forest)
    return {"forest": forest, "outcomes": grouped, "ranking": ranked, "answer": answer(metas, grouped, ranked),
            "ranked_by_role": ranked_by_role(ranked),
            "forgetting": forgetting(metas, rows, runs, arms), "goal": goal(arms), "levels": levels,
            "goals_by_measure": goals_by_measure(arms),
            "prices": prices(rows, runs), "study_wide": study_wide(verdicts),
            "declared": all(r["declared"] for r in forest), "ablations": len(metas),
            "min_effects": sorted({str(ab["min_effect"]) for ab in metas.values() if ab.get("min_effect") is not None})}
