"""The HTML report: results/ (plan.json, runs/, verdicts.json) -> an index page that answers the question (findings,
forest plot, summary, links to the evidence), one page per ablation, a page on the untrained model and one with the
run metadata, plus their figures (core/report/figures.py), all inside the report folder.

It only reads results, so `python -m core.report` re-renders at any time without training. A run that
is missing or failed is shown as a marked gap with its error, never as a zero.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from core.analysis.verdicts import WORDS, AblationVerdict
from core.files import write_atomic
from core.paths import REPORT, RESULTS
from core.report import figures, study_figures
from core.report.data import ReportError, load_results, status, study_totals
from core.report.evidence import evidence_files, results_href
from core.report.figures import fmt
from core.report.findings import REMEDY_WORDS, findings
from core.report.frontier import recipe_rows
from core.report.sections import ablation_section, model_table, summary_row, untrained_section
from core.study.store import PlanRow

__all__ = ["QUESTION", "ReportError", "main", "render"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
QUESTION = "Can LoRA inject personal facts into a small chat model, and what breaks it?"
GENERATOR = "hiahia-lora report"  # marks the pages this module wrote, so that a re-render removes stale ones
UNTRAINED_PAGE, METADATA_PAGE = "untrained-model.html", "run-metadata.html"  # hyphens: no ablation name has one


# ---- run metadata ---------------------------------------------------------------------------------

ENV_COLUMNS = ("python", "torch", "transformers", "device", "cuda", "cpu_model", "processor", "cpu_bf16", "cpu_count",
               "torch_threads", "platform", "precision", "code_version")


def verdict_meanings() -> dict[str, str]:
    """Each verdict word's one-line definition (verdicts.WORDS), and the words a remedy's verdict reads as."""
    meanings = {w.word: w.meaning for w in WORDS}
    return meanings | {shown: f"for a remedy the original never tried: {meanings[word]}"
                       for word, shown in REMEDY_WORDS.items()}

def metadata_section(rows: list[PlanRow], metas: dict, runs: dict) -> dict:
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
        t = rec.timings if rec else {}
        durations.append({"key": key, "used_by": used[key], "status": status(rec),
                          "model": rec.config.get("model", "") if rec else "",
                          "error": rec.error if status(rec) == "failed" else None,
                          **{k: fmt(t.get(k), 1) if t.get(k) is not None else ""
                             for k in ("load", "train", "eval", "total")}})
        for k in ("load", "train", "eval", "total"):
            totals[k] += t.get(k) or 0.0
    ok = [r for r in runs.values() if status(r) == "ok"]
    # one row per machine and code as the table shows them (each run's git commit and timing would split the rest)
    envs = Counter(json.dumps({k: r.environment.get(k) for k in ENV_COLUMNS}, sort_keys=True) for r in ok)
    return {
        "seeds": sorted({r["seed"] for r in rows}),
        "environments": [{"env": json.loads(e), "runs": n} for e, n in envs.most_common()],
        "durations": durations, "totals": {k: f"{v:.1f}" for k, v in totals.items()},
        "other_phases": f"{totals['total'] - totals['load'] - totals['train'] - totals['eval']:.1f}",
        "code_versions": sorted({r.environment["code_version"] for r in ok if r.environment.get("code_version")}),
        "counts": study_totals(rows, runs),
        "data_sha256": sorted({r.data_sha256 for r in ok if r.data_sha256}),
        "model_identities": sorted({r.model_identity for r in ok if r.model_identity}),
        # the pages are a function of the results alone: their date is the last run's, never the rendering's
        "finished": max((r.finished for r in ok if r.finished), default="")[:16].replace("T", " "),
    }


# ---- rendering ----------------------------------------------------------------------------------

def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env


def _figures(metas: dict, rows: list[PlanRow], runs: dict, verdicts: dict, found: dict, fig_dir: Path):
    """(ablation pages' data, forest plot, frontier plot), with every figure written under fig_dir."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in [*fig_dir.glob("*.png"), *fig_dir.glob("*.svg")]:  # figures of ablations or regimes that are gone
        old.unlink()                                                 # must not linger
    figures.theme()
    answers = {a["name"]: a for part in found["answer"] for a in part["rows"]}
    try:
        sections = []
        for name, ab in metas.items():
            s = ablation_section(ab, [r for r in rows if r["ablation"] == name], runs,
                                 verdicts.get(name) or AblationVerdict(), fig_dir)
            # the page's summary: the first screen's sentence and the deciding comparisons' effects
            s["answer"] = answers.get(name)
            s["forest"] = study_figures.forest_figure([r for r in found["forest"] if r["ablation"] == name],
                                                fig_dir / f"{figures.slug(name)}--forest.svg", one_ablation=True)
            sections.append(s)
        forest = study_figures.forest_figure(found["forest"], fig_dir / "forest.png")
        roles = {row["name"]: part["role"] for part in found["answer"] for row in part["rows"]}
        baseline = frozenset(r["key"] for r in recipe_rows(metas, rows))
        frontier = study_figures.frontier_figure(rows, runs, fig_dir / "frontier.png", roles, baseline)
    finally:
        figures.close_all()
    return sections, forest, frontier


def _remove_stale_pages(out_dir: Path, pages: set[str]) -> None:
    """Delete pages an earlier render wrote (ablations that are gone), never a page this module did not write."""
    for old in out_dir.glob("*.html"):
        if old.name not in pages and GENERATOR in old.read_text(errors="replace")[:2000]:
            old.unlink()


def render(results_dir: Path = RESULTS, out_dir: Path = REPORT) -> Path:
    """Write out_dir/index.html, one out_dir/<ablation>.html each, the untrained-model and run-metadata pages and
    out_dir/figures/*.png from results_dir; returns the index path. Links to results_dir are relative."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    rows, metas, verdicts, runs = load_results(results_dir)
    found = findings(metas, verdicts, rows, runs)
    sections, forest, frontier = _figures(metas, rows, runs, verdicts, found, out_dir / "figures")
    summary = [summary_row(ab, [r for r in rows if r["ablation"] == name], runs,
                           verdicts.get(name) or AblationVerdict()) for name, ab in metas.items()]
    meta = metadata_section(rows, metas, runs)
    href = results_href(results_dir, out_dir)
    models = model_table(rows, runs)
    common = dict(css=Markup((TEMPLATES / "report.css").read_text()),  # our own file, not results text
                  question=QUESTION, meta=meta, results=href, generator=GENERATOR, sections=sections,
                  untrained_page=UNTRAINED_PAGE, metadata_page=METADATA_PAGE,
                  seed_slots=max((len(g["seeds"]) for s in sections for g in s["regimes"]), default=1),
                  meanings=verdict_meanings())
    env = _environment()
    pages = {"index.html": env.get_template("index.html.j2").render(
        **common, page="index", summary=summary, findings=found, forest=forest, frontier=frontier,
        models=models, evidence=evidence_files(results_dir, href), verdict_words=[(w.word, w.css) for w in WORDS])}
    for s in sections:
        pages[f"{s['name']}.html"] = env.get_template("ablation.html.j2").render(**common, page=s["name"], s=s)
    pages[UNTRAINED_PAGE] = env.get_template("untrained.html.j2").render(
        **common, page="untrained", untrained=untrained_section(rows, runs))
    pages[METADATA_PAGE] = env.get_template("metadata.html.j2").render(
        **common, page="metadata", models=models)
    _remove_stale_pages(out_dir, set(pages))
    for name, html in pages.items():
        write_atomic(out_dir / name, html)
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
