"""The report's figures of one ablation (matplotlib + seaborn, PNG files): loss curves, metric bars per arm, metrics
along a sweep; and what every figure shares (theme, palette, markers, saving). The study-wide figures (the forest
of effects, the forgetting frontier) are in core/report/study_figures.py.

Each function takes one regime's plan rows and run records and returns the figure's path relative to the page.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the report must render on a headless machine

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from core.run.metrics import METRICS  # noqa: E402
from core.run.record import RunRecord  # noqa: E402
from core.study.store import PlanRow

DPI = 90


def theme() -> None:
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)


def close_all() -> None:
    plt.close("all")


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)



def slug(*parts: str) -> str:
    return "--".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p) for p in parts)


def finished(rec: RunRecord | None) -> bool:
    return rec is not None and rec.ok


# Paul Tol's "bright" scheme: seven hues that stay apart under colour-vision deficiency, one red and no orange;
# a figure's lines or arms take them in order, and each line also has its own marker (an eighth line reuses a hue)
DISTINCT = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _palette(arms: list[str]) -> dict[str, str]:
    return {arm: DISTINCT[i % len(DISTINCT)] for i, arm in enumerate(arms)}


def save(fig, path: Path) -> str:
    """The figure written to `path` (PNG at DPI, or SVG with its text kept as text), closed; its report path."""
    svg = path.suffix == ".svg"
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "hiahia"}):  # SVG: byte-identical reruns
        fig.savefig(path, dpi=DPI, bbox_inches="tight", **({"metadata": {"Date": None}} if svg else {}))
    plt.close(fig)
    return f"figures/{path.name}"


def loss_figure(ab: dict, rows: list[PlanRow], runs: dict, path: Path, mark_best: bool) -> str | None:
    """Training and validation loss per arm; seeds as a min-max band. None when no run has a history."""
    records = []
    for r in rows:
        rec = runs.get(r["key"])
        if finished(rec):
            records += [dict(h, arm=r["arm"], seed=r["seed"]) for h in rec.history]
    if not records:
        return None
    df = pd.DataFrame(records)
    arms = list(ab["arms"])
    palette = _palette(arms)
    present = [a for a in arms if a in set(df["arm"])]
    seeds = df["seed"].nunique()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharex=True, sharey=True)
    for ax, split, title in ((axes[0], "train", "training loss"),
                             (axes[1], "validation", "validation loss (epoch 0 = before training)")):
        part = df[df["split"] == split]
        ax.set_title(title, fontsize=10)
        if part.empty:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        sns.lineplot(data=part, x="epoch", y="loss", hue="arm", style="arm", hue_order=present, style_order=present,
                     palette=palette, markers=True, dashes=True, errorbar=("pi", 100) if seeds > 1 else None,
                     ax=ax, legend=split == "validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if mark_best:
        _mark_selection(axes[1], rows, runs, palette)
    if axes[1].get_legend():
        sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title=None, frameon=False)
    fig.tight_layout()
    return save(fig, path)


def _mark_selection(ax, rows: list[PlanRow], runs: dict, palette: dict) -> None:
    """The best-by-validation epoch (vertical line) and each arm's selected checkpoint (star)."""
    best_done, star_done = set(), set()
    for r in rows:
        rec = runs.get(r["key"])
        if not finished(rec) or not rec.history:
            continue
        val = {h["epoch"]: h["loss"] for h in rec.history if h["split"] == "validation"}
        best = rec.best_epoch
        if best is not None and best not in best_done:
            ax.axvline(best, color="0.35", linestyle=":", linewidth=1.2,
                       label="best by validation" if not best_done else None)
            best_done.add(best)
        sel = rec.selected_epoch
        if sel in val:  # later arms get smaller stars so that two arms selecting one epoch both stay visible
            size = max(16 - 5 * list(palette).index(r["arm"]), 6) if r["arm"] in palette else 10
            ax.plot([sel], [val[sel]], marker="*", markersize=size, color=palette.get(r["arm"], "k"),
                    markeredgecolor="black", linestyle="none",
                    label=f"selected: {r['arm']}" if r["arm"] not in star_done else None)
            star_done.add(r["arm"])
    ax.legend(fontsize=8, frameon=False)


