"""The report's study-wide figures: every deciding comparison's effect (the forest, on the first screen and, per
ablation, at the top of its page) and every trained run's held-out recall against retention (the forgetting
frontier). core/report/figures.py has the figures of one ablation and what all figures share."""
from __future__ import annotations

from pathlib import Path

from core.analysis.verdicts import WORDS
from core.report.data import trained_nothing
from core.report import figures  # first: it chooses the file-only backend
from core.report.figures import DISTINCT
from core.study.ablation import ROLE_NAMES, ROLES
from core.study.store import PlanRow

import matplotlib.pyplot as plt  # noqa: E402

BASELINE, SHARED = "baseline", "shared"
# the frontier's points by who ran them (a hue and a marker each): the role of the ablation, of every ablation that
# shares the run where they have one role, the baseline recipe itself, or ablations of several roles
ROLE_STYLE = {"step": (ROLE_NAMES["step"], DISTINCT[1], "^"), "lever": (ROLE_NAMES["lever"], DISTINCT[0], "o"),
              "remedy": (ROLE_NAMES["remedy"], DISTINCT[2], "s"),
              SHARED: ("Shared by ablations of several roles", DISTINCT[5], "v"),
              BASELINE: ("The baseline recipe", "#555555", "D")}


def frontier_figure(rows: list[PlanRow], runs: dict, path: Path, roles: dict[str, str] | None = None,
                    baseline: frozenset[str] = frozenset()) -> str | None:
    """Every finished trained run on held-out recall against retention, coloured by the role of the ablation that
    ran it (roles: ablation -> step, lever or remedy; "lever" where unknown; ROLE_STYLE for a run several share;
    baseline: the keys of the baseline recipe's runs, frontier.recipe_rows):
    how close any recipe comes to the corner the study aims for (retention >= 0.9 at recall >= 0.9). The runs on
    the frontier are labelled ablation / regime / arm (the first of the arms that share it, and how many more)."""
    points, owners = {}, {}
    for r in rows:
        rec = runs.get(r["key"])
        if not figures.finished(rec) or not rec.config.get("epochs") or trained_nothing(rec):  # 0 parameters trained
            continue
        m = rec.metrics
        if m.get("heldout_recall") is not None and m.get("retention") is not None:
            owners.setdefault(r["key"], set()).add((r["ablation"], r.get("regime", "baseline"), r.get("arm", "?")))
            points[r["key"]] = (m["heldout_recall"], m["retention"])
    if not points:
        return None
    group, name = {}, {}
    for k, who in owners.items():
        first, *more = sorted(who)
        found = {(roles or {}).get(a, "lever") for a, _, _ in who}
        group[k] = BASELINE if k in baseline else found.pop() if len(found) == 1 else SHARED
        name[k] = ("baseline recipe" if group[k] == BASELINE
                   else " / ".join(first) + (f" (+{len(more)})" if more else ""))
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.axvspan(0.9, 1.02, ymin=(0.9 + 0.02) / 1.04, color=DISTINCT[3], alpha=0.15, label="goal: both >= 0.9")
    for role, (label, colour, marker) in ROLE_STYLE.items():
        mine = [points[k] for k in points if group[k] == role]
        if mine:
            ax.scatter([p[0] for p in mine], [p[1] for p in mine], s=30, color=colour, marker=marker, alpha=0.8,
                       edgecolor="white", linewidth=0.5, label=label)
    pareto, best = [], -1.0
    for k in sorted(points, key=lambda k: (-points[k][0], -points[k][1], k)):
        if points[k][1] > best:
            pareto.append(k)
            best = points[k][1]
    ax.plot([points[k][0] for k in pareto], [points[k][1] for k in pareto], color="black", linewidth=1,
            linestyle="--", label="frontier")
    for i, k in enumerate(pareto):  # which recipe each frontier run is, towards the middle, alternating heights
        x, y = points[k]
        left = x < 0.5
        ax.annotate(name[k], (x, y), fontsize=6.5, color="0.2",
                    xytext=(6 if left else -6, 4 + 7 * (i % 2) - (12 if y > 0.95 else 0)),
                    textcoords="offset points", ha="left" if left else "right",
                    bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75})
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="heldout_recall", ylabel="retention",
           title="Every trained run: recall against retention")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return figures.save(fig, path)


