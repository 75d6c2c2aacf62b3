"""The run_all command line: check the input, plan, execute, write the verdicts and summaries, render the report.

Every arm is the baseline RunConfig plus a regime's overrides plus the arm's own overrides (core/study/ablation.py);
runs are cached by key in results/runs/, so identical configs are trained once and a rerun resumes.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from pathlib import Path

from core.exits import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNS_FAILED, EXIT_RUNS_PENDING
from core.files import clean_stale_temps
from core.paths import ABLATIONS, RESULTS
from core.run import model_cache, models
from core.run.config import RunConfig, parse_overrides, training_of
from core.run.knowledge import DEFAULT_DATA, load_knowledge, load_replay
from core.study import executors
from core.study.ablation import SuiteError, discover, select
from core.study.execute import execute
from core.study.plan import build_plan, confirmation_ceiling, estimated_seconds, key_context, resolve_models
from core.analysis.verdicts import CONFIRM_SEEDS
from core.study.store import PlanRow, load_run, planned_keys
from core.study.summary import (
    link_runs,
    output_folder,
    published_precision,
    refresh_summary,
    report_folder,
    save_summary,
)

EXIT_CODES = f"""exit status:
  {EXIT_OK}  every planned run finished
  {EXIT_BAD_INPUT}  bad input: the command line, a YAML file, a config value, a model, the results folder
     (one line on stderr, checked before anything is written)
  {EXIT_RUNS_FAILED}  finished, but some runs are stored as failed (their keys are listed; rerun them with --force)
  {EXIT_RUNS_PENDING}  finished, but some runs were still being trained by another invocation after --wait seconds"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_all.py", description="Run the hiahia LoRA ablation suite and render the report.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="comma-separated ablation names (default: all); see --list")
    p.add_argument("--seeds", type=int, help="at most this many seeds per arm (default: the seeds each ablation.yaml "
                                             "declares, 5 to 10, and up to 15 where confirmation seeds are added; "
                                             "--list shows them)")
    p.add_argument("--model", help="chat model for every arm (embedded name, hub id or folder); same as --set model=...")
    p.add_argument("--pair", help="named model pair for the ablations whose ablation.yaml declares pairs: "
                                   "(default: each one's first; --list shows them)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    models.add_precision_argument(p)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="knowledge file in the schema of data/hiahia.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a baseline RunConfig field")
    p.add_argument("--results", default=str(RESULTS), help=(
        "results folder (default results/, the published study: only a run of the whole published plan writes its "
        "plan, verdicts, summary and report there; any other run reuses and adds its runs but writes those into "
        "results/partial/<name>/). With another folder, everything goes inside it, the report into DIR/report"))
    p.add_argument("--report", metavar="DIR", help="where the report goes (default: report/ for the published study, "
                                                   "else the results folder's report/)")
    p.add_argument("--cache-dir", help=f"model cache (default ${model_cache.CACHE_ENV} or ~/.cache/hiahia-lora)")
    p.add_argument("--force", action="store_true", help="rerun even cached runs")
    p.add_argument("--wait", type=float, default=3600.0, metavar="SECONDS",
                   help="how long to wait at the end for runs another invocation is training (default 3600)")
    p.add_argument("--list", action="store_true", help="list the ablations and their arms, then exit")
    p.add_argument("--report-only", action="store_true", help="re-render the report from the results folder without "
                                                              "training")
    p.add_argument("--no-report", action="store_true", help="do not render the report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    executors.add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return _main(args)
    except (SuiteError, KeyError, ValueError, models.ModelError) as e:
        msg = e.args[0] if e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # an unreadable input or an unwritable results folder: one line, not a traceback
        msg = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT


def check_results_folder(results: Path, need_plan: bool = False) -> None:
    """A usable results folder, or a SuiteError naming the problem (nothing is created here)."""
    if results.exists() and not results.is_dir():
        raise SuiteError(f"--results {results} is a file, not a folder: name a folder (it is created if missing)")
    if need_plan and not (results / "plan.json").is_file():
        raise SuiteError(f"{results} has no plan.json: run `python run_all.py` first, or pass --results with a "
                         f"folder it wrote")
    if (results / "runs").exists() and not (results / "runs").is_dir():
        raise SuiteError(f"{results / 'runs'} is a file, not a folder: move it away")
    existing = next(p for p in (results / "runs", results, *results.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SuiteError(f"results folder {existing} is not writable: fix its permissions or pass --results elsewhere")


def _list(chosen: list, plan: list[PlanRow], ceiling: list[PlanRow], results: Path) -> int:
    """The ablations, then the plan: run records, trainings, what is stored, and the CPU time left, estimated from
    the stored runs' times."""
    for ab in chosen:
        pairs = f"  pairs: {', '.join(ab.pairs)}" if ab.pairs else ""
        print(f"{ab.name:24s} {ab.title}  arms: {', '.join(ab.arms)}  regimes: {', '.join(ab.regimes)}  "
              f"seeds: {ab.seeds}{pairs}")
    stored = [r for p in sorted((results / "runs").glob("*.json")) if (r := load_run(results, p.stem)) is not None]
    have = {r.key for r in stored}
    trainings = {training_of(r["config"].to_dict()) for r in plan if r["config"].epochs}
    pending = [r for r in plan if r["key"] not in have]
    left = {training_of(r["config"].to_dict()) for r in pending if r["config"].epochs}
    extra = [r for r in ceiling if r["key"] not in have and r["key"] not in {p["key"] for p in plan}]
    extra_trainings = {training_of(r["config"].to_dict()) for r in extra} - left
    def hours(rows, beside=()) -> str:  # beside: rows already counted (their trainings and untrained references)
        seconds = estimated_seconds([*beside, *rows], stored)
        if seconds is not None and beside:
            seconds -= estimated_seconds(list(beside), stored)
        return (f"about {seconds / 3600:.1f} CPU hours at the stored runs' times" if seconds is not None
                else "no stored run to time them by")

    print(f"\nplan: {len(planned_keys(plan))} run records, {len(trainings)} trainings; {len(left)} trainings left, "
          f"{hours(pending)}")
    print(f"confirmation seeds (up to {CONFIRM_SEEDS}, only for a primary comparison below min_effect at its "
          f"declared seeds): at most {len(extra_trainings)} more trainings, {hours(extra, pending)}")
    return EXIT_OK


def _report_only(args, results: Path, available: dict) -> int:
    """Verdicts, summary and report again from the stored runs (they follow the current ablation definitions)."""
    check_results_folder(results, need_plan=True)
    clean_stale_temps(results)
    saved = refresh_summary(results, available)
    if saved.missing:
        logging.getLogger("run_all").warning(
            "the published study is unfinished (%d planned runs not finished yet): its verdicts are provisional "
            "and go, with the summary and report, to %s; the published files stay as they are",
            len(saved.missing), saved.folder)
    return _render(saved.folder, report_folder(args, saved.folder))


def _check_arguments(args, available: dict) -> None:
    declared_pairs = list(dict.fromkeys(p for ab in available.values() for p in ab.pairs))
    if args.pair is not None and args.pair not in declared_pairs:
        raise SuiteError(f"unknown --pair {args.pair!r}; valid: {', '.join(declared_pairs)}")
    if args.seeds is not None and args.seeds < 1:
        raise SuiteError("--seeds must be >= 1")
    if not args.wait >= 0:
        raise SuiteError("--wait must be a number of seconds >= 0")


def _main(args) -> int:
    results = Path(args.results)
    available = discover(ABLATIONS)
    chosen = select(available, args.only)
    if args.report_only:
        return _report_only(args, results, available)
    _check_arguments(args, available)
    overrides = parse_overrides(args.set)
    if args.model:
        overrides["model"] = args.model
    baseline = RunConfig().replace(**overrides)
    knowledge = load_knowledge(args.data)
    precision = args.precision or published_precision(results)
    if precision and not args.precision:
        logging.getLogger("run_all").info("precision %s: the published study's, as its stored runs record (pass "
                                          "--precision to plan another)", precision)
    executor = executors.from_args(args, models.mixed_for(precision))
    # the replay file is read (and validated) only if a run uses replay
    replay_sha = functools.cache(lambda: load_replay(knowledge).sha256)

    def context_of(cfg: RunConfig) -> str:
        return key_context(cfg, knowledge.sha256, args.device, replay_sha if cfg.replay else None,
                           executor.precision_tag)

    check_results_folder(results)
    stored = functools.partial(load_run, results)
    plan = build_plan(chosen, baseline, args.seeds, args.pair, context_of, None if args.force else stored)
    if args.list:
        ceiling = confirmation_ceiling(chosen, baseline, args.pair, context_of) if args.seeds is None else []
        return _list(chosen, plan, ceiling, results)
    out = output_folder(args, results, plan,
                        lambda: build_plan(list(available.values()), RunConfig(), None, None, context_of))
    resolve_models(plan, results, args.force, baseline, args.cache_dir, executor.resolve)
    # everything is checked: from here on, the results folder is written
    for folder in (results / "runs", out):
        folder.mkdir(parents=True, exist_ok=True)
    for folder in (results, results / "runs", out):
        clean_stale_temps(folder)
    if out != results:
        logging.getLogger("run_all").info("a partial run: the published files stay as they are; plan, verdicts, "
                                          "summary and report go to %s", out)
    start = time.perf_counter()
    save_summary(out, chosen, plan, {}, results)  # the plan is on disk first: unfinished results can be rendered
    records = execute(plan, knowledge, results, args.device, args.cache_dir, args.force, not args.quiet, context_of,
                      baseline, args.wait, executor)
    while len(grown := build_plan(chosen, baseline, args.seeds, args.pair, context_of, records.get)) > len(plan):
        # primary comparisons below min_effect at their declared seeds: their confirmation seeds, then look again
        logging.getLogger("run_all").info("%d confirmation runs planned: 'not reproduced' needs %d seeds",
                                          len(grown) - len(plan), CONFIRM_SEEDS)
        plan = grown
        save_summary(out, chosen, plan, records, results)
        records = {**records, **execute(plan, knowledge, results, args.device, args.cache_dir, False, not args.quiet,
                                        context_of, baseline, args.wait, executor)}
    if out != results:
        link_runs(results, out, records)
    summary, written, _ = save_summary(out, chosen, plan, records, results)
    if written != out:
        print(f"\nthe study is unfinished: its provisional verdicts, summary and report are in {written}")
    print(f"\nfinished in {time.perf_counter() - start:.0f} s")
    for ab in chosen:
        s = summary[ab.name]
        print(f"  {ab.name:24s} {s.verdict:15s} (regime: {s.regime or '-'})")
    if not args.no_report:
        _render(written, report_folder(args, written))
    return _final_status(plan, records, results)


def _final_status(plan: list[PlanRow], records: dict, results: Path) -> int:
    """Exit status after everything is written: one line each for failed and for still-pending runs."""
    keys = planned_keys(plan)
    failed = [k for k in keys if k in records and not records[k].ok]
    pending = [k for k in keys if k not in records]
    if failed:
        print(f"{len(failed)} run(s) stored as failed: {', '.join(failed)}; the errors are in "
              f"{results / 'runs'}/<key>.json (rerun them with --force)", file=sys.stderr)
    if pending:
        print(f"{len(pending)} run(s) still being trained by another invocation: {', '.join(pending)}; run again "
              f"later to include them", file=sys.stderr)
    return EXIT_RUNS_FAILED if failed else EXIT_RUNS_PENDING if pending else EXIT_OK


def _render(results: Path, report: Path) -> int:
    try:
        from core.report.render import render
    except ImportError:
        print("report module not available; results are in", results)
        return EXIT_OK
    out = render(results, report)
    print(f"report written to {out}")
    return EXIT_OK
