"""Arms compared: an arm's mean with its interval, and a treated arm against its control, paired by seed and by
evaluation item; the interval treats seeds and items as crossed random effects (core/analysis/stats.py), so it
carries training noise and the finite probe set; a fact's questions count as one draw (metrics.cluster_of)."""
from __future__ import annotations

from scipy.stats import t as student_t

from core.analysis import stats
from core.run import metrics


def metric_items(record: dict, metric: str) -> dict[str, float]:
    """Per-item values behind a metric, keyed so that two runs' items pair up."""
    return metrics.item_values(record.get("samples") or [], metric, record["config"]["eval_prompt"])


def item_matrix(records: dict[int, dict], metric: str, seeds: list[int], also: list[dict] = ()):
    """(seeds x items) matrix of a metric's per-item values, on the items every listed run scored (and
    every run of `also`, the other arm of a paired comparison, scored too)."""
    import numpy as np

    per_seed = {sd: metric_items(records[sd], metric) for sd in seeds}
    sets = [set(v) for v in per_seed.values()] + [set(metric_items(r, metric)) for r in also]
    items = sorted(set.intersection(*sets)) if sets else []
    return np.array([[per_seed[sd][k] for k in items] for sd in seeds], dtype=float), items


def arm_summary(records: list[dict], metric: str, level: float = 0.95) -> dict:
    """Mean of an arm over its finished seeds, with a per-seed list and an interval (inside [0, 1] for a fraction)."""
    by_seed = {r["config"]["seed"]: r for r in records if r.get("status") == "ok"
               and (r.get("metrics") or {}).get(metric) is not None}
    seeds = sorted(by_seed)
    out = {"mean": None, "low": None, "high": None, "per_seed": {sd: by_seed[sd]["metrics"][metric] for sd in seeds},
           "n": len(seeds)}
    if not seeds:
        return out
    matrix, items = item_matrix(by_seed, metric, seeds)
    if len(items) < 2:
        return dict(out, mean=sum(out["per_seed"].values()) / len(seeds))
    iv = stats.arm_interval(matrix, level, fraction=metrics.get(metric).is_fraction,
                            clusters=[metrics.cluster_of(k) for k in items])
    return dict(out, mean=iv.estimate, low=iv.low, high=iv.high, method=iv.method)


def _answers(record: dict) -> list:
    return [(s["set"], s["id"], s["question"], s["answer"]) for s in record.get("samples") or [] if "answer" in s]


def compare(control: list[dict], treatment: list[dict], metric: str, level: float = 0.95) -> dict:
    """Treatment minus control on `metric`, each a list of run records paired by seed and by evaluation item, with an
    interval at `level` (above 0.95 for a primary comparison that shares its ablation's 5% error) over seeds and
    items as crossed random effects (core/analysis/stats.py). The numbers only: core/analysis/verdicts.py judges
    them. identical: the arms gave the same answers to everything in every seed (the same model); control: the
control's mean on the paired items. diff, low, high are None (and `reason` says why) where nothing can be compared."""
    by_seed_c = {r["config"]["seed"]: r for r in control if r.get("status") == "ok"}
    by_seed_t = {r["config"]["seed"]: r for r in treatment if r.get("status") == "ok"}
    seeds = sorted(set(by_seed_c) & set(by_seed_t))
    out = {"metric": metric, "seeds": seeds, "level": level, "per_seed": {}, "mde": None}
    undecided = dict(diff=None, low=None, high=None, method=None)
    if not seeds:
        return dict(out, **undecided, reason="no seed with both arms finished")
    if any(r["metrics"].get(metric) is None for r in [*by_seed_c.values(), *by_seed_t.values()]
           if r["config"]["seed"] in seeds):
        return dict(out, **undecided, reason=f"{metric} undefined for an arm")
    c, items = item_matrix(by_seed_c, metric, seeds, [by_seed_t[sd] for sd in seeds])
    t, _ = item_matrix(by_seed_t, metric, seeds, [by_seed_c[sd] for sd in seeds])
    # each seed's (control, treatment) on the items both arms scored: the effect is the mean of their differences.
    # Where the arms score different item sets (retention against each arm's own untrained reference) these are not
    # the arms' own metric values
    out["items"] = len(items)
    out["identical"] = all(_answers(by_seed_c[sd]) and _answers(by_seed_c[sd]) == _answers(by_seed_t[sd])
                           for sd in seeds)
    out["control"] = float(c.mean()) if items else None
    out["per_seed"] = {sd: [float(c[i].mean()), float(t[i].mean())] if items
                       else [by_seed_c[sd]["metrics"][metric], by_seed_t[sd]["metrics"][metric]]
                       for i, sd in enumerate(seeds)}
    if len(items) < 2:
        return dict(out, **undecided, reason="fewer than 2 paired items")
    iv = stats.effect_interval(t - c, level, span=metrics.get(metric).span,
                               clusters=[metrics.cluster_of(k) for k in items])
    out["mde"] = stats.minimum_detectable_effect(iv, level)
    return dict(out, diff=iv.estimate, low=iv.low, high=iv.high, se=iv.se, df=iv.df, method=iv.method, reason="")


