"""Which code produced a run: the code version (a content hash of core/run/, what a run executes) and the git commit.

The code version is part of every run's cache key (core/run/config.py), so a change to any file a run executes
orphans the stored runs: they are retrained, never silently reused. Planning, analysis, the report and the ablation
definitions live outside core/run/ and leave it alone. It is computed from the files themselves, the same way in a
git checkout and in a Ray worker's copy (which has no .git)."""
from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from core.paths import ROOT

RUN_PACKAGE = Path(__file__).resolve().parent  # core/run/: every module a run imports, and nothing else


def skipped(rel: Path) -> bool:
    """Caches and hidden files (.tmp-*, editor files): they differ between copies without changing what runs."""
    return rel.suffix == ".pyc" or any(part == "__pycache__" or part.startswith(".") for part in rel.parts)


def folder_files(folder: Path) -> list[str]:
    """Every file under `folder` except caches and hidden files, as sorted paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not skipped(p.relative_to(folder)))


def files_digest(root: Path, names: list[str]) -> str:
    """sha256 (hex) over each named file's path (relative to root) and content, in the order given."""
    digest = hashlib.sha256()
    for name in names:
        data = (root / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def version_of(folder: Path) -> str:
    """sha256 (16 hex digits) over the path (relative to `folder`) and content of every file under it."""
    return files_digest(folder, folder_files(folder))[:16]


@functools.cache
def code_version() -> str:
    """version_of(core/run/): the same for any two copies whose run code is the same, whatever their commits.
    Computed once per process, for the code that process runs."""
    return version_of(RUN_PACKAGE)


def _git(*args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def git_commit() -> str:
    """The short commit, with +dirty when a file under core/run/ differs from it; "unknown" outside git."""
    commit = (_git("rev-parse", "--short", "HEAD") or "").strip()
    if not commit:
        return "unknown"
    dirty = _git("status", "--porcelain", "--", RUN_PACKAGE.relative_to(ROOT).as_posix())
    return commit + ("+dirty" if dirty and dirty.strip() else "")
