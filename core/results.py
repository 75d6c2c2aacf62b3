"""Stored runs (one JSON per config key, written atomically), the tidy CSV, and per-ablation verdicts.

A verdict compares the signature metric between two arms, paired by seed: with >= 2 seeds a
t-interval over the seed differences; with 1 seed a paired bootstrap over evaluation items.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from . import metrics, stats

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def write_json_atomic(path: Path, obj) -> None:
    """Write via a temporary file in the same folder and rename: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_path(root: Path, key: str) -> Path:
    return root / "runs" / f"{key}.json"


def load_run(root: Path, key: str) -> dict | None:
    p = run_path(root, key)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:  # cannot happen with atomic writes; treated as not run (it will be rewritten)
        return None


def metric_items(record: dict, metric: str) -> dict[str, float]:
    """Per-item values behind a metric, keyed so that two runs' items pair up."""
    return metrics.item_values(record.get("samples") or [], metric, record["config"]["eval_prompt"])


def item_matrix(records: dict[int, dict], metric: str, seeds: list[int], items: list[str] | None = None):
    """(seeds x items) matrix of a metric's per-item values, on the items every listed run scored."""
    import numpy as np

    per_seed = {sd: metric_items(records[sd], metric) for sd in seeds}
    if items is None:
        common = set.intersection(*(set(v) for v in per_seed.values())) if per_seed else set()
        items = sorted(common)
    return np.array([[per_seed[sd][k] for k in items] for sd in seeds], dtype=float), items


def arm_summary(records: list[dict], metric: str, level: float = 0.95) -> dict:
    """Mean of an arm over its finished seeds, with a per-seed list and an interval inside [0, 1]."""
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
    iv = stats.arm_interval(matrix, level)
    return dict(out, mean=iv.estimate, low=iv.low, high=iv.high, method=iv.method)


def compare(control: list[dict], treatment: list[dict], metric: str, expected: str | None, min_effect: float,
            level: float = 0.95) -> dict:
    """Verdict for treatment vs control on `metric`, each a list of run records paired by seed and by
    evaluation item, with an interval at `level` (above 0.95 for a primary comparison that shares its
    ablation's 5% error) over seeds and items as crossed random effects (core/stats.py).

    expected None: a secondary metric, reported as a difference with its interval but no verdict."""
    by_seed_c = {r["config"]["seed"]: r for r in control if r.get("status") == "ok"}
    by_seed_t = {r["config"]["seed"]: r for r in treatment if r.get("status") == "ok"}
    seeds = sorted(set(by_seed_c) & set(by_seed_t))
    out = {"metric": metric, "expected": expected, "min_effect": min_effect, "seeds": seeds, "level": level,
           "per_seed": {}, "mde": None}
    undecided = dict(verdict="inconclusive" if expected else None, diff=None, low=None, high=None, method=None)
    if not seeds:
        return dict(out, **undecided, reason="no seed with both arms finished")
    if any(r["metrics"].get(metric) is None for r in [*by_seed_c.values(), *by_seed_t.values()]
           if r["config"]["seed"] in seeds):
        return dict(out, **undecided, reason=f"{metric} undefined for an arm")
    out["per_seed"] = {sd: [by_seed_c[sd]["metrics"][metric], by_seed_t[sd]["metrics"][metric]] for sd in seeds}
    c, items = item_matrix(by_seed_c, metric, seeds)
    t, _ = item_matrix(by_seed_t, metric, seeds, items)
    if len(items) < 2:
        return dict(out, **undecided, reason="fewer than 2 paired items")
    iv = stats.effect_interval(t - c, level)
    diff, low, high = iv.estimate, iv.low, iv.high
    out["mde"] = stats.minimum_detectable_effect(iv, level)
    if expected is None:  # a secondary metric: the difference and its interval, no verdict
        return dict(out, verdict=None, diff=diff, low=low, high=high, method=iv.method, reason="")
    sign = 1.0 if expected == "increase" else -1.0
    effect, e_low, e_high = sign * diff, min(sign * low, sign * high), max(sign * low, sign * high)
    if e_low > 0 and effect >= min_effect:
        verdict = "reproduced"
    elif e_high < min_effect:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return dict(out, verdict=verdict, diff=diff, low=low, high=high, method=iv.method, reason="")
