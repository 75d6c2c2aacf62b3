"""The plan executed: every pending run trained once (configs that differ only in `selection` or `interpolate`
share one training), claimed with lock files so that invocations sharing a results folder never train the same
run, stored as it finishes."""
from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import ExitStack
from pathlib import Path

from tqdm.auto import tqdm

from core.files import try_lock, unlock
from core.run.config import RunConfig, training_of
from core.run.evaluate import Reference
from core.run.record import RunRecord
from core.study import executors
from core.study.plan import untrained_config
from core.study.store import PlanRow, load_run, lock_path, write_run

WAIT_POLL_S = 2.0  # how often a run held by another invocation is looked at again
# Tests only: the driver kills itself with SIGKILL once this many training groups are running (handed to the
# executor, none stored yet), so a killed-driver test kills it at an exact point instead of after a sleep.
KILL_DRIVER_AT_RUNNING = "HIAHIA_TEST_KILL_DRIVER_AT_RUNNING"

log = logging.getLogger("run_all")


def execute(plan: list[PlanRow], knowledge, results: Path, device: str, cache, force: bool, progress: bool,
            key_context, baseline: RunConfig, wait: float = 3600.0, executor=None) -> dict[str, RunRecord]:
    """Run every pending config (untrained references first); returns {key: record}.

    Each training group is claimed with lock files in results/runs/, so invocations sharing the folder
    never train the same run: one held by another invocation is skipped, and looked at again at the end
    for up to `wait` seconds (its record is then read; a lock its dead owner left is taken over).
    The executor (core/study/executors.py; default: in this process, one at a time) trains up to its capacity
    of claimed groups at once; each record is stored here, atomically, as its group finishes."""
    run = _Execution(plan, results, baseline, force, executor or executors.LocalExecutor())
    todo = run.trainings(key_context)
    run.bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress, dynamic_ncols=True)
    try:
        run.loop(todo, wait, lambda: run.executor.open(knowledge, device, cache, progress))
    finally:
        run.close()
    return run.records


class _Execution:
    """One invocation's execution: what it wants, what is stored, what it has handed to the executor."""

    def __init__(self, plan: list[PlanRow], results: Path, baseline: RunConfig, force: bool, executor):
        self.results, self.force, self.executor = results, force, executor
        refs = {row["untrained_key"]: untrained_config(row["config"], baseline) for row in plan}
        self.reference_of = {row["key"]: row["untrained_key"] for row in plan}
        self.wanted: dict[str, RunConfig] = {**refs, **{row["key"]: row["config"] for row in plan}}
        self.records = {} if force else {k: r for k in self.wanted if (r := load_run(results, k)) is not None}
        self.waited: set[str] = set()  # keys another invocation held: its records are taken, even with --force
        self.running: dict[tuple, ExitStack] = {}  # keys handed to the executor -> the locks of their group
        self.opened = False  # the executor starts (Ray: an instance or a connection) only once there is work
        self.bar = None

    def trainings(self, key_context) -> list[list[str]]:
        """The pending keys grouped by training, untrained references first."""
        pending = [k for k in self.wanted if k not in self.records]
        groups: dict[str, list[str]] = {}
        for k in pending:
            cfg = self.wanted[k]
            groups.setdefault(str((training_of(cfg.to_dict()), key_context(cfg))), []).append(k)
        todo = sorted(groups.values(), key=lambda keys: self.wanted[keys[0]].epochs != 0)
        log.info("%d configs planned, %d cached, %d to run in %d trainings", len(self.wanted), len(self.records),
                 len(pending), len(todo))
        return todo

    def loop(self, todo: list[list[str]], wait: float, open_executor) -> None:
        deadline, noted = time.monotonic() + wait, None
        while todo or self.running:
            todo, held = self.submit_ready(todo, open_executor)
            if self.running:
                for job, recs in self.executor.wait():
                    self.store(job, recs)
                continue
            if not todo or time.monotonic() > deadline:
                break
            if noted is None or time.monotonic() - noted > 60:
                owners = sorted({f"pid {h['pid']} on {h['host']}" for h in held.values() if h})
                log.info("waiting for %d training(s) another invocation (%s) holds in %s; up to %.0f s more",
                         len(todo), ", ".join(owners) or "holding their untrained reference", self.results / "runs",
                         deadline - time.monotonic())
                noted = time.monotonic()
            time.sleep(WAIT_POLL_S)

    def submit_ready(self, todo: list[list[str]], open_executor) -> tuple[list[list[str]], dict]:
        """Submit each group whose reference is stored, up to the executor's capacity; returns the groups left
        and, for those another invocation holds, the lock holder (None: it holds their untrained reference)."""
        held, later = {}, []
        for keys in todo:
            reference = self.reference_of.get(keys[0]) if self.wanted[keys[0]].epochs else None
            if reference and reference not in self.records:
                if any(reference in group for group in self.running):  # trained right now by this invocation
                    later.append(keys)
                else:  # its untrained reference is another invocation's
                    held[tuple(keys)] = None
            elif len(self.running) >= self.executor.capacity:
                later.append(keys)
            elif holder := self.claim_and_submit(keys, Reference.of(self.records[reference].samples) if reference
                                                 else None, open_executor):
                held[tuple(keys)] = holder
                self.waited.update(keys)
        return [keys for keys in todo if keys in later or tuple(keys) in held], held

    def claim_and_submit(self, keys: list[str], reference: Reference | None, open_executor) -> dict | None:
        """Lock every key of one training group and submit those still without a record; None when claimed,
        else the holder of a lock another invocation has (nothing is submitted then)."""
        claimed = ExitStack()
        with claimed:
            for k in keys:
                if (holder := try_lock(lock_path(self.results, k))) is not None:
                    return holder
                claimed.callback(unlock, lock_path(self.results, k))
            for k in keys:  # finished meanwhile by another invocation
                if (not self.force or k in self.waited) and (rec := load_run(self.results, k)) is not None:
                    self.records[k] = rec
            if fresh := [k for k in keys if k not in self.records]:
                cfgs = [self.wanted[k] for k in fresh]
                if not self.opened:
                    self.opened = True  # closed at the end even if opening fails half-way
                    open_executor()
                self.executor.submit(executors.Job(fresh, cfgs, reference))
                self.running[tuple(fresh)] = claimed.pop_all()  # held until the records are stored
                self.bar.set_postfix_str(f"{len(self.running)} running" if self.executor.capacity > 1 else
                                         f"{cfgs[0].model} seed={cfgs[0].seed} "
                                         f"{'untrained' if not cfgs[0].epochs else fresh[0][:8]}")
                if os.environ.get(KILL_DRIVER_AT_RUNNING) == str(len(self.running)):
                    os.kill(os.getpid(), signal.SIGKILL)
                return None
        self.bar.update(1)
        return None

    def store(self, job: executors.Job, recs: list) -> None:
        for key, rec in zip(job.keys, recs):
            rec = rec if isinstance(rec, RunRecord) else RunRecord.from_json(rec)
            rec.key = key
            write_run(self.results, rec)
            self.records[key] = rec
            log.info("stored run %s (%s)", key, rec.status)
            if rec.status != "ok":
                log.warning("run %s failed: %s", key, rec.error)
        self.running.pop(tuple(job.keys)).close()
        self.bar.update(1)

    def close(self) -> None:
        for locks in self.running.values():  # interrupted: nothing stored for these, their locks are released
            locks.close()
        if self.opened:
            self.executor.close()
        if self.bar is not None:
            self.bar.close()
