"""Intervals for bounded, few-seed data: seeds and evaluation items as crossed random effects.

A metric is a mean of per-item scores (mostly in [0, 1]) over a run's evaluation items; every seed of an arm
answers the same items. A (seeds x items) matrix of scores (one arm) or of paired treatment-minus-
control differences (an effect) therefore has two sources of noise: training (seeds) and the finite
probe set (items). Its mean's variance is estimated from the two-way ANOVA mean squares (method of
moments: sigma_seed^2/S + sigma_item^2/N + sigma_residual^2/(SN)), with Satterthwaite's degrees of
freedom for the t quantile. A bootstrap over 3-5 seeds is too narrow and a nested seed-then-item
bootstrap counts the item noise twice; tests/test_stats.py checks this interval's coverage on
simulated studies instead. Items are nested in facts (a fact's two test questions are not independent
draws): the matrix is first reduced to one column per fact, the mean of its items (cluster_means), so the item
variance is the facts' and the interval holds when questions of one fact move together (tests/test_stats.py
simulates that too). Per-arm intervals of fractions are Wilson score intervals on the effective sample
size, so they stay inside [0, 1]; effect intervals are clipped to the widest difference the metric's range allows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import t


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    se: float  # standard error of the estimate
    df: float  # degrees of freedom of the t quantile
    seeds: int
    items: int
    method: str


def cluster_means(matrix: np.ndarray, clusters: list[str]) -> np.ndarray:
    """The (seeds x items) matrix with each cluster's items (a fact's questions) replaced by their mean: seeds x
    clusters, in the order the clusters first appear."""
    order = list(dict.fromkeys(clusters))
    index = np.array([order.index(c) for c in clusters])
    return np.stack([matrix[:, index == i].mean(axis=1) for i in range(len(order))], axis=1)


def mean_squares(matrix: np.ndarray) -> tuple[float, float, float]:
    """The two-way ANOVA mean squares (seeds, items, residual) of a seeds x items matrix with >= 2 of each."""
    s, n = matrix.shape
    m, row, col = matrix.mean(), matrix.mean(axis=1), matrix.mean(axis=0)
    ms_seed = n * ((row - m) ** 2).sum() / (s - 1)
    ms_item = s * ((col - m) ** 2).sum() / (n - 1)
    ms_res = ((matrix - row[:, None] - col[None, :] + m) ** 2).sum() / ((s - 1) * (n - 1))
    return float(ms_seed), float(ms_item), float(ms_res)


def _variance_of_mean(matrix: np.ndarray) -> tuple[float, float]:
    """(variance of the grand mean, Satterthwaite degrees of freedom) for a seeds x items matrix."""
    s, n = matrix.shape
    if n < 2:
        raise ValueError("an interval needs at least 2 evaluation items")
    if s == 1:  # one seed: items only (training noise not covered)
        col = matrix.mean(axis=0)
        return s * ((col - matrix.mean()) ** 2).sum() / (n - 1) / n, n - 1
    ms_seed, ms_item, ms_res = mean_squares(matrix)
    combined = max(ms_seed + ms_item - ms_res, ms_seed, 0.0)
    denom = ms_seed ** 2 / (s - 1) + ms_item ** 2 / (n - 1) + ms_res ** 2 / ((s - 1) * (n - 1))
    df = combined ** 2 / denom if denom > 0 else s - 1
    return combined / (s * n), max(df, 1.0)


def _describe(s: int, n: int, items: int | None = None) -> str:
    what = f"{n} items" if items in (None, n) else f"{items} items in {n} facts/probes"
    if s == 1:
        return f"t-interval over {what} (1 seed: training noise not covered)"
    return f"seeds x items random effects ({s} seeds, {what}), t-interval"


def _clustered(matrix, clusters: list[str] | None) -> tuple[np.ndarray, int]:
    x = np.asarray(matrix, dtype=float)
    return (x if clusters is None else cluster_means(x, clusters)), x.shape[1]


def effect_interval(differences, level: float = 0.95, span: float | None = 1.0,
                    clusters: list[str] | None = None) -> Interval:
    """Interval for the mean of paired treatment-minus-control differences (seeds x items), clipped to
    [-span, span] (the widest difference the metric's range allows; None: not clipped). clusters: each item's
    fact (or probe), whose items are averaged first (cluster_means); the estimate is then the mean over facts."""
    d, items = _clustered(differences, clusters)
    var, df = _variance_of_mean(d)
    est, se = float(d.mean()), math.sqrt(var)
    half = float(t.ppf(0.5 + level / 2, df)) * se
    low, high = est - half, est + half
    if span is not None:
        low, high = max(-span, low), min(span, high)
    return Interval(est, float(low), float(high), se, float(df), *d.shape, _describe(*d.shape, items))


def arm_interval(scores, level: float = 0.95, fraction: bool = True, clusters: list[str] | None = None) -> Interval:
    """Interval for one arm's mean score (seeds x items). For a fraction (values in [0, 1]): a Wilson score
    interval on the effective sample size p(1-p)/variance, which carries the seed and item variance into an
    interval that stays inside [0, 1] and stays sensible at 0 and 1. For any other metric: the mean plus or minus
    t times the same standard error. clusters: as for effect_interval."""
    x, items = _clustered(scores, clusters)
    s, n = x.shape
    var, df = _variance_of_mean(x)
    p = float(x.mean())
    if not fraction:
        half = float(t.ppf(0.5 + level / 2, df)) * math.sqrt(var)
        return Interval(p, p - half, p + half, math.sqrt(var), float(df), s, n, _describe(s, n, items))
    n_eff = min(p * (1 - p) / var, s * n) if var > 0 else s * n
    z = float(t.ppf(0.5 + level / 2, df))
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z / (1 + z * z / n_eff) * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff))
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return Interval(p, float(min(low, p)), float(max(high, p)), math.sqrt(var), float(df), s, n,
                    _describe(s, n, items))


def minimum_detectable_effect(interval: Interval, level: float = 0.95, power: float = 0.8) -> float | None:
    """The smallest true effect the design detects with `power` at `level`, given the observed seed and
    item variance: (t quantile for the test + t quantile for the power) x the effect's standard error."""
    if not interval.se:
        return None
    return float((t.ppf(0.5 + level / 2, interval.df) + t.ppf(power, interval.df)) * interval.se)
