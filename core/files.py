"""Files that several processes may write at once: atomic writes (a kill never leaves half a file), temporary
files named by their writer, stale ones cleaned, and lock files whose dead owner's lock is taken over."""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path

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
