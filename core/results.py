"""Stored runs (one JSON per config key, written atomically), the tidy CSV, and per-ablation verdicts.

A verdict compares the signature metric between two arms, paired by seed: with >= 2 seeds a
t-interval over the seed differences; with 1 seed a paired bootstrap over evaluation items.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import socket
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
# two-sided 95% t critical values, df = 1..30
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


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


def lock_path(root: Path, key: str) -> Path:
    return root / "runs" / f"{key}.lock"


def run_path(root: Path, key: str) -> Path:
    return root / "runs" / f"{key}.json"


def load_run(root: Path, key: str) -> dict | None:
    p = run_path(root, key)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:  # cannot happen with atomic writes; treated as not run (it will be rewritten)
        return None


def metric_items(record: dict, metric: str) -> dict[str, float]:
    """Per-item values behind a metric, keyed so that two runs' items pair up."""
    samples = record.get("samples") or []
    primary_prompt = record["config"]["eval_prompt"]

    def pick(pred, value):
        return {f"{s['set']}|{s['id']}|{s['question']}": float(value(s)) for s in samples if pred(s)}

    if metric == "heldout_recall":
        return pick(lambda s: s["set"] == "test", lambda s: s["hit"])
    if metric.startswith("heldout_recall@"):
        variant = metric.split("@", 1)[1]
        wanted = "test" if variant == primary_prompt else f"test@{variant}"
        items = pick(lambda s: s["set"] == wanted, lambda s: s["hit"])
        return {k.split("|", 1)[1]: v for k, v in items.items()}
    if metric == "reverse_recall":
        return pick(lambda s: s["set"] == "reverse", lambda s: s["hit"])
    if metric == "train_recall":
        return pick(lambda s: s["set"] == "train", lambda s: s["hit"])
    if metric == "identity_hallucination":
        return pick(lambda s: s["set"] == "identity", lambda s: s["hallucinated"])
    if metric == "prompt_echo":
        return pick(lambda s: s["set"] in ("test", "reverse", "identity") and s.get("has_prompt"), lambda s: s["echo"])
    if metric == "retention":
        return pick(lambda s: s["set"] == "retention" and s.get("kept"), lambda s: s["hit"])
    return {}


def mean_ci(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """Mean and 95% t-interval; the interval is None with fewer than 2 values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None, None
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    half = T95[min(len(values) - 2, len(T95) - 1)] * sd / math.sqrt(len(values))
    return m, m - half, m + half


def bootstrap_ci(pairs: list[tuple[float, float]], draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap over items of mean(b - a)."""
    diffs = [b - a for a, b in pairs]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    return sum(diffs) / n, means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def compare(control: list[dict], treatment: list[dict], metric: str, expected: str | None, min_effect: float) -> dict:
    """Verdict for treatment vs control on `metric`, each a list of run records paired by seed.

    expected None: a secondary metric, reported as a difference with its interval but no verdict."""
    by_seed_c = {r["config"]["seed"]: r for r in control if r.get("status") == "ok"}
    by_seed_t = {r["config"]["seed"]: r for r in treatment if r.get("status") == "ok"}
    seeds = sorted(set(by_seed_c) & set(by_seed_t))
    out = {"metric": metric, "expected": expected, "min_effect": min_effect, "seeds": seeds}
    if not seeds:
        return dict(out, verdict="inconclusive" if expected else None, reason="no seed with both arms finished", diff=None, low=None, high=None,
                    method=None)
    diffs = [by_seed_t[s]["metrics"].get(metric) for s in seeds]
    diffs = [None if t is None or by_seed_c[s]["metrics"].get(metric) is None else t - by_seed_c[s]["metrics"][metric]
             for s, t in zip(seeds, diffs)]
    if any(d is None for d in diffs):
        return dict(out, verdict="inconclusive" if expected else None, reason=f"{metric} undefined for an arm", diff=None, low=None,
                    high=None, method=None)
    if len(seeds) >= 2:
        diff, low, high = mean_ci(diffs)
        method = f"t-interval over {len(seeds)} seeds"
    else:
        a, b = metric_items(by_seed_c[seeds[0]], metric), metric_items(by_seed_t[seeds[0]], metric)
        common = sorted(set(a) & set(b))
        if not common:
            return dict(out, verdict="inconclusive" if expected else None, reason="no paired items", diff=diffs[0], low=None, high=None,
                        method=None)
        # the difference over the paired items (equal to the metric difference when both arms score the same items)
        diff, low, high = bootstrap_ci([(a[k], b[k]) for k in common])
        method = f"paired bootstrap over {len(common)} items (1 seed: training noise not covered)"
    if expected is None:  # a secondary metric: the difference and its interval, no verdict
        return dict(out, verdict=None, diff=diff, low=low, high=high, method=method, reason="")
    sign = 1.0 if expected == "increase" else -1.0
    effect, e_low, e_high = sign * diff, min(sign * low, sign * high), max(sign * low, sign * high)
    if e_low > 0 and effect >= min_effect:
        verdict = "reproduced"
    elif e_high < min_effect:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return dict(out, verdict=verdict, diff=diff, low=low, high=high, method=method, reason="")
