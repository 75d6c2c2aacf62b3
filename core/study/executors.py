"""Where the study's trainings run: in this process one after another (local), or as Ray tasks (ray).

suite.execute decides what to run, holds the run locks and stores every record; an executor only
trains the groups it is given and hands their records back as they finish.
"""
from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass

from core.run import models
from core.run.config import RunConfig
from core.run.evaluate import Reference

RAY_EXTRA = 'pip install -e ".[ray]"'


class ExecutorError(ValueError):
    """The executor cannot run here (bad options, Ray missing, a worker refused); one line, exit 2."""


@dataclass
class Job:
    """One training group: configs differing only in evaluation-only fields (config.EVALUATION_ONLY), stored under
    `keys` (in order)."""
    keys: list[str]
    configs: list[RunConfig]
    reference: Reference | None  # what the untrained model did (evaluate.Reference; None for a reference itself)


class LocalExecutor:
    """Today's path: each group trained in this process, in submission order, one at a time."""
    capacity = 1  # groups in flight at once

    def __init__(self, mixed: bool | None = None) -> None:
        self.mixed = mixed  # --precision (models.mixed_for): None lets the hardware decide
        self._queue: list[Job] = []

    def precision_tag(self, device: str, trains_all_weights: bool) -> str:
        return models.pick_precision(device, trains_all_weights=trains_all_weights, mixed=self.mixed).tag

    def resolve(self, spec: str, cache) -> None:
        models.resolve(spec, cache)

    def open(self, ks, device: str, cache, progress: bool) -> None:
        self._ks, self._device, self._cache, self._progress = ks, device, cache, progress

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def wait(self) -> list[tuple[Job, list[dict]]]:
        """Train the oldest submitted group; its records, in the order of its keys."""
        from core.run.recipe import run_group

        job = self._queue.pop(0)
        return [(job, run_group(job.configs, self._ks, device=self._device, cache=self._cache,
                                progress=self._progress, reference=job.reference, mixed=self.mixed))]

    def close(self) -> None:
        self._queue.clear()


# ---- command line --------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where runs execute (docs/running.md: Running on a cluster)")
    g.add_argument("--executor", choices=("local", "ray"),
                   help="local (default): one run after another in this process, no Ray; ray: every training is "
                        "a Ray task (implied by --jobs, --address, --cpus-per-run or --gpus-per-run; needs "
                        + RAY_EXTRA + ")")
    g.add_argument("--jobs", type=int, metavar="N",
                   help="with Ray: start a local Ray instance (loopback only, token authentication) and run N runs "
                        "at once, each with cores // N torch threads (default 1)")
    g.add_argument("--address", metavar="ADDR",
                   help="with Ray: join an existing cluster at HOST:PORT, or 'auto' for the one this machine belongs "
                        "to; workers get the code and data through Ray's working_dir and return their records")
    g.add_argument("--gpus-per-run", type=float, metavar="F",
                   help="with Ray: GPUs each run reserves (fractions share a GPU; default 1 with --device cuda, "
                        "else 0); --device cuda uses the GPU Ray assigned the task")
    g.add_argument("--cpus-per-run", type=int, metavar="N",
                   help="with Ray: CPUs each run reserves (default 1); on a cluster also its torch threads")


def from_args(args: argparse.Namespace, mixed: bool | None = None):
    """The executor the options ask for, checked before anything starts (ExecutorError: one line)."""
    ray_options = {"--jobs": args.jobs, "--address": args.address, "--gpus-per-run": args.gpus_per_run,
                   "--cpus-per-run": args.cpus_per_run}
    given = [name for name, value in ray_options.items() if value is not None]
    executor = args.executor or ("ray" if given else "local")
    if executor == "local":
        if given:
            raise ExecutorError(f"{', '.join(given)}: only with --executor ray")
        return LocalExecutor(mixed)
    if args.jobs is not None and args.address is not None:
        raise ExecutorError("--jobs starts a local Ray instance and --address joins a cluster: give one of them "
                            "(on a cluster its free CPUs and GPUs decide how many runs go at once)")
    if args.jobs is not None and args.jobs < 1:
        raise ExecutorError("--jobs must be >= 1")
    if args.cpus_per_run is not None and args.cpus_per_run < 1:
        raise ExecutorError("--cpus-per-run must be >= 1")
    if args.gpus_per_run is not None and not args.gpus_per_run >= 0:
        raise ExecutorError("--gpus-per-run must be >= 0")
    if args.device not in ("cpu", "cuda", "auto"):
        raise ExecutorError(f"--device {args.device} with --executor ray: use cpu, cuda or auto; each task uses the "
                            f"GPU Ray assigned it")
    cuda = args.device == "cuda"
    gpus = args.gpus_per_run if args.gpus_per_run is not None else (1.0 if cuda else 0.0)
    if cuda and gpus == 0:
        raise ExecutorError("--device cuda with --executor ray needs --gpus-per-run > 0: a task is given a GPU only "
                            "when it reserves one")
    try:  # found, not imported: the local instance's settings must be in the environment before Ray loads
        found = importlib.util.find_spec("ray") is not None
    except ValueError:  # in sys.modules as None: blocked
        found = False
    if not found:
        raise ExecutorError(f"--executor ray needs Ray, an optional extra: {RAY_EXTRA}")
    from core.study.ray_executor import RayExecutor

    return RayExecutor(address=args.address, jobs=args.jobs or 1, cpus_per_run=args.cpus_per_run or 1,
                       gpus_per_run=gpus, mixed=mixed)
