"""What learning the facts costs, from the stored runs: the forgetting price (retention of the trained arms against
the untrained model), how close any trained arm comes to the study's target (retention >= 0.9 at held-out recall
>= 0.9, also read with the other retention measures) and its frontier, and the prices of the recipe `hiahia train`
uses. core/report/findings.py puts them beside the verdicts.
"""
from __future__ import annotations

from core.report.data import arm_stat, stat_text, status, trained_nothing
from core.run.config import RunConfig
from core.study.store import PlanRow


def recipe_rows(metas: dict, rows: list[PlanRow]) -> list[dict]:
    """Trained rows run with the baseline recipe itself: an arm and a regime that override nothing."""
    out, keys = [], set()
    for r in rows:
        ab = metas.get(r["ablation"]) or {}
        unchanged = (ab.get("arms") or {}).get(r["arm"]) == {} and \
            (ab.get("regimes") or {"baseline": {}}).get(r["regime"]) == {}
        if unchanged and r["key"] not in keys and r["config"].get("epochs"):
            keys.add(r["key"])
            out.append(r)
    return out


GOAL = 0.9  # the study's target: retention >= 0.9 at heldout_recall >= 0.9


def trained_arms(metas: dict, rows: list[PlanRow], runs: dict | None = None):
    """(label, ablation, rows) for each trained arm (ablation x regime x arm). An arm made of runs another arm
    already holds (the shared baseline recipe, whole or as a sweep's 3-seed subset of it) is listed once, under the
    arm that holds them all; an arm whose finished runs all trained 0 parameters (wrong_layer_path's wrong path) is
    not a trained arm."""
    arms = []
    for name, ab in metas.items():
        for regime in ab.get("regimes") or {"baseline": {}}:
            for arm in ab["arms"]:
                arm_rows = [r for r in rows if r["ablation"] == name and r["regime"] == regime and r["arm"] == arm
                            and r["config"].get("epochs")]
                finished = [runs.get(r["key"]) for r in arm_rows if status((runs or {}).get(r["key"])) == "ok"]
                if arm_rows and not (finished and all(trained_nothing(rec) for rec in finished)):
                    arms.append((f"{name} / {regime} / {arm}", name, arm_rows, frozenset(r["key"] for r in arm_rows)))
    for i, (label, name, arm_rows, keys) in enumerate(arms):
        held = any(keys < other or (keys == other and j < i) for j, (_, _, _, other) in enumerate(arms))
        if not held:
            yield label, name, arm_rows


# the goal read with each other measure of what the model kept: likelihood, and the held-out family no replay
# request touches (generation and likelihood)
OTHER_RETENTION = ("retention_mc", "retention_heldout", "retention_heldout_mc")


def arm_stats(metas: dict, rows: list[PlanRow], runs: dict) -> list[dict]:
    """Each trained arm's retention and held-out recall (arm_stat), computed once for the forgetting price and
    the goal, and its OTHER_RETENTION measures."""
    return [{"label": label, "ablation": name, "retention": arm_stat(arm_rows, runs, "retention"),
             "recall": arm_stat(arm_rows, runs, "heldout_recall"),
             "retention_by": {m: arm_stat(arm_rows, runs, m) for m in OTHER_RETENTION},
             "config": {k: v for k, v in RunConfig.from_dict(arm_rows[0]["config"]).to_dict().items() if k != "seed"}}
            for label, name, arm_rows in trained_arms(metas, rows, runs)]


def goals_by_measure(arms: list[dict]) -> dict[str, dict]:
    """goal() with retention read as each of OTHER_RETENTION in turn: {measure: goal}."""
    return {m: goal([dict(a, retention=a["retention_by"][m]) for a in arms]) for m in OTHER_RETENTION}


def forgetting(metas: dict, rows: list[PlanRow], runs: dict, arms: list[dict]) -> dict:
    """Retention (the share of general-knowledge probes the untrained model answered that the trained one still
    answers; 1 for the untrained model by definition) of the baseline recipe and of the trained arms (arm_stats)."""
    untrained = []
    for key in dict.fromkeys(r["untrained_key"] for r in rows if r.get("untrained_key")):
        rec = runs.get(key)
        if status(rec) == "ok":
            ret = [s for s in rec.samples if s["set"] == "retention"]
            untrained.append({"model": rec.config.get("model", "?"), "format": rec.resolved_format,
                              "raw": rec.metrics.get("retention_raw"), "kept": sum(bool(s.get("kept", s.get("hit")))
                                                                                   for s in ret), "probes": len(ret)})
    recipe = recipe_rows(metas, rows)
    kept = sorted(({"label": a["label"], "ablation": a["ablation"], **a["retention"]}
                   for a in arms if a["retention"]["mean"] is not None), key=lambda a: a["mean"])
    return {"untrained": untrained,
            "recipe": arm_stat(recipe, runs, "retention") if recipe else None,
            "recipe_raw": arm_stat(recipe, runs, "retention_raw") if recipe else None,
            "recipe_runs": sum(status(runs.get(r["key"])) == "ok" for r in recipe),
            "worst": kept[:1], "best": kept[-1:], "arms": len(kept)}


