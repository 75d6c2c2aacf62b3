"""Stored runs (one JSON per config key, written atomically), the tidy CSV, and per-ablation verdicts.

A verdict compares the signature metric between two arms, paired by seed: with >= 2 seeds a
t-interval over the seed differences; with 1 seed a paired bootstrap over evaluation items.
"""
from __future__ import annotations

import json
import math
import os
import random
import tempfile
from pathlib import Path

from . import metrics

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


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """Mean and t-interval at `level`; the interval is None with fewer than 2 values."""
    from scipy.stats import t

    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None, None
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    half = float(t.ppf(0.5 + level / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return m, m - half, m + half


def bootstrap_ci(pairs: list[tuple[float, float]], draws: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """Paired bootstrap over items of mean(b - a), percentile interval at `level`."""
    diffs = [b - a for a, b in pairs]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    tail = (1 - level) / 2
    return sum(diffs) / n, means[int(tail * draws)], means[max(int((1 - tail) * draws) - 1, int(tail * draws))]


def compare(control: list[dict], treatment: list[dict], metric: str, expected: str | None, min_effect: float,
            level: float = 0.95) -> dict:
    """Verdict for treatment vs control on `metric`, each a list of run records paired by seed, with an
    interval at `level` (above 0.95 for a primary comparison that shares its ablation's 5% error).

    expected None: a secondary metric, reported as a difference with its interval but no verdict."""
    by_seed_c = {r["config"]["seed"]: r for r in control if r.get("status") == "ok"}
    by_seed_t = {r["config"]["seed"]: r for r in treatment if r.get("status") == "ok"}
    seeds = sorted(set(by_seed_c) & set(by_seed_t))
    out = {"metric": metric, "expected": expected, "min_effect": min_effect, "seeds": seeds, "level": level}
    if not seeds:
        return dict(out, verdict="inconclusive" if expected else None, reason="no seed with both arms finished", diff=None, low=None, high=None,
                    method=None)
    diffs = [by_seed_t[s]["metrics"].get(metric) for s in seeds]
    diffs = [None if t is None or by_seed_c[s]["metrics"].get(metric) is None else t - by_seed_c[s]["metrics"][metric]
             for s, t in zip(seeds, diffs)]
    if any(d is None for d in diffs):
        return dict(out, verdict="inconclusive" if expected else None, reason=f"{metric} undefined for an arm", diff=None, low=None,
                    high=None, method=None)
    if len(seeds) >= 2:
        diff, low, high = mean_ci(diffs, level)
        method = f"t-interval over {len(seeds)} seeds"
    else:
        a, b = metric_items(by_seed_c[seeds[0]], metric), metric_items(by_seed_t[seeds[0]], metric)
        common = sorted(set(a) & set(b))
        if not common:
            return dict(out, verdict="inconclusive" if expected else None, reason="no paired items", diff=diffs[0], low=None, high=None,
                        method=None)
        # the difference over the paired items (equal to the metric difference when both arms score the same items)
        diff, low, high = bootstrap_ci([(a[k], b[k]) for k in common], level=level)
        method = f"paired bootstrap over {len(common)} items (1 seed: training noise not covered)"
    if expected is None:  # a secondary metric: the difference and its interval, no verdict
        return dict(out, verdict=None, diff=diff, low=low, high=high, method=method, reason="")
    sign = 1.0 if expected == "increase" else -1.0
    effect, e_low, e_high = sign * diff, min(sign * low, sign * high), max(sign * low, sign * high)
    if e_low > 0 and effect >= min_effect:
        verdict = "reproduced"
    elif e_high < min_effect:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return dict(out, verdict=verdict, diff=diff, low=low, high=high, method=method, reason="")
