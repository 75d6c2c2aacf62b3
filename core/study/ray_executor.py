"""Training groups as Ray tasks, on a local Ray instance (--jobs N) or an existing cluster (--address).

Workers receive the code and data through Ray's runtime environment (working_dir) and return their
records; the driver (core/study/execute.py) stores them, so no shared filesystem is needed.
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from core.files import locked
from core.paths import ROOT
from core.run import models
from core.run.recipe import run_group
from core.run.version import skipped, version_of
from core.study.executors import ExecutorError, Job

SOURCE = ROOT  # the checkout whose SHIPPED folders become every worker's working_dir
SHIPPED = ("core", "data")  # what a worker runs: the code (its run code must be the driver's) and the data
RETRIES = 1  # Ray restarts a task once when its worker process or node dies; then it is stored as failed
CUDA_PLANNED = "cuda-bfloat16-mixed"  # the precision a GPU-less driver plans for --device cuda (workers check it)
LOCAL_OBJECT_STORE = 256 * 2**20  # records are small; keep the local instance's shared memory modest

log = logging.getLogger("run_all")


class WorkerRefused(RuntimeError):
    """Raised on a worker whose project files or compute precision differ from what the driver planned."""


def shipped_versions(root: Path = ROOT) -> dict[str, str]:
    """What a worker must share with the driver: the code version (core/run/, version.code_version) and the data
    folder's (the replay file is read on the worker). Computed from the files, so the same in a checkout and in
    Ray's working_dir."""
    return {"code": version_of(root / "core" / "run"), "data": version_of(root / "data")}


def stage_working_dir(source: Path) -> Path:
    """A temporary folder with only the SHIPPED folders of `source`: what Ray uploads as working_dir
    (not results/, report/ or .git)."""
    stage = Path(tempfile.mkdtemp(prefix="hiahia-ray-"))
    for folder in SHIPPED:
        shutil.copytree(source / folder, stage / folder,
                        ignore=lambda d, names: [n for n in names if skipped(Path(n))])
    return stage


def train_group(configs: list, ks, device: str, cache, reference, expected: dict) -> list[dict]:
    """The Ray task, run on a worker: check it runs the driver's project and precision, then train the group.

    expected: {"versions": shipped_versions() of the driver, "precision": the planned tag, "mixed": --precision as
    models.mixed_for gives it, "threads": torch threads}."""
    import ray
    import torch

    where = f"the worker on {socket.gethostname()} ({ray.util.get_node_ip_address()}, pid {os.getpid()})"
    here = shipped_versions()
    for part, folder in (("code", "core/run"), ("data", "data")):
        if here[part] != expected["versions"][part]:
            raise WorkerRefused(
                f"refused: {where} has a different {folder}/ than the driver (version {here[part]} there, "
                f"{expected['versions'][part]} on the driver); workers must run the driver's code and data, "
                f"which Ray ships as its working_dir: remove any other copy of the project from that node's Python "
                f"path, and start the driver from the checkout you mean to run")
    base = configs[0]
    precision = models.pick_precision(device, trains_all_weights=base.full_finetune, mixed=expected["mixed"]).tag
    if precision != expected["precision"]:
        raise WorkerRefused(f"refused: {where} computes in {precision}, but the driver planned {expected['precision']} "
                            f"for these run keys; start the driver on a node with the workers' kind of device")
    torch.set_num_threads(expected["threads"])
    if base.model in models.EMBEDDED:  # fetched and converted into this worker's cache once, not by every task
        root = models.cache_dir(cache)
        root.mkdir(parents=True, exist_ok=True)
        with locked(root / f".resolve-{base.model}.lock", timeout=3600):
            models.resolve(base.model, cache)
    records = run_group(configs, ks, device=device, cache=cache, progress=False, reference=reference,
                        mixed=expected["mixed"])
    for rec in records:
        rec.environment = dict(rec.environment or {}, executor="ray", ray_node=ray.get_runtime_context().get_node_id())
    return [rec.to_json() for rec in records]


