"""The HTML report: results/ (plan.json, runs/, verdicts.json) -> report/index.html plus seaborn figures.

It only reads results, so `python -m core.report` re-renders at any time without training. A run that
is missing or failed is shown as a marked gap with its error, never as a zero.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: the report must render on a headless machine

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from jinja2 import Environment, FileSystemLoader  # noqa: E402
from markupsafe import Markup  # noqa: E402

from .metrics import METRICS  # noqa: E402
from .results import RESULTS, ROOT, arm_summary, write_atomic  # noqa: E402

TEMPLATES = Path(__file__).resolve().parent / "templates"
REPORT = ROOT / "report"
QUESTION = "Can LoRA inject personal facts into a small chat model, and what breaks it?"
DPI = 90
SAMPLE_TESTS = 6  # test questions shown side by side per regime
SAMPLE_IDENTITY = 5  # identity probes shown side by side per regime
SHOW_PATHS = 4  # matched module paths listed per injection report
SEED_RECIPE_TITLE = "seed_recipe vs baseline: the original's combined first choices next to the fixed recipe"
CONFOUNDED = {"base_vs_chat"}  # ablations whose notes state a confound that must be read before the verdict
LICENCE_URLS = {"Apache-2.0": "https://www.apache.org/licenses/LICENSE-2.0",
                "Gemma Terms of Use": "https://ai.google.dev/gemma/terms"}


class ReportError(RuntimeError):
    """The results folder cannot be reported on; the message says what is missing."""


# ---- reading results ------------------------------------------------------------------------------

def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_results(results_dir: Path) -> tuple[list[dict], dict[str, dict], dict, dict[str, dict | None]]:
    """(plan rows, ablation metas sorted by order, verdicts, {key: run record or None when not on disk})."""
    plan = _read_json(results_dir / "plan.json")
    if not plan or "rows" not in plan:
        raise ReportError(f"{results_dir / 'plan.json'} is missing or unreadable: run `python run_all.py` first "
                          f"(or pass --results DIR with a finished run)")
    metas = {name: dict(meta, name=name) for name, meta in plan.get("ablations", {}).items()}
    metas = dict(sorted(metas.items(), key=lambda kv: (kv[1].get("order", 100), kv[0])))
    verdicts = _read_json(results_dir / "verdicts.json") or {}
    keys = [r["key"] for r in plan["rows"]] + [r["untrained_key"] for r in plan["rows"] if r.get("untrained_key")]
    runs = {}
    for key in dict.fromkeys(keys):
        path = results_dir / "runs" / f"{key}.json"
        rec = _read_json(path) if path.exists() else None
        if path.exists() and rec is None:
            rec = {"key": key, "status": "failed", "error": f"{path.name} exists but is not readable JSON"}
        runs[key] = rec
    return plan["rows"], metas, verdicts, runs


def status(rec: dict | None) -> str:
    if rec is None:
        return "missing"
    return "ok" if rec.get("status") == "ok" else "failed"


def gap(rec: dict | None, key: str) -> dict:
    """What to show instead of a value for a run that did not finish."""
    if rec is None:
        return {"kind": "missing", "text": "missing run", "detail": f"run {key} is not on disk (never run or deleted)"}
    return {"kind": "failed", "text": "failed run", "detail": rec.get("error") or "failed without an error message"}


# ---- numbers ------------------------------------------------------------------------------------

def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def arm_stat(rows: list[dict], runs: dict, metric: str) -> dict:
    """Mean and 95% interval (inside [0, 1]) over the arm's finished seeds and items, with the per-seed
    values; the text says when it rests on one seed or none."""
    recs = [runs.get(r["key"]) for r in rows]
    ok = [r for r in recs if status(r) == "ok"]
    summary = arm_summary(ok, metric)
    mean, low, high, n = summary["mean"], summary["low"], summary["high"], summary["n"]
    missing = sum(status(r) == "missing" for r in recs)
    failed = sum(status(r) == "failed" for r in recs)
    note = ", ".join(t for t in (f"{missing} missing" if missing else "", f"{failed} failed" if failed else "") if t)
    if mean is None:
        text, reason = None, ("no finished run" if not ok else f"{metric} undefined")
    elif n == 1:
        text, reason = f"{mean:.2f} (1 seed)", ""
    else:
        text, reason = f"{mean:.2f} [{low:.2f}, {high:.2f}]", ""
    return {"mean": mean, "low": low, "high": high, "n": n, "text": text, "reason": reason, "note": note,
            "per_seed": summary["per_seed"]}


def effect_text(cmp: dict | None) -> str | None:
    if not cmp or cmp.get("diff") is None:
        return None
    if cmp.get("low") is None or cmp.get("high") is None:
        return f"{cmp['diff']:+.2f}"
    return f"{cmp['diff']:+.2f} [{cmp['low']:+.2f}, {cmp['high']:+.2f}]"


def stale(cmp: dict | None, rows: list[dict], runs: dict, arms: tuple[str, str]) -> bool:
    """True when a stored comparison used a seed whose run (of either arm) is no longer finished on disk."""
    if not cmp or not cmp.get("seeds"):
        return False
    ok = {(r["arm"], r["seed"]) for r in rows if status(runs.get(r["key"])) == "ok"}
    return any((arm, seed) not in ok for arm in arms for seed in cmp["seeds"])


def verdict_class(verdict: str | None) -> str:
    return {"reproduced": "v-yes", "not reproduced": "v-no", "inconclusive": "v-maybe"}.get(verdict or "", "v-none")


# ---- figures ------------------------------------------------------------------------------------

def _slug(*parts: str) -> str:
    return "--".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p) for p in parts)


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
        if status(rec) == "ok":
            records += [dict(h, arm=r["arm"], seed=r["seed"]) for h in rec.get("history") or []]
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
        if status(rec) != "ok" or not rec.get("history"):
            continue
        val = {h["epoch"]: h["loss"] for h in rec["history"] if h["split"] == "validation"}
        best = rec.get("best_epoch")
        if best is not None and best not in best_done:
            ax.axvline(best, color="0.35", linestyle=":", linewidth=1.2,
                       label="best by validation" if not best_done else None)
            best_done.add(best)
        sel = rec.get("selected_epoch")
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


# ---- page sections ------------------------------------------------------------------------------

def pick_run(rows: list[dict], runs: dict) -> tuple[dict, dict | None]:
    """The row shown for sample answers: seed 0 if planned, else the lowest seed."""
    row = min(rows, key=lambda r: r["seed"])
    return row, runs.get(row["key"])


def _spread(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def sample_table(columns: list[tuple[str, dict, dict | None]]) -> dict:
    """Test questions and identity probes side by side: columns are (label, row, record)."""
    ref = next((rec for _, _, rec in columns if status(rec) == "ok"), None)
    head = [{"label": label, "seed": row["seed"], "gap": None if status(rec) == "ok" else gap(rec, row["key"])}
            for label, row, rec in columns]
    if ref is None:
        return {"head": head, "rows": []}
    samples = ref.get("samples") or []
    first_per_fact = list({s["id"]: s for s in reversed([s for s in samples if s["set"] == "test"])}.values())[::-1]
    chosen = _spread(first_per_fact, SAMPLE_TESTS) + _spread([s for s in samples if s["set"] == "identity"],
                                                             SAMPLE_IDENTITY)
    index = [{(s["set"], s["id"], s["question"]): s for s in (rec.get("samples") or [])} if status(rec) == "ok"
             else None for _, _, rec in columns]
    out = []
    for s in chosen:
        cells, systems = [], []
        for (label, _, _), idx in zip(columns, index):
            got = idx.get((s["set"], s["id"], s["question"])) if idx is not None else None
            if idx is None:
                cells.append({"gap": True})
                continue
            if got is None:
                cells.append({"answer": None})
                continue
            cells.append({"answer": got["answer"], "hit": bool(got.get("hit")), "echo": bool(got.get("echo"))})
            systems.append((label, got.get("system")))
        out.append({"set": s["set"], "id": s["id"], "question": s["question"], "expected": s["expected"],
                    "systems": [(label, "(no system prompt)" if sys_ is None else sys_) for label, sys_ in systems],
                    "cells": cells})
    return {"head": head, "rows": out}


def injection_report(rec: dict | None) -> dict | None:
    if status(rec) != "ok":
        return None
    inj = rec.get("injection") or {}
    matched = inj.get("matched") or []
    total = inj.get("total_params") or 0
    trainable = inj.get("trainable_params") or 0
    return {"targets": inj.get("targets") or [], "matched": len(matched), "paths": matched[:SHOW_PATHS],
            "more": max(len(matched) - SHOW_PATHS, 0), "trainable": f"{trainable:,}", "total": f"{total:,}",
            "share": f"{100 * trainable / total:.3f}%" if total else "n/a",
            "warning": "" if (inj.get("warning") or "") in (rec.get("strict_error") or "") else inj["warning"],
            "strict_error": rec.get("strict_error")}


def show_value(v) -> str:
    """A config value as written in ablation.yaml: strings bare, lists in brackets."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(show_value(x) for x in v) + "]"
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    return str(v)


