"""The adapter folder `hiahia train` writes (PEFT adapter, hiahia.json, evaluation answers, model card, curve): its
file names, and how it is written beside its final place and renamed into it, so a killed run leaves no half folder."""
from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from core.files import owner_alive

META = "hiahia.json"  # what ask, chat and export need to rebuild base + adapter, and what the card reports
EVALUATION = "evaluation.json"
CARD = "README.md"
CURVE = "training_curve.png"
FORMAT_VERSION = 1


class CommandError(ValueError):
    """Bad input to a `hiahia` command; the message is one line naming what is wrong and the fix."""


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)_(?P<host>[^_/]+)_")


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file. Fix: name a folder (it is created)")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CommandError(f"--out {out} exists and is not empty. Fix: name a new folder, or pass --force to "
                           f"replace it")


def clean_stale(out: Path) -> None:
    """Remove what killed runs left beside `out` (their writer is gone)."""
    for p in out.parent.glob(f".{out.name}.*-*") if out.parent.is_dir() else []:
        m = _TEMP.match(p.name)
        if m and m["name"] == out.name and owner_alive(int(m["pid"]), m["host"]) is False:
            shutil.rmtree(p, ignore_errors=True)


def temp_beside(out: Path, kind: str = "tmp") -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-{os.getpid()}_{socket.gethostname()}_",
                                 dir=out.parent))


class OutTaken(CommandError):
    """`out` was filled by another process while this one worked; `kept` holds this one's finished folder."""

    def __init__(self, message: str, kept: Path):
        super().__init__(message)
        self.kept = kept


def install(tmp: Path, out: Path, force: bool = False) -> None:
    """Put the finished folder in place. With force, an existing `out` is moved aside first. Without, `out` must
    still be missing or empty at this moment (checked by the rename itself, atomically): when another run filled it
    meanwhile, nothing of it is touched, this run's folder is kept beside it under a name of its own, and OutTaken
    says where."""
    umask = os.umask(0)
    os.umask(umask)
    for p in (tmp, *tmp.rglob("*")):  # mkdtemp and some writers create owner-only modes
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)
    if force and out.exists():
        old = temp_beside(out, "old")
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, out)  # replaces an empty directory only; a filled one raises
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        kept = Path(tempfile.mkdtemp(prefix=f"{out.name}.not-installed-", dir=out.parent))
        os.replace(tmp, kept / out.name)
        raise OutTaken(f"--out {out} was written by another run while this one worked; this run's result is in "
                       f"{kept / out.name}. Fix: keep one of the two, then move or delete the other", kept) from None
