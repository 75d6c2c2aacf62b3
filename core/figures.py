"""The report's figures (matplotlib + seaborn, PNG files): loss curves, metric bars per arm, metrics along a sweep.

Each function takes one regime's plan rows and run records and returns the figure's path relative to the page.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the report must render on a headless machine

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .metrics import METRICS  # noqa: E402
from .record import RunRecord  # noqa: E402

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


def _finished(rec: RunRecord | None) -> bool:
    return rec is not None and rec.ok


def _palette(arms: list[str]) -> dict[str, tuple]:
    colours = sns.color_palette("colorblind", max(len(arms), 3))
    return {arm: colours[i % len(colours)] for i, arm in enumerate(arms)}


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return f"figures/{path.name}"


def loss_figure(ab: dict, rows: list[dict], runs: dict, path: Path, mark_best: bool) -> str | None:
    """Training and validation loss per arm; seeds as a min-max band. None when no run has a history."""
    records = []
    for r in rows:
        rec = runs.get(r["key"])
        if _finished(rec):
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
    return _save(fig, path)


def _mark_selection(ax, rows: list[dict], runs: dict, palette: dict) -> None:
    """The best-by-validation epoch (vertical line) and each arm's selected checkpoint (star)."""
    best_done, star_done = set(), set()
    for r in rows:
        rec = runs.get(r["key"])
        if not _finished(rec) or not rec.history:
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


def metric_figure(ab: dict, stats: dict[str, dict[str, dict]], metrics: list[str], path: Path) -> str:
    """Grouped bars: one group per metric, one bar per arm, 95% CI over seeds as error bars."""
    arms = list(ab["arms"])
    palette = _palette(arms)
    width = 0.8 / max(len(arms), 1)
    fig, ax = plt.subplots(figsize=(min(3 + 1.6 * len(metrics) * max(len(arms), 2) / 2, 10.5), 3.3))
    for i, arm in enumerate(arms):
        for j, metric in enumerate(metrics):
            s = stats[arm][metric]
            x = j - 0.4 + width * (i + 0.5)
            if s["mean"] is None:  # a gap, not a zero
                ax.text(x, 0.02, "no value", rotation=90, ha="center", va="bottom", fontsize=7, color="#a00")
                continue
            ax.bar(x, s["mean"], width * 0.92, color=palette[arm], label=arm if j == 0 else None,
                   edgecolor="black", linewidth=0.4)
            top = s["high"] if s["high"] is not None else s["mean"]
            ax.text(x, min(top, 1.0) + 0.015, f"{s['mean']:.2f}", ha="center", va="bottom", fontsize=7)
            if s["low"] is not None:
                ax.errorbar(x, s["mean"], yerr=[[s["mean"] - s["low"]], [s["high"] - s["mean"]]], color="black",
                            capsize=3, linewidth=1)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([_wrap_metric(m, m == ab["signature"]) for m in metrics], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("fraction")
    ax.set_xlim(-0.6, len(metrics) - 0.4)
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[a]) for a in arms]
    ax.legend(handles, arms, fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return _save(fig, path)


def _wrap_metric(metric: str, signature: bool) -> str:
    label = metric.replace("@", "\n@")
    return f"{label}\n(signature)" if signature else label


def sweep_figure(ab: dict, stats: dict[str, dict[str, dict]], metrics: list[str], axis_values: dict, path: Path) -> str:
    """Each metric against the swept RunConfig field, 95% CI over seeds as a band."""
    arms = sorted(ab["arms"], key=lambda a: _sort_key(axis_values.get(a)))
    values = [axis_values.get(a) for a in arms]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(arms)))
    fig, ax = plt.subplots(figsize=(8, 3.4))
    palette = sns.color_palette("colorblind", len(METRIC_ORDER))
    colours = [palette[METRIC_ORDER.index(m) % len(palette)] if m in METRIC_ORDER else palette[-1] for m in metrics]
    for c, metric in zip(colours, metrics):  # a metric keeps its colour in every sweep
        pts = [(x, stats[a][metric]) for x, a in zip(xs, arms) if stats[a][metric]["mean"] is not None]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1]["mean"] for p in pts], marker="o", color=c,
                linewidth=2.2 if metric == ab["signature"] else 1.2,
                label=f"{metric} (signature)" if metric == ab["signature"] else metric)
        band = [(p[0], p[1]["low"], p[1]["high"]) for p in pts if p[1]["low"] is not None]
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], color=c, alpha=0.2)
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{v:g}\n{a}" if numeric else f"{fmt(v)}\n{a}" for v, a in zip(values, arms)], fontsize=8)
    ax.set_xlabel(ab.get("axis") or "arm")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return _save(fig, path)


METRIC_ORDER = list(METRICS)  # a metric keeps its colour in every figure


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def regime_figures(ab: dict, regime: str, rows: list[dict], runs: dict, stats: dict[str, dict[str, dict]],
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


def frontier_figure(rows: list[dict], runs: dict, path: Path) -> str | None:
    """Every finished trained run on held-out recall against retention, coloured by ablation: how close any
    recipe comes to the corner the brief asks for (retention >= 0.9 at recall >= 0.9)."""
    points = {}
    for r in rows:
        rec = runs.get(r["key"])
        if not _finished(rec) or not rec.config.get("epochs"):
            continue
        m = rec.metrics
        if m.get("heldout_recall") is not None and m.get("retention") is not None:
            points[r["key"]] = (m["heldout_recall"], m["retention"], r["ablation"])
    if not points:
        return None
    ablations = sorted({a for _, _, a in points.values()})
    palette = dict(zip(ablations, sns.color_palette("tab20", len(ablations))))
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.axvspan(0.9, 1.02, ymin=(0.9 + 0.02) / 1.04, color="#2ca02c", alpha=0.12, label="goal: both >= 0.9")
    for name in ablations:
        xs = [x for x, _, a in points.values() if a == name]
        ys = [y for _, y, a in points.values() if a == name]
        ax.scatter(xs, ys, s=28, color=palette[name], label=name, alpha=0.85, edgecolor="white", linewidth=0.5)
    pareto, best = [], -1.0
    for x, y, _ in sorted(points.values(), key=lambda p: (-p[0], -p[1])):
        if y > best:
            pareto.append((x, y))
            best = y
    ax.plot([p[0] for p in pareto], [p[1] for p in pareto], color="black", linewidth=1, linestyle="--",
            label="frontier")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="heldout_recall", ylabel="retention",
           title="Every trained run: recall against retention")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)