def overrides(over: dict, resolved: dict | None) -> list[dict]:
    """Each override of the baseline; placeholders such as {pair.chat} also show what they resolved to."""
    out = []
    for k, v in (over or {}).items():
        shown = resolved.get(k) if resolved and isinstance(v, str) and v.startswith("{") else None
        out.append({"field": k, "value": show_value(v), "resolved": show_value(shown) if shown is not None else None})
    return out


def ablation_section(ab: dict, rows: list[dict], runs: dict, verdict: dict, fig_dir: Path) -> dict:
    name, arms = ab["name"], list(ab["arms"])
    metrics = [ab["signature"], *[m for m in ab.get("also") or [] if m != ab["signature"]]]
    regimes_meta = ab.get("regimes") or {"baseline": {}}
    any_row = {r["arm"]: r for r in rows}
    diff = [{"what": "arm", "name": a, "control": a == ab["control"],
             "overrides": overrides(ab["arms"][a], any_row.get(a, {}).get("config"))} for a in arms]
    diff += [{"what": "regime", "name": g, "control": False, "overrides": overrides(o, None)}
             for g, o in regimes_meta.items()]
    mark_best = name == "no_val_selection" or ab.get("factor") == "selection"
    show_injection = name == "wrong_layer_path" or ab.get("factor") == "lora_targets" or any(
        (runs.get(r["key"]) or {}).get("strict_error") for r in rows)
    regimes = []
    for regime in regimes_meta:
        rrows = [r for r in rows if r["regime"] == regime]
        by_arm = {a: [r for r in rrows if r["arm"] == a] for a in arms}
        stats = {a: {m: arm_stat(by_arm[a], runs, m) for m in metrics} for a in arms}
        figs = {}
        if rrows:
            figs["loss"] = loss_figure(ab, rrows, runs, fig_dir / f"{_slug(name, regime)}--loss.png", mark_best)
            if ab.get("kind") == "sweep":
                axis = ab.get("axis")
                axis_values = {a: by_arm[a][0]["config"].get(axis) for a in arms if by_arm[a]}
                figs["metrics"] = sweep_figure(ab, stats, metrics, axis_values,
                                               fig_dir / f"{_slug(name, regime)}--sweep.png")
            else:
                figs["metrics"] = metric_figure(ab, stats, metrics, fig_dir / f"{_slug(name, regime)}--metrics.png")
        comparisons = (verdict.get("comparisons") or {}).get(regime) or {}
        vrows = []
        for arm in arms:
            if arm == ab["control"]:
                continue
            for m in metrics:
                c = (comparisons.get(arm) or {}).get(m)
                vrows.append({"arm": arm, "metric": m, "signature": m == ab["signature"], "cmp": c,
                              "stale": stale(c, rrows, runs, (arm, ab["control"])),
                              "effect": effect_text(c), "verdict": (c or {}).get("verdict"),
                              "class": verdict_class((c or {}).get("verdict"))})
        shown = [(a, *pick_run(by_arm[a], runs)) for a in arms if by_arm[a]]
        problems = [{"arm": r["arm"], "seed": r["seed"], "key": r["key"], **gap(runs.get(r["key"]), r["key"])}
                    for r in rrows if status(runs.get(r["key"])) != "ok"]
        regimes.append({
            "name": regime, "figs": figs, "stats": stats, "verdicts": vrows, "problems": problems,
            "seeds": sorted({r["seed"] for r in rrows}), "samples": sample_table(shown) if shown else None,
            "injection": [{"arm": a, "seed": row["seed"], "report": injection_report(rec), "gap": gap(rec, row["key"])}
                          for a, row, rec in shown] if show_injection else None,
        })
    return {"name": name, "title": SEED_RECIPE_TITLE if name == "seed_recipe" else ab.get("title", name),
            "meta": ab, "metrics": metrics, "arms": arms, "diff": diff, "regimes": regimes,
            "confound": name in CONFOUNDED, "mark_best": mark_best}


