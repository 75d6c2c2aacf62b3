#!/usr/bin/env python3
"""Seeds each ablation needs: from a stored study's variances, the seeds at which every primary comparison
detects an effect of min_effect at 80% power, at the level its verdict uses.

    python tools/seeds_from_power.py [--results results] [--power 0.8] [--max 30]

For each primary comparison of the current ablation definitions, the stored runs with the same configs (any
ablation, any code version) give a seeds x facts matrix of treatment-minus-control differences on the signature
(or, where the stored runs predate it, on the first metric of `also` they have: the old signature). Its two-way
mean squares split the variance into seeds, facts and residual (core/analysis/stats.py); the standard error at S
seeds is sqrt(var_seed/S + var_fact/N + var_residual/(S N)), and the minimum detectable effect is (t for the
level + t for the power, both on S - 1 degrees of freedom) times it; with unlimited seeds only the facts'
variance is left (the last column): where that exceeds min_effect, the probe set, not the seeds, limits the
power, and the variance includes the effect's own spread over facts, so a large effect inflates it. A comparison the stored study does not
have is listed as unknown. The declared seeds in ablation.yaml come from this table (docs/terms-and-measures.md).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm, t

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def components(d: np.ndarray) -> tuple[float, float, float]:
    """(seed, item, residual) variance components of a seeds x items matrix (method of moments, floored at 0)."""
    from core.analysis.stats import mean_squares

    s, n = d.shape
    ms_seed, ms_item, ms_res = mean_squares(d)
    return max((ms_seed - ms_res) / n, 0.0), max((ms_item - ms_res) / s, 0.0), ms_res


def mde(parts: tuple[float, float, float], items: int, seeds: int, level: float, power: float) -> float:
    v_seed, v_item, v_res = parts
    se = math.sqrt(v_seed / seeds + v_item / items + v_res / (seeds * items))
    return float((t.ppf(0.5 + level / 2, seeds - 1) + t.ppf(power, seeds - 1)) * se)


def stored_by_config(results: Path) -> dict[str, dict[int, dict]]:
    """{config without seed (json): {seed: run record}} over the stored, finished runs (configs in the current
    RunConfig's fields)."""
    from core.run.config import RunConfig

    out: dict[str, dict[int, dict]] = {}
    for path in sorted((results / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") == "ok":
            cfg = RunConfig.from_dict(rec["config"]).to_dict()  # with the fields added since, as defaults
            seed = cfg.pop("seed")
            out.setdefault(json.dumps(cfg, sort_keys=True), {})[seed] = rec
    return out


def table(results: Path, power: float, most: int) -> list[dict]:
    from core.analysis.compare import item_matrix
    from core.analysis.stats import cluster_means
    from core.run import metrics
    from core.run.config import RunConfig
    from core.study.ablation import discover

    stored = stored_by_config(results)
    rows = []
    for ab in discover().values():
        level = ab.primary_level()
        for regime, arm in ab.primary_comparisons():
            if arm not in ab.arms:  # a curve comparison (match:): not a paired one, listed without a power figure
                rows.append({"ablation": ab.name, "comparison": f"{regime}/{arm}", "declared": ab.seeds,
                             "level": level, "metric": None, "stored_seeds": 0, "mde_declared": None,
                             "needed": None, "item_floor": None})
                continue
            found = []
            for role in (ab.control, arm):
                cfg = ab.configs(RunConfig(), 0, None)[(regime, role)].to_dict()
                cfg.pop("seed")
                found.append(stored.get(json.dumps(cfg, sort_keys=True), {}))
            seeds = sorted(set(found[0]) & set(found[1]))
            row = {"ablation": ab.name, "comparison": f"{regime}/{arm}", "declared": ab.seeds, "level": level,
                   "metric": None, "stored_seeds": len(seeds), "mde_declared": None, "needed": None,
                   "item_floor": None}
            metric = next((m for m in (ab.signature, *ab.also) if seeds and all(
                (found[i][sd].get("metrics") or {}).get(m) is not None for i in (0, 1) for sd in seeds)), None)
            if metric is None or len(seeds) < 2:
                rows.append(row)
                continue
            c, items = item_matrix({sd: found[0][sd] for sd in seeds}, metric, seeds, [found[1][sd] for sd in seeds])
            tr, _ = item_matrix({sd: found[1][sd] for sd in seeds}, metric, seeds, [found[0][sd] for sd in seeds])
            d = cluster_means(tr - c, [metrics.cluster_of(k) for k in items])
            parts = components(d)
            needed = next((s for s in range(3, most + 1)
                           if mde(parts, d.shape[1], s, level, power) <= ab.min_effect), None)
            # with unlimited seeds only the facts' (items') variance is left: the probe set's own limit
            floor = float((norm.ppf(0.5 + level / 2) + norm.ppf(power)) * math.sqrt(parts[1] / d.shape[1]))
            rows.append(dict(row, metric=metric, mde_declared=mde(parts, d.shape[1], ab.seeds, level, power),
                             needed=needed, item_floor=floor))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--max", type=int, default=30, help="the most seeds considered")
    args = p.parse_args(argv)
    print(f"| ablation | primary comparison | metric (stored) | stored seeds | level | declared seeds | "
          f"MDE at declared | seeds for {args.power:.0%} power | MDE with unlimited seeds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table(args.results, args.power, args.max):
        known = r["metric"] is not None
        at_declared = f"{r['mde_declared']:.3f}" if known else "-"
        needed = (r["needed"] or f"> {args.max}") if known else "unknown"
        floor = f"{r['item_floor']:.3f}" if known else "-"
        print(f"| {r['ablation']} | {r['comparison']} | {r['metric'] or 'not stored'} | {r['stored_seeds']} | "
              f"{r['level']:.4f} | {r['declared']} | {at_declared} | {needed} | {floor} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