VERDICT_COLOURS = {w.word: w.colour for w in WORDS}


def forest_order(rows: list[dict]) -> list[dict]:
    """The forest's rows: grouped as the answer is (steps, levers, remedies), largest effect in the symptom's
    direction first within each group, rows without an effect last."""
    return sorted(rows, key=lambda r: (ROLES.index(r.get("role") or "lever"), r.get("oriented") is None,
                                       -(r.get("oriented") or 0.0)))


def forest_figure(rows: list[dict], path: Path, one_ablation: bool = False) -> str | None:
    """Every deciding comparison's signature effect with its interval, one row each, oriented so that the symptom
    always points right (treatment - control, sign flipped where the symptom is a decrease), grouped and sorted
    (forest_order), coloured by verdict, each row's interval level in its label; the min_effect band shaded, one
    dot per seed's difference. Written as SVG with its text as text (sharp at any width, readable by a test).
    one_ablation: the rows of one ablation (the summary at the top of its page): labelled by regime and arm, without
    the group headings. None when there is no row."""
    if not rows:
        return None
    rows = forest_order(rows)
    fig, ax = plt.subplots(figsize=(10, (1.6 if one_ablation else 1.2) + 0.36 * len(rows)))
    previous = None
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        sign = -1.0 if r["expected"] == "decrease" else 1.0
        group = r.get("role") or "lever"
        if group != previous and not one_ablation:
            ax.axhline(y + 0.5, color="0.6", linewidth=0.6)
            ax.text(0.005, y + 0.47, ROLE_NAMES[group], transform=ax.get_yaxis_transform(), ha="left", va="top",
                    fontsize=9, color="0.35", style="italic")
            previous = group
        band = r["min_effect"] or 0.0
        ax.fill_betweenx([y - 0.45, y + 0.45], -band, band, color="#cfd8dc", alpha=0.55, linewidth=0,
                         label="|effect| < min_effect" if i == 0 else None)
        colour = VERDICT_COLOURS.get(r["verdict"], "#9e9e9e")
        if r["diff"] is None:
            ax.text(0, y, "no effect measured", ha="center", va="center", fontsize=9, color="#8a1c1c")
            continue
        if r["low"] is not None and r["high"] is not None:
            ax.plot([sign * r["low"], sign * r["high"]], [y, y], color=colour, linewidth=2.4, solid_capstyle="butt")
        if r["per_seed"]:
            ax.scatter([sign * v for v in r["per_seed"]], [y + 0.22] * len(r["per_seed"]), s=11,
                       facecolor="white", edgecolor=colour, linewidth=0.8, zorder=3)
        ax.plot([sign * r["diff"]], [y], marker="o", markersize=6.5, color=colour, markeredgecolor="black", zorder=4)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['where'] if one_ablation else r['label']}  ({r['metric']} "
                        f"{'↑' if r['expected'] == 'increase' else '↓'}"
                        + (f", {100 * r['level']:.1f}%" if r.get("level") else "") + ")"
                        for r in reversed(rows)], fontsize=10)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    # symmetric about zero and as wide as the widest interval, seed or band needs (effects are differences of
    # shares, so never beyond +-1): small effects stay readable
    reach = max([abs(v) for r in rows for v in (r["low"], r["high"], r["diff"], r["min_effect"], *(r["per_seed"] or []))
                 if v is not None] + [0.1])
    ax.set_xlim(-min(1.0, 1.15 * reach), min(1.0, 1.15 * reach))
    ax.tick_params(axis="x", labelsize=10)
    ax.set_xlabel("effect in the symptom's direction (right: the symptom showed; left: the other way)", fontsize=10)
    handles = [plt.Line2D([], [], marker="o", color=c, markeredgecolor="black", linewidth=2.2, label=v)
               for v, c in VERDICT_COLOURS.items()]
    handles += [plt.Line2D([], [], marker="o", linestyle="none", markerfacecolor="white", markeredgecolor="0.3",
                           markersize=4, label="one seed"),
                plt.Rectangle((0, 0), 1, 1, color="#cfd8dc", label="|effect| < min_effect")]
    ax.legend(handles=handles, fontsize=9, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4)
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    return figures.save(fig, path.with_suffix(".svg"))