def _axes_groups(metrics: list[str]) -> list[list[str]]:
    """Which metrics share an axis: every fraction on one [0, 1] axis, each other metric on an axis of its own."""
    fractions = [m for m in metrics if METRICS[m].is_fraction]
    return ([fractions] if fractions else []) + [[m] for m in metrics if not METRICS[m].is_fraction]


def metric_figure(ab: dict, stats: dict[str, dict[str, dict]], metrics: list[str], path: Path) -> str:
    """Grouped bars: one group per metric, one bar per arm, its 95% interval as error bars and a dot per seed, all
    inside the metric's range (the value is printed above the axes). Fractions share a [0, 1] axis; any other metric
    gets an axis of its own, labelled with its unit."""
    arms = list(ab["arms"])
    palette = _palette(arms)
    groups = _axes_groups(metrics)
    width = min(3 + 1.6 * len(metrics) * max(len(arms), 2) / 2, 10.5) + 1.5 * (len(groups) - 1)
    fig, axes = plt.subplots(1, len(groups), figsize=(width, 3.3), squeeze=False,
                             gridspec_kw={"width_ratios": [len(g) for g in groups]})
    for ax, group in zip(axes[0], groups):
        _bars(ax, arms, group, stats, palette, ab["signature"])
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[a]) for a in arms]
    handles.append(plt.Line2D([], [], marker="o", linestyle="none", markerfacecolor="white", markeredgecolor="black",
                              markersize=4))
    axes[0][-1].legend(handles, [*arms, "one seed"], fontsize=8, frameon=False, loc="upper left",
                       bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return save(fig, path)


def _bars(ax, arms: list[str], metrics: list[str], stats: dict, palette: dict, signature: str) -> None:
    """One axis of metric_figure: its metrics share one range."""
    width = 0.8 / max(len(arms), 1)
    m0 = METRICS[metrics[0]]
    label_y = ax.get_xaxis_transform()  # x in data, y in axes: value labels just above the axes
    for i, arm in enumerate(arms):
        for j, metric in enumerate(metrics):
            s, clip = stats[arm][metric], METRICS[metric].clip
            x = j - 0.4 + width * (i + 0.5)
            if s["mean"] is None:  # a gap, not a zero
                ax.text(x, 0.02, "no value", rotation=90, ha="center", va="bottom", fontsize=7, color="#a00",
                        transform=label_y)
                continue
            mean = clip(s["mean"])
            ax.bar(x, mean, width * 0.92, color=palette[arm], label=arm if j == 0 else None,
                   edgecolor="black", linewidth=0.4, alpha=0.85)
            if s["low"] is not None:
                low, high = clip(s["low"]), clip(s["high"])
                ax.errorbar(x, mean, yerr=[[mean - low], [high - mean]], color="black", capsize=3, linewidth=1)
            _seed_dots(ax, x, [clip(v) for v in s["per_seed"].values()], width * 0.5)
            ax.text(x, 1.01, f"{mean:.2f}", ha="center", va="bottom", fontsize=7, transform=label_y)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([_wrap_metric(m, m == signature) for m in metrics], fontsize=8)
    _value_axis(ax, m0)
    ax.set_xlim(-0.6, len(metrics) - 0.4)


def _value_axis(ax, metric) -> None:
    """The value axis of a metric's range: [0, 1] for fractions, nothing drawn outside it; another metric's axis
    starts at its lower bound (if any) and is labelled with its unit."""
    if metric.is_fraction:
        ax.set_ylim(0, 1.0)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    else:
        bottom, top = ax.get_ylim()
        ax.set_ylim(metric.low if metric.low is not None else bottom, metric.high if metric.high is not None else top)
    ax.set_ylabel(metric.unit)


def _seed_dots(ax, x: float, values: list[float], spread: float) -> None:
    """One hollow dot per seed's value, spread sideways so that equal values stay countable."""
    if not values:
        return
    offsets = [0.0] if len(values) == 1 else [spread * (i / (len(values) - 1) - 0.5) for i in range(len(values))]
    ax.scatter([x + o for o in offsets], values, s=12, facecolor="white", edgecolor="black",
               linewidth=0.8, zorder=4, clip_on=False)


def _wrap_metric(metric: str, signature: bool) -> str:
    label = metric.replace("@", "\n@")
    return f"{label}\n(signature)" if signature else label


def sweep_figure(ab: dict, stats: dict[str, dict[str, dict]], metrics: list[str], axis_values: dict, path: Path) -> str:
    """Each metric against the swept RunConfig field: the mean as a line, its 95% interval as a band and a dot
    per seed, inside the metric's range. Fractions share one [0, 1] panel; any other metric gets a panel of its own
    below, on the same x axis."""
    arms = sorted(ab["arms"], key=lambda a: _sort_key(axis_values.get(a)))
    values = [axis_values.get(a) for a in arms]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(arms)))
    groups = _axes_groups(metrics) or [[]]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3.4 + 2.2 * (len(groups) - 1)), squeeze=False,
                             sharex=True, gridspec_kw={"height_ratios": [3.4] + [2.2] * (len(groups) - 1)})
    for ax, group in zip(axes[:, 0], groups):
        _sweep_lines(ax, ab, stats, group, arms, xs)
    ax = axes[-1][0]
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    unmeasured = {a for a in arms if all(stats[a][m]["mean"] is None for m in metrics)}  # a gap, never a zero
    ax.set_xticklabels([(f"{v:g}\n{a}" if numeric else f"{fmt(v)}\n{a}") + ("\n(no run yet)" if a in unmeasured else "")
                        for v, a in zip(values, arms)], fontsize=8)
    ax.set_xlabel(ab.get("axis") or "arm")
    fig.tight_layout()
    return save(fig, path)