def matched(control_curve: dict[str, list[dict]], treated_curve: dict[str, list[dict]], by: str, metric: str,
            level: float = 0.95) -> dict:
    """Two curves compared where they reach the same `by` (e.g. retention of full fine-tuning and of LoRA at equal
    recall, each method at several learning rates), in compare()'s form. The target is the highest `by` both
    curves reach (the lower of their best arm means); each seed reads `metric` on each curve at that `by`, linearly
    between the arms around it (at the nearest end outside them), and the effect is the mean over seeds of
    treated minus control, with a t interval over seeds (items are not paired across interpolated points)."""
    import numpy as np

    def points(curve):  # {seed: [(by, metric)]}, {arm: mean by}
        per_seed, means = {}, {}
        for arm, runs in curve.items():
            ok = [r for r in runs if r.get("status") == "ok" and (r.get("metrics") or {}).get(by) is not None
                  and r["metrics"].get(metric) is not None]
            for r in ok:
                per_seed.setdefault(r["config"]["seed"], []).append((r["metrics"][by], r["metrics"][metric]))
            if ok:
                means[arm] = sum(r["metrics"][by] for r in ok) / len(ok)
        return per_seed, means

    (c_seed, c_mean), (t_seed, t_mean) = points(control_curve), points(treated_curve)
    seeds = sorted(sd for sd in set(c_seed) & set(t_seed)
                   if len(c_seed[sd]) == len(control_curve) and len(t_seed[sd]) == len(treated_curve))
    out = {"metric": metric, "seeds": seeds, "level": level, "per_seed": {}, "mde": None, "items": None,
           "identical": False, "control": None}
    undecided = dict(diff=None, low=None, high=None, se=None, df=None, method=None)
    if len(seeds) < 2:
        return dict(out, **undecided, reason="fewer than 2 seeds with every arm of both curves finished")
    target = min(max(c_mean.values()), max(t_mean.values()))

    def at(pts):  # arms that tie on `by` (several rates at the same recall) count as their mean, not the last
        tied: dict[float, list[float]] = {}
        for x, y in pts:
            tied.setdefault(x, []).append(y)
        xs = sorted(tied)
        return float(np.interp(target, xs, [sum(tied[x]) / len(tied[x]) for x in xs]))

    pairs = {sd: [at(c_seed[sd]), at(t_seed[sd])] for sd in seeds}
    d = np.array([t - c for c, t in pairs.values()])
    se = float(d.std(ddof=1) / np.sqrt(len(d)))
    half = float(student_t.ppf(0.5 + level / 2, len(d) - 1)) * se
    span = metrics.get(metric).span
    low, high = float(d.mean() - half), float(d.mean() + half)
    if span is not None:
        low, high = max(-span, low), min(span, high)
    return dict(out, per_seed=pairs, control=float(np.mean([c for c, _ in pairs.values()])), diff=float(d.mean()),
                low=low, high=high, se=se, df=float(len(d) - 1),
                mde=float((student_t.ppf(0.5 + level / 2, len(d) - 1) + student_t.ppf(0.8, len(d) - 1)) * se),
                method=f"{metric} at {by} = {target:.3f} (the highest both curves reach), interpolated per seed; "
                       f"t-interval over {len(d)} seeds", reason="")