def summary_row(ab: dict, rows: list[dict], runs: dict, verdict: dict) -> dict:
    regime = verdict.get("regime") or next(iter(ab.get("regimes") or {"baseline": {}}))
    arms = list(ab["arms"])
    rrows = [r for r in rows if r["regime"] == regime]
    comparisons = (verdict.get("comparisons") or {}).get(regime) or {}
    effects = []
    for arm in arms:
        if arm != ab["control"]:
            c = (comparisons.get(arm) or {}).get(ab["signature"])
            effects.append({"arm": arm, "text": effect_text(c), "method": (c or {}).get("method"),
                            "stale": stale(c, rrows, runs, (arm, ab["control"])),
                            "reason": (c or {}).get("reason")})
    problems = sum(status(runs.get(r["key"])) != "ok" for r in rows)
    return {"name": ab["name"], "title": SEED_RECIPE_TITLE if ab["name"] == "seed_recipe" else ab.get("title"),
            "factor": ab.get("factor"), "symptom": ab.get("symptom"), "signature": ab["signature"],
            "expected": ab.get("expected"), "control": ab["control"],
            "arms": [{"arm": a, **arm_stat([r for r in rrows if r["arm"] == a], runs, ab["signature"])} for a in arms],
            "verdict": verdict.get("verdict"), "class": verdict_class(verdict.get("verdict")),
            "regime": verdict.get("regime") or "", "shown_regime": regime, "effects": effects,
            "problems": problems, "confound": ab["name"] in CONFOUNDED}