def _against_goal(stat: dict) -> dict:
    """The stat with a third decimal where two would print a mean under the goal as reaching it (0.897 as 0.90)."""
    if stat["mean"] < GOAL <= round(stat["mean"], 2):
        return dict(stat, text=stat_text(stat, digits=3))
    return stat


def goal(arms: list[dict]) -> dict:
    """How close any trained arm (arm_stats) comes to the study's target, on its means over seeds: which arms reach both
    retention and held-out recall >= GOAL, the closest one (smallest shortfall on the worse of the two), and the
    best retention among the arms that learned the facts (recall >= GOAL)."""
    arms = [dict(a, recall=_against_goal(a["recall"]), retention=_against_goal(a["retention"]),
                 shortfall=max(GOAL - a["recall"]["mean"], GOAL - a["retention"]["mean"], 0.0))
            for a in arms if a["recall"]["mean"] is not None and a["retention"]["mean"] is not None]
    arms.sort(key=lambda a: (a["shortfall"], -a["recall"]["mean"] - a["retention"]["mean"]))
    learned = [a for a in arms if a["recall"]["mean"] >= GOAL]
    return {"goal": GOAL, "arms": len(arms), "reached": [a for a in arms if a["shortfall"] == 0.0],
            "closest": arms[0] if arms else None, "learned": len(learned),
            "best_learned": max(learned, key=lambda a: a["retention"]["mean"], default=None),
            "pareto": pareto(arms)}


def pareto(arms: list[dict]) -> list[dict]:
    """The arms no other arm beats on both means (held-out recall and retention, one at least strictly), by
    recall from high to low: the frontier of the trade-off."""
    def beats(b: dict, a: dict) -> bool:
        (br, bk), (ar, ak) = ((x["recall"]["mean"], x["retention"]["mean"]) for x in (b, a))
        return br >= ar and bk >= ak and (br, bk) != (ar, ak)
    return sorted((a for a in arms if not any(beats(b, a) for b in arms)),
                  key=lambda a: (-a["recall"]["mean"], a["label"]))


def recipe_choice(arms: list[dict]) -> dict | None:
    """The arm `hiahia train` adopts once a study is published (a rule fixed before any third-edition verdict): of
    the trained arms (arm_stats) it runs as the study ran them (core/facts/train.runs_as_studied), the one goal()
    puts closest to the target (the smallest shortfall of the worse of recall and retention, then the larger sum).
    The best of many arms' means is optimistic (a few seeds each), so the adopted recipe's own runs are what the
    README quotes for it (prices)."""
    from core.facts.train import runs_as_studied

    return goal([a for a in arms if runs_as_studied(a["config"])])["closest"]


PRICE_METRICS = (("forgetting", "retention", "the share of the general-knowledge probes the untrained model answered "
                  "that it still answers; the rest is forgotten"),
                 ("hallucination", "identity_hallucination", "the share of the identity probes answered with a wrong "
                  "identity or none"),
                 ("intrusion", "intrusion", "the share of the answers to unrelated questions that bring in hiahia or "
                  "a fact's words"))


def prices(rows: list[PlanRow], runs: dict) -> dict:
    """What the recipe `hiahia train` uses (core/facts/train.RECIPE; format auto reads as the chat model's chat)
    buys and costs, from the study's runs of exactly that config: {runs, recall: stat, prices: [{name, metric,
    meaning, stat}]}."""
    from core.facts.train import RECIPE, is_recipe

    mine = list({r["key"]: r for r in rows if is_recipe(r["config"])}.values())
    return {"runs": sum(status(runs.get(r["key"])) == "ok" for r in mine), "replay": RECIPE.replay,
            "recall": arm_stat(mine, runs, "heldout_recall") if mine else None,
            "prices": [{"name": n, "metric": m, "meaning": meaning, "stat": arm_stat(mine, runs, m)}
                       for n, m, meaning in PRICE_METRICS] if mine else []}
