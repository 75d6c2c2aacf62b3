"""Stored runs (one JSON per config key, written atomically), the tidy CSV, and per-ablation verdicts.

A comparison pairs two arms' per-item scores by seed and by evaluation item; its interval treats seeds and
items as crossed random effects (core/stats.py), so it carries training noise and the finite probe set.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from . import metrics, stats
from .record import RunRecord

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


# ---- atomic writes, temporary files and locks (several invocations may share one results folder) ----

TMP_PREFIX = ".tmp-"
ORPHAN_AGE_S = 3600.0  # a temporary file of another host (whose writer cannot be checked) older than this is stale
_TMP_OWNER = re.compile(r"^\.tmp-(\d+)_([^_/]+)_")


def owner() -> dict:
    """This process, as recorded in lock files and temporary file names."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def owner_alive(pid: int, host: str) -> bool | None:
    """Whether process `pid` on `host` still runs; None for another host, where it cannot be checked."""
    if host != socket.gethostname():
        return None
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write via a temporary file in the same folder and rename: a kill never leaves half a file.

    The temporary name carries the writer's pid and host, so clean_stale_temps never removes a live write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    me = owner()
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{me['pid']}_{me['host']}_", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1, default=str))


def clean_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files of interrupted writes (their writer has died); returns what was deleted."""
    removed = []
    for p in sorted(folder.glob(f"{TMP_PREFIX}*")) if folder.is_dir() else []:
        m = _TMP_OWNER.match(p.name)
        alive = owner_alive(int(m[1]), m[2]) if m else None
        try:
            stale = not alive if alive is not None else time.time() - p.stat().st_mtime > ORPHAN_AGE_S
        except FileNotFoundError:  # renamed into place meanwhile
            continue
        if stale:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def try_lock(path: Path) -> dict | None:
    """Claim the lock file `path`: created atomically (O_EXCL), holding this process's pid, host and start time.

    Returns None when claimed, else the live holder's {pid, host, since}. A lock left by a dead process
    on this host is taken over; one from another host is never presumed dead (delete it by hand)."""
    holder: dict = {}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                seen = path.read_bytes()
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:  # released meanwhile
                continue
            try:
                holder = json.loads(seen)
                alive = owner_alive(int(holder["pid"]), str(holder["host"]))
            except (ValueError, KeyError, TypeError):  # being written just now, or its writer died first
                holder, alive = {"pid": "?", "host": "?", "since": None}, age < 60
            if alive is False and _remove_stale_lock(path, seen):
                continue
            return holder
        with os.fdopen(fd, "w") as f:
            json.dump({**owner(), "since": time.time()}, f)
        return None
    return holder or {"pid": "?", "host": "?", "since": None}


def _remove_stale_lock(path: Path, seen: bytes) -> bool:
    """Delete a dead process's lock unless another invocation took it over since it was read."""
    me = owner()
    grave = path.with_name(f"{TMP_PREFIX}{me['pid']}_{me['host']}_{path.name}")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return True
    if grave.read_bytes() != seen:  # a fresh lock, not the stale one: put it back
        with contextlib.suppress(FileExistsError):
            os.link(grave, path)
        grave.unlink()
        return False
    grave.unlink()
    return True


def unlock(path: Path) -> None:
    """Release a lock this process holds (a lock of anyone else is left alone)."""
    try:
        holder = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(path: Path, timeout: float = 300.0, poll: float = 0.2):
    """Hold the lock file `path` for a short critical section, waiting for another holder to finish."""
    deadline = time.monotonic() + timeout
    while (holder := try_lock(path)) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has been held by pid {holder['pid']} on {holder['host']} for over "
                               f"{timeout:.0f} s; if that process is gone, delete the file and retry")
        time.sleep(poll)
    try:
        yield
    finally:
        unlock(path)


def precision_flags(tag: str) -> list[str]:
    """The run_all options that compute as a stored run's environment.precision says (cpu-bfloat16-mixed ->
    --precision bf16; cuda-bfloat16-mixed -> --device cuda --precision bf16): a run in another precision or on
    another device plans other keys, so these are what reuses or reproduces it."""
    device, _, compute = tag.partition("-")
    return (["--device", device] if device != "cpu" else []) + ["--precision", "fp32" if compute == "fp32" else "bf16"]


def lock_path(root: Path, key: str) -> Path:
    return root / "runs" / f"{key}.lock"


def run_path(root: Path, key: str) -> Path:
    return root / "runs" / f"{key}.json"


def planned_keys(rows: list[dict]) -> list[str]:
    """Every run key a plan's rows name, trained runs and their untrained references, each once, in plan order."""
    return list(dict.fromkeys(k for r in rows for k in (r["key"], r.get("untrained_key")) if k))


def load_run(root: Path, key: str) -> RunRecord | None:
    p = run_path(root, key)
    if not p.exists():
        return None
    try:
        return RunRecord.from_json(json.loads(p.read_text()))
    except json.JSONDecodeError:  # cannot happen with atomic writes; treated as not run (it will be rewritten)
        return None