def untrained_section(rows: list[dict], runs: dict) -> list[dict]:
    users: dict[str, list[str]] = {}
    for r in rows:
        if r.get("untrained_key"):
            users.setdefault(r["untrained_key"], [])
            if r["ablation"] not in users[r["untrained_key"]]:
                users[r["untrained_key"]].append(r["ablation"])
    out = []
    for key, abs_ in users.items():
        rec = runs.get(key)
        model = next((r["config"]["model"] for r in rows if r.get("untrained_key") == key), "?")
        entry = {"key": key, "model": model, "used_by": abs_, "gap": None if status(rec) == "ok" else gap(rec, key)}
        if status(rec) == "ok":
            ret = [s for s in rec.get("samples") or [] if s["set"] == "retention"]
            m = rec.get("metrics") or {}
            entry.update(
                model=rec["config"].get("model", model), asked=rec["config"].get("format"),
                format=rec.get("resolved_format") or rec["config"].get("format"),
                metrics={k: fmt(m.get(k)) for k, metric in METRICS.items() if m.get(k) is not None and not metric.needs_reference},
                kept=sum(bool(s.get("kept", s.get("hit"))) for s in ret), probes=len(ret),
                samples=sample_table([("untrained answer", {"seed": rec["config"].get("seed", 0), "key": key}, rec)]))
        out.append(entry)
    return out


def model_table(rows: list[dict], runs: dict) -> list[dict]:
    try:
        from .models import EMBEDDED, TINY
    except ImportError:  # the report must render even where the model code cannot be imported
        EMBEDDED, TINY = {}, "tiny-qwen2"
    specs = list(dict.fromkeys(r["config"]["model"] for r in rows))
    out = []
    for spec in specs:
        formats = sorted({(runs.get(r["key"]) or {}).get("resolved_format") or "?" for r in rows
                          if r["config"]["model"] == spec and status(runs.get(r["key"])) == "ok"} - {"?"})
        if spec in EMBEDDED:
            e = EMBEDDED[spec]
            hub = e.source.split(" (")[0]
            out.append({"spec": spec, "name": hub.split("/")[-1], "kind": e.kind, "licence": e.licence,
                        "licence_url": LICENCE_URLS.get(e.licence),
                        "source": e.source, "formats": formats})
        elif spec == TINY:
            out.append({"spec": spec, "name": "random 2-layer Qwen2 (unit-test model)",
                        "kind": "chat template, untrained", "licence": "-",
                        "source": "built in code (core/models.py)", "formats": formats})
        else:
            out.append({"spec": spec, "name": spec, "kind": "-", "licence": "the model's own",
                        "source": "Hugging Face hub id or local folder", "formats": formats})
    return out


