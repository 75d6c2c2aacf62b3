"""The run plan, its execution, the verdicts and summaries, and the run_all command line.

Every arm is the baseline RunConfig plus a regime's overrides plus the arm's own overrides (core/ablation.py);
runs are cached by config key in results/runs/, so identical configs are trained once and a rerun resumes.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from tqdm.auto import tqdm

from . import executors, model_cache, models
from .ablation import ABLATIONS, Ablation, SuiteError, discover, select
from .config import RunConfig, parse_overrides
from .knowledge import DEFAULT_DATA, load_knowledge, load_replay
from .record import RunRecord
from .summary import link_runs, output_folder, refresh_summary, report_folder, save_summary
from .results import RESULTS, clean_stale_temps, load_run, lock_path, planned_keys, try_lock, unlock, write_run

# ---- plan and execution -------------------------------------------------------------------------

def build_plan(ablations: list[Ablation], baseline: RunConfig, seeds: int | None, pair: str | None,
               key_context) -> list[dict]:
    """One row per (ablation, regime, arm, seed) with its config and cache key. pair: the --pair name for ablations
    that declare pairs (None: each one's first); key_context(cfg): what besides the config keys a run."""
    rows = []
    for ab in ablations:
        for seed in range(ab.seeds if seeds is None else min(seeds, ab.seeds)):
            for (regime, arm), cfg in ab.configs(baseline, seed, pair).items():
                before = untrained_config(cfg, baseline)
                rows.append({"ablation": ab.name, "regime": regime, "arm": arm, "seed": seed, "config": cfg,
                             "key": cfg.key(key_context(cfg)), "untrained_key": before.key(key_context(before))})
    return rows


def key_context(cfg: RunConfig, data_sha256: str, device: str, replay_sha=None, precision_tag=None) -> str:
    """Everything outside the config that decides a run's results, for its cache key: the model's
    weights, the data, and where and in which precision it computes (cpu-fp32 and cuda-bf16-mixed runs
    never share a key). precision_tag(device, trains_all_weights): the executor's, where runs compute."""
    precision = (precision_tag(device, cfg.full_finetune) if precision_tag
                 else models.pick_precision(device, trains_all_weights=cfg.full_finetune).tag)
    parts = [models.weights_fingerprint(cfg.model), data_sha256, precision]
    return "|".join(parts + ([f"replay:{replay_sha()}"] if replay_sha else []))


def untrained_config(cfg: RunConfig, baseline: RunConfig) -> RunConfig:
    """The 'before' reference for cfg's model and format: the baseline (with --set overrides), untrained."""
    return baseline.replace(model=cfg.model, format=cfg.format, epochs=0, seed=0)


WAIT_POLL_S = 2.0  # how often a run held by another invocation is looked at again


def execute(plan: list[dict], knowledge, results: Path, device: str, cache, force: bool, progress: bool,
            key_context, baseline: RunConfig, wait: float = 3600.0, executor=None) -> dict[str, RunRecord]:
    """Run every pending config (untrained references first); returns {key: record}.

    Each training group is claimed with lock files in results/runs/, so invocations sharing the folder
    never train the same run: one held by another invocation is skipped, and looked at again at the end
    for up to `wait` seconds (its record is then read; a lock its dead owner left is taken over).
    The executor (core/executors.py; default: in this process, one at a time) trains up to its capacity
    of claimed groups at once; each record is stored here, atomically, as its group finishes."""
    executor = executor or executors.LocalExecutor()
    refs = {row["untrained_key"]: untrained_config(row["config"], baseline) for row in plan}
    reference_of = {row["key"]: row["untrained_key"] for row in plan}
    wanted: dict[str, RunConfig] = {**refs, **{row["key"]: row["config"] for row in plan}}
    records = {} if force else {k: r for k in wanted if (r := load_run(results, k)) is not None}
    pending = [k for k in wanted if k not in records]
    # configs differing only in selection share one training
    groups: dict[str, list[str]] = {}
    for k in pending:
        groups.setdefault(wanted[k].replace(selection="best").key(key_context(wanted[k])), []).append(k)
    todo = sorted(groups.values(), key=lambda ks_: wanted[ks_[0]].epochs != 0)
    log = logging.getLogger("run_all")
    log.info("%d configs planned, %d cached, %d to run in %d trainings", len(wanted), len(records), len(pending),
             len(todo))
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress, dynamic_ncols=True)
    waited: set[str] = set()  # keys another invocation held: its records are taken, even with --force
    running: dict[tuple, ExitStack] = {}  # keys handed to the executor -> the locks of their group
    opened = []  # the executor starts (Ray: an instance or a connection) only once there is something to run

    def claim_and_submit(keys: list[str], reference: dict | None) -> dict | None:
        """Lock every key of one training group and submit those still without a record; None when claimed,
        else the holder of a lock another invocation has (nothing is submitted then)."""
        claimed = ExitStack()
        with claimed:
            for k in keys:
                if (holder := try_lock(lock_path(results, k))) is not None:
                    return holder
                claimed.callback(unlock, lock_path(results, k))
            for k in keys:  # finished meanwhile by another invocation
                if (not force or k in waited) and (rec := load_run(results, k)) is not None:
                    records[k] = rec
            if fresh := [k for k in keys if k not in records]:
                cfgs = [wanted[k] for k in fresh]
                if not opened:
                    opened.append(executor)  # closed at the end even if opening fails half-way
                    executor.open(knowledge, device, cache, progress)
                executor.submit(executors.Job(fresh, cfgs, reference))
                running[tuple(fresh)] = claimed.pop_all()  # held until the records are stored
                bar.set_postfix_str(f"{len(running)} running" if executor.capacity > 1 else
                                    f"{cfgs[0].model} seed={cfgs[0].seed} "
                                    f"{'untrained' if not cfgs[0].epochs else fresh[0][:8]}")
                return None
        bar.update(1)
        return None

    def store(job: executors.Job, recs: list) -> None:
        for key, rec in zip(job.keys, recs):
            rec = rec if isinstance(rec, RunRecord) else RunRecord.from_json(rec)
            rec.key = key
            write_run(results, rec)
            records[key] = rec
            log.info("stored run %s (%s)", key, rec.status)
            if rec.status != "ok":
                log.warning("run %s failed: %s", key, rec.error)
        running.pop(tuple(job.keys)).close()
        bar.update(1)

    deadline, noted = time.monotonic() + wait, None
    try:
        while todo or running:
            held, later = {}, []
            for keys in todo:
                reference = reference_of.get(keys[0]) if wanted[keys[0]].epochs else None
                if reference and reference not in records:
                    if any(reference in group for group in running):  # trained right now by this invocation
                        later.append(keys)
                    else:  # its untrained reference is another invocation's
                        held[tuple(keys)] = None
                elif len(running) >= executor.capacity:
                    later.append(keys)
                elif holder := claim_and_submit(keys, records[reference].retention_correct if reference
                                                else None):
                    held[tuple(keys)] = holder
                    waited.update(keys)
            todo = [keys for keys in todo if keys in later or tuple(keys) in held]
            if running:
                for job, recs in executor.wait():
                    store(job, recs)
                continue
            if not todo or time.monotonic() > deadline:
                break
            if noted is None or time.monotonic() - noted > 60:
                owners = sorted({f"pid {h['pid']} on {h['host']}" for h in held.values() if h})
                log.info("waiting for %d training(s) another invocation (%s) holds in %s; up to %.0f s more",
                         len(todo), ", ".join(owners) or "holding their untrained reference", results / "runs",
                         deadline - time.monotonic())
                noted = time.monotonic()
            time.sleep(WAIT_POLL_S)
    finally:
        for locks in running.values():  # interrupted: nothing stored for these, their locks are released
            locks.close()
        for ex in opened:
            ex.close()
    bar.close()
    return records