class RayExecutor:
    """Submit training groups as Ray tasks and hand back each group's records as its task finishes."""

    def __init__(self, address: str | None, jobs: int = 1, cpus_per_run: int = 1, gpus_per_run: float = 0.0,
                 mixed: bool | None = None):
        self.address, self.jobs, self.cpus_per_run, self.gpus_per_run = address, jobs, cpus_per_run, gpus_per_run
        self.mixed = mixed  # --precision (models.mixed_for), sent to every worker with its task
        self.capacity = jobs
        self._running: dict = {}  # ObjectRef -> (Job, start time)
        self._env_before: dict[str, str | None] = {}
        self._started = False

    # -- before anything is written: run keys and models ----------------------------------------------

    def precision_tag(self, device: str, trains_all_weights: bool) -> str:
        """The precision part of the run keys. A driver without a GPU plans bf16 mixed precision for
        --device cuda (any bf16-capable GPU); a worker that would compute otherwise refuses."""
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            return CUDA_PLANNED
        return models.pick_precision(device, trains_all_weights=trains_all_weights, mixed=self.mixed).tag

    def resolve(self, spec: str, cache) -> None:
        """A local instance shares this machine's cache: fetch and convert here, once, before the workers
        start. On a cluster each worker fetches an embedded model into its own cache (or --cache-dir)."""
        if self.address is None or spec not in models.EMBEDDED:
            models.resolve(spec, cache)

    # -- running ----------------------------------------------------------------------------------------

    def open(self, ks, device: str, cache, progress: bool) -> None:
        if self.address is None:
            self._local_environment()
        import ray

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // self.jobs) if self.address is None else self.cpus_per_run
        stage = stage_working_dir(SOURCE)
        runtime_env = {"working_dir": str(stage),
                       "env_vars": {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                                    "TOKENIZERS_PARALLELISM": "false",
                                    # the tests' exact kill points (core/run/train.py) reach the workers too
                                    **{k: v for k, v in os.environ.items() if k.startswith("HIAHIA_TEST_")}}}
        common = dict(runtime_env=runtime_env, log_to_driver=False, logging_level=logging.WARNING)
        try:
            if self.address is None:
                self._start_local(ray, common)
            else:
                try:
                    ray.init(address=self.address, **common)
                except (ConnectionError, RuntimeError, ValueError) as e:
                    raise ExecutorError(f"could not join the Ray cluster at {self.address}: "
                                        f"{str(e).splitlines()[0]}") from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)  # ray.init uploaded it: workers fetch it from the cluster
        self._started = True
        self._check_resources(ray)
        self._ks = ray.put(ks)
        self._device, self._cache = device, cache
        self._expected = {"versions": shipped_versions(), "threads": threads, "mixed": self.mixed,
                          "precision": {ff: self.precision_tag(device, ff) for ff in (False, True)}}
        self._task = ray.remote(train_group).options(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                                                     max_retries=RETRIES, retry_exceptions=False)
        where = "a local Ray instance" if self.address is None else f"the Ray cluster at {self.address}"
        log.info("running on %s: up to %d runs at once, %d torch thread(s), %g CPU and %g GPU each", where,
                 self.capacity, threads, self.cpus_per_run, self.gpus_per_run)

    def _local_environment(self) -> None:
        """Token authentication with a fresh random token, kept in this process's environment (inherited by
        the instance's processes), so not even other users of this machine can submit work to it."""
        # workers keep Ray's nice 15, which leaves the raylet responsive (with nice 0 on a loaded 2-core machine,
        # Ray once declared the node dead mid-run)
        env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
        self._env_before = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        if "ray" in sys.modules:  # Ray read RAY_AUTH_MODE when it was imported: make it read it again
            from ray._raylet import Config

            Config.initialize("")

    def _start_local(self, ray, common: dict) -> None:
        """A private instance: every Ray server listens on 127.0.0.1 only, so no other machine can connect."""
        try:
            ray.init(address="local", num_cpus=self.jobs * self.cpus_per_run, include_dashboard=False,
                     _node_ip_address="127.0.0.1", object_store_memory=LOCAL_OBJECT_STORE, **common)
        except Exception as e:  # Ray's start-up errors span many lines and types
            raise ExecutorError(f"could not start a local Ray instance: {e.__class__.__name__}: "
                                f"{(str(e).strip().splitlines() or [''])[0]}") from None

    def _check_resources(self, ray) -> None:
        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
        if cpus < self.cpus_per_run or gpus < self.gpus_per_run:
            raise ExecutorError(f"the Ray cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s); one run reserves "
                                f"{self.cpus_per_run:g} CPU(s) and {self.gpus_per_run:g} GPU(s) "
                                f"(--cpus-per-run, --gpus-per-run)")
        if self.address is not None:
            slots = int(cpus // self.cpus_per_run)
            if self.gpus_per_run:
                slots = min(slots, int(gpus // self.gpus_per_run))
            self.capacity = max(1, slots)

    def submit(self, job: Job) -> None:
        expected = dict(self._expected, precision=self._expected["precision"][job.configs[0].full_finetune])
        ref = self._task.remote(job.configs, self._ks, self._device, self._cache, job.reference, expected)
        self._running[ref] = (job, time.perf_counter())

    def wait(self) -> list[tuple[Job, list[dict]]]:
        """Block until at least one task has finished; each finished group with its records. A task whose
        worker died (after Ray's retries) or that raised comes back as failed records with the error."""
        import ray
        from ray.exceptions import RayError, RayTaskError

        ready, _ = ray.wait(list(self._running), num_returns=1)
        done = []
        for ref in ready:
            job, t0 = self._running.pop(ref)
            try:
                records = ray.get(ref)
            except RayTaskError as e:
                if isinstance(e.cause, WorkerRefused):
                    raise ExecutorError(str(e.cause)) from None
                records = _failed(job, e.cause if e.cause is not None else e, time.perf_counter() - t0)
            except RayError as e:  # the worker process or its node died, on every attempt
                records = _failed(job, e, time.perf_counter() - t0, f" (tried {RETRIES + 1} times)")
            done.append((job, records))
        return done

    def close(self) -> None:
        if self._started:
            import ray

            for ref in self._running:
                ray.cancel(ref, force=True)
            self._running.clear()
            ray.shutdown()
            self._started = False
        for k, v in self._env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _failed(job: Job, error: BaseException, seconds: float, note: str = "") -> list[dict]:
    first = (str(error).strip().splitlines() or [""])[0]
    return [{"config": cfg.to_dict(), "status": "failed", "error": f"{error.__class__.__name__}: {first}{note}",
             "environment": {"executor": "ray"}, "timings": {"total": seconds}, "shared_training": len(job.configs) > 1}
            for cfg in job.configs]