def write_run(root: Path, record: RunRecord) -> None:
    """Store a record under its key, atomically."""
    write_json_atomic(run_path(root, record.key), record.to_json())


def metric_items(record: dict, metric: str) -> dict[str, float]:
    """Per-item values behind a metric, keyed so that two runs' items pair up."""
    return metrics.item_values(record.get("samples") or [], metric, record["config"]["eval_prompt"])


def item_matrix(records: dict[int, dict], metric: str, seeds: list[int], also: list[dict] = ()):
    """(seeds x items) matrix of a metric's per-item values, on the items every listed run scored (and
    every run of `also`, the other arm of a paired comparison, scored too)."""
    import numpy as np

    per_seed = {sd: metric_items(records[sd], metric) for sd in seeds}
    sets = [set(v) for v in per_seed.values()] + [set(metric_items(r, metric)) for r in also]
    items = sorted(set.intersection(*sets)) if sets else []
    return np.array([[per_seed[sd][k] for k in items] for sd in seeds], dtype=float), items


def arm_summary(records: list[dict], metric: str, level: float = 0.95) -> dict:
    """Mean of an arm over its finished seeds, with a per-seed list and an interval inside [0, 1]."""
    by_seed = {r["config"]["seed"]: r for r in records if r.get("status") == "ok"
               and (r.get("metrics") or {}).get(metric) is not None}
    seeds = sorted(by_seed)
    out = {"mean": None, "low": None, "high": None, "per_seed": {sd: by_seed[sd]["metrics"][metric] for sd in seeds},
           "n": len(seeds)}
    if not seeds:
        return out
    matrix, items = item_matrix(by_seed, metric, seeds)
    if len(items) < 2:
        return dict(out, mean=sum(out["per_seed"].values()) / len(seeds))
    iv = stats.arm_interval(matrix, level)
    return dict(out, mean=iv.estimate, low=iv.low, high=iv.high, method=iv.method)


def compare(control: list[dict], treatment: list[dict], metric: str, expected: str | None, min_effect: float,
            level: float = 0.95) -> dict:
    """Verdict for treatment vs control on `metric`, each a list of run records paired by seed and by
    evaluation item, with an interval at `level` (above 0.95 for a primary comparison that shares its
    ablation's 5% error) over seeds and items as crossed random effects (core/stats.py).

    expected None: a secondary metric, reported as a difference with its interval but no verdict."""
    by_seed_c = {r["config"]["seed"]: r for r in control if r.get("status") == "ok"}
    by_seed_t = {r["config"]["seed"]: r for r in treatment if r.get("status") == "ok"}
    seeds = sorted(set(by_seed_c) & set(by_seed_t))
    out = {"metric": metric, "expected": expected, "min_effect": min_effect, "seeds": seeds, "level": level,
           "per_seed": {}, "mde": None}
    undecided = dict(verdict="inconclusive" if expected else None, diff=None, low=None, high=None, method=None)
    if not seeds:
        return dict(out, **undecided, reason="no seed with both arms finished")
    if any(r["metrics"].get(metric) is None for r in [*by_seed_c.values(), *by_seed_t.values()]
           if r["config"]["seed"] in seeds):
        return dict(out, **undecided, reason=f"{metric} undefined for an arm")
    c, items = item_matrix(by_seed_c, metric, seeds, [by_seed_t[sd] for sd in seeds])
    t, _ = item_matrix(by_seed_t, metric, seeds, [by_seed_c[sd] for sd in seeds])
    # each seed's (control, treatment) on the items both arms scored: the effect is the mean of their differences.
    # Where the arms score different item sets (retention against each arm's own untrained reference) these are not
    # the arms' own metric values
    out["items"] = len(items)
    out["per_seed"] = {sd: [float(c[i].mean()), float(t[i].mean())] if items
                       else [by_seed_c[sd]["metrics"][metric], by_seed_t[sd]["metrics"][metric]]
                       for i, sd in enumerate(seeds)}
    if len(items) < 2:
        return dict(out, **undecided, reason="fewer than 2 paired items")
    iv = stats.effect_interval(t - c, level)
    diff, low, high = iv.estimate, iv.low, iv.high
    out["mde"] = stats.minimum_detectable_effect(iv, level)
    if expected is None:  # a secondary metric: the difference and its interval, no verdict
        return dict(out, verdict=None, diff=diff, low=low, high=high, method=iv.method, reason="")
    sign = 1.0 if expected == "increase" else -1.0
    effect, e_low, e_high = sign * diff, min(sign * low, sign * high), max(sign * low, sign * high)
    if e_low > 0 and effect >= min_effect:
        verdict = "reproduced"
    elif e_high < min_effect:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return dict(out, verdict=verdict, diff=diff, low=low, high=high, method=iv.method, reason="")