# ---- command line -----------------------------------------------------------------------------

EXIT_OK, EXIT_BAD_INPUT, EXIT_RUNS_FAILED, EXIT_RUNS_PENDING = 0, 2, 3, 4
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
                                             "declares, 5 or 3; --list shows them)")
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
    models.set_precision_choice(args.precision)
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


def resolve_models(plan: list[dict], results: Path, force: bool, baseline: RunConfig, cache, resolve=None) -> None:
    """Check every model a pending run will load (fetching, converting and verifying embedded ones) before
    anything is written; a model whose runs are all stored is not needed."""
    needed = {}  # an ordered set
    for row in plan:
        for key, cfg in ((row["key"], row["config"]), (row["untrained_key"], untrained_config(row["config"], baseline))):
            if cfg.model not in needed and (force or load_run(results, key) is None):
                needed[cfg.model] = True
    for spec in needed:
        (resolve or models.resolve)(spec, cache)


def _main(args) -> int:
    results = Path(args.results)
    available = discover(ABLATIONS)
    chosen = select(available, args.only)
    if args.list:
        for ab in chosen:
            pairs = f"  pairs: {', '.join(ab.pairs)}" if ab.pairs else ""
            print(f"{ab.name:24s} {ab.title}  arms: {', '.join(ab.arms)}  regimes: {', '.join(ab.regimes)}  "
                  f"seeds: {ab.seeds}{pairs}")
        return EXIT_OK
    if args.report_only:  # verdicts follow the current code and ablation definitions
        check_results_folder(results, need_plan=True)
        clean_stale_temps(results)
        saved = refresh_summary(results, available)
        if saved.missing:
            logging.getLogger("run_all").warning(
                "the published study is unfinished (%d planned runs not finished yet): its verdicts are provisional "
                "and go, with the summary and report, to %s; the published files stay as they are",
                len(saved.missing), saved.folder)
        return _render(saved.folder, report_folder(args, saved.folder))
    declared_pairs = list(dict.fromkeys(p for ab in available.values() for p in ab.pairs))
    if args.pair is not None and args.pair not in declared_pairs:
        raise SuiteError(f"unknown --pair {args.pair!r}; valid: {', '.join(declared_pairs)}")
    if args.seeds is not None and args.seeds < 1:
        raise SuiteError("--seeds must be >= 1")
    if not args.wait >= 0:
        raise SuiteError("--wait must be a number of seconds >= 0")
    overrides = parse_overrides(args.set)
    if args.model:
        overrides["model"] = args.model
    baseline = RunConfig().replace(**overrides)
    knowledge = load_knowledge(args.data)
    executor = executors.from_args(args)
    # the replay file is read (and validated) only if a run uses replay
    replay_sha = functools.cache(lambda: load_replay(knowledge).sha256)

    def context_of(cfg: RunConfig) -> str:
        return key_context(cfg, knowledge.sha256, args.device, replay_sha if cfg.replay else None,
                           executor.precision_tag)

    plan = build_plan(chosen, baseline, args.seeds, args.pair, context_of)
    check_results_folder(results)
    out = output_folder(args, results, plan,
                        lambda: build_plan(list(available.values()), RunConfig(), None, None, context_of))
    resolve_models(plan, results, args.force, baseline, args.cache_dir, executor.resolve)
    # everything is checked: from here on, the results folder is written
    for folder in (results / "runs", out):
        folder.mkdir(parents=True, exist_ok=True)
    for folder in (results, results / "runs", out):
        clean_stale_temps(folder)
    if out != results:
        log = logging.getLogger("run_all")
        log.info("a partial run: the published files stay as they are; plan, verdicts, summary and report go to %s",
                 out)
    start = time.perf_counter()
    save_summary(out, chosen, plan, {}, results)  # the plan is on disk first: unfinished results can be rendered
    records = execute(plan, knowledge, results, args.device, args.cache_dir, args.force, not args.quiet, context_of,
                      baseline, args.wait, executor)
    if out != results:
        link_runs(results, out, records)
    summary, written, _ = save_summary(out, chosen, plan, records, results)
    if written != out:
        print(f"\nthe study is unfinished: its provisional verdicts, summary and report are in {written}")
    print(f"\nfinished in {time.perf_counter() - start:.0f} s")
    for ab in chosen:
        s = summary[ab.name]
        print(f"  {ab.name:24s} {s['verdict']:15s} (regime: {s['regime'] or '-'})")
    if not args.no_report:
        _render(written, report_folder(args, written))
    return _final_status(plan, records, results)


def _final_status(plan: list[dict], records: dict, results: Path) -> int:
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
        from .report import render
    except ImportError:
        print("report module not available; results are in", results)
        return EXIT_OK
    out = render(results, report)
    print(f"report written to {out}")
    return EXIT_OK