def code_version() -> str:
    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return p.stdout if p.returncode == 0 else None

    commit = (git("rev-parse", "--short", "HEAD") or "").strip()
    if not commit:
        return "unknown"
    dirty = git("status", "--porcelain", "--", "core", "ablations", "data", "run_all.py")  # not its own outputs
    return commit + ("+dirty" if dirty and dirty.strip() else "")


def metadata_section(rows: list[dict], metas: dict, runs: dict) -> dict:
    used: dict[str, list[str]] = {}
    for r in rows:
        used.setdefault(r["key"], []).append(f"{r['ablation']} / {r['regime']} / {r['arm']} / seed {r['seed']}")
        if r.get("untrained_key"):
            label = f"untrained reference ({r['config']['model']}, format {r['config'].get('format')})"
            if label not in used.setdefault(r["untrained_key"], []):
                used[r["untrained_key"]].append(label)
    order = {name: i for i, name in enumerate(metas)}
    keys = sorted(used, key=lambda k: min(order.get(u.split(" / ")[0], -1) for u in used[k]))
    durations, totals = [], Counter()
    for key in keys:
        rec = runs.get(key)
        t = (rec or {}).get("timings") or {}
        durations.append({"key": key, "used_by": used[key], "status": status(rec),
                          "model": ((rec or {}).get("config") or {}).get("model", ""),
                          "error": (rec or {}).get("error") if status(rec) == "failed" else None,
                          **{k: fmt(t.get(k), 1) if t.get(k) is not None else ""
                             for k in ("load", "train", "eval", "total")}})
        for k in ("load", "train", "eval", "total"):
            totals[k] += t.get(k) or 0.0
    ok = [r for r in runs.values() if status(r) == "ok"]
    envs = Counter(json.dumps(r.get("environment") or {}, sort_keys=True) for r in ok)
    packages = {}
    for name in ("pandas", "matplotlib", "seaborn", "jinja2"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "seeds": sorted({r["seed"] for r in rows}),
        "environments": [{"env": json.loads(e), "runs": n} for e, n in envs.most_common()],
        "durations": durations, "totals": {k: f"{v:.1f}" for k, v in totals.items()},
        "counts": Counter(status(runs.get(k)) for k in keys),
        "report_packages": packages, "python": sys.version.split()[0],
        "code_version": code_version(),
        "data_sha256": sorted({r.get("data_sha256") for r in ok if r.get("data_sha256")}),
        "model_identities": sorted({r.get("model_identity") for r in ok if r.get("model_identity")}),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---- rendering ----------------------------------------------------------------------------------

def render(results_dir: Path = RESULTS, out_dir: Path = REPORT) -> Path:
    """Write out_dir/index.html and out_dir/figures/*.png from results_dir; returns the index path."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    rows, metas, verdicts, runs = load_results(results_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # figures of ablations or regimes that are gone must not linger
        old.unlink()
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)
    try:
        sections = [ablation_section(ab, [r for r in rows if r["ablation"] == name], runs, verdicts.get(name) or {},
                                     fig_dir) for name, ab in metas.items()]
    finally:
        plt.close("all")
    summary = [summary_row(ab, [r for r in rows if r["ablation"] == name], runs, verdicts.get(name) or {})
               for name, ab in metas.items()]
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    html = env.get_template("report.html.j2").render(
        css=Markup((TEMPLATES / "report.css").read_text()),  # our own file, not results text
        question=QUESTION, models=model_table(rows, runs), summary=summary, sections=sections,
        untrained=untrained_section(rows, runs), meta=metadata_section(rows, metas, runs),
    )
    write_atomic(out_dir / "index.html", html)
    return out_dir / "index.html"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.report", description="Re-render the report from stored results.")
    p.add_argument("--results", default=str(RESULTS), help="results folder (default results/)")
    p.add_argument("--out", default=str(REPORT), help="report folder (default report/)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        out = render(Path(args.results), Path(args.out))
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report written to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