def _sweep_lines(ax, ab: dict, stats: dict, metrics: list[str], arms: list[str], xs: list) -> None:
    # distinct within the figure: the sweep's metrics in the study's metric order take DISTINCT's hues in turn
    ranked = sorted(set(metrics), key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER), m))
    colours = [DISTINCT[ranked.index(m) % len(DISTINCT)] for m in metrics]
    markers = [MARKERS[ranked.index(m) % len(MARKERS)] for m in metrics]
    for c, marker, metric in zip(colours, markers, metrics):
        clip = METRICS[metric].clip
        pts = [(x, stats[a][metric]) for x, a in zip(xs, arms) if stats[a][metric]["mean"] is not None]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [clip(p[1]["mean"]) for p in pts], marker=marker, markersize=4.5, color=c,
                linewidth=2.2 if metric == ab["signature"] else 1.2,
                label=f"{metric} (signature)" if metric == ab["signature"] else metric)
        band = [(p[0], clip(p[1]["low"]), clip(p[1]["high"])) for p in pts if p[1]["low"] is not None]
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], color=c, alpha=0.2)
        for x, st in pts:
            ax.scatter([x] * len(st["per_seed"]), [clip(v) for v in st["per_seed"].values()], s=14, color=c,
                       edgecolor="white", linewidth=0.5, zorder=3, clip_on=False)
    if metrics:
        _value_axis(ax, METRICS[metrics[0]])
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    else:  # no finished run yet: nothing to label
        ax.text(0.5, 0.5, "no finished run yet", transform=ax.transAxes, ha="center", va="center", color="#8a1c1c")


METRIC_ORDER = list(METRICS)  # the order in which a figure's metrics take DISTINCT's hues


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def regime_figures(ab: dict, regime: str, rows: list[PlanRow], runs: dict, stats: dict[str, dict[str, dict]],
                   metrics: list[str], fig_dir: Path, mark_best: bool) -> dict[str, str | None]:
    """One regime's figures: "loss", and "metrics" (bars per arm, or each metric along the axis for a sweep)."""
    if not rows:
        return {}
    stem = slug(ab["name"], regime)
    figs = {"loss": loss_figure(ab, rows, runs, fig_dir / f"{stem}--loss.png", mark_best)}
    if ab.get("kind") == "sweep":
        axis_values: dict = {}
        for r in rows:  # the swept field's value in each arm's first row
            axis_values.setdefault(r["arm"], r["config"].get(ab.get("axis")))
        figs["metrics"] = sweep_figure(ab, stats, metrics, axis_values, fig_dir / f"{stem}--sweep.png")
    else:
        figs["metrics"] = metric_figure(ab, stats, metrics, fig_dir / f"{stem}--metrics.png")
    return figs
