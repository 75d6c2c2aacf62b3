"""Which code produced a run: a hash of the content that decides results (for machines) and the git commit (for people).

Both are stored in every run's environment; the report shows the commit it was rendered at.
"""
from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The core modules a run executes: the import closure of core.run (a test keeps the two equal). The rest of core/
# (suite, report, figures, statistics, verdicts, the CLI) plans runs or presents them but decides no stored number,
# so editing it leaves the code version of a running study unchanged.
RUN_MODULES = ("config", "data", "evaluate", "knowledge", "lora", "metrics", "model_cache", "models", "record", "run",
               "scoring", "train", "version")
DECIDING = ("ablations", "data")  # besides RUN_MODULES, the folders whose content decides what a run measures
NOT_DECIDING = ("data/labels/",)  # human labels for the scorer agreement table: no run reads them
DOCS = ".md"  # documentation (each ablation's README.md): no run reads it, so its edits change no code version


def _git(*args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def _deciding_paths() -> list[str]:
    return [f"core/{m}.py" for m in RUN_MODULES] + list(DECIDING)


def deciding_files() -> list[str]:
    """Paths (relative to the repository, sorted) of the run's core modules and the tracked files under ablations/
    and data/, without data/labels/ and documentation (*.md). Outside a git checkout (a Ray worker's copy): every
    file there except caches."""
    listed = _git("ls-files", "-z", "--", *_deciding_paths())
    if listed is not None:
        names = [n for n in listed.split("\0") if n]
    else:
        names = [f"core/{m}.py" for m in RUN_MODULES if (ROOT / "core" / f"{m}.py").is_file()]
        names += [p.relative_to(ROOT).as_posix() for folder in DECIDING for p in (ROOT / folder).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts]
    return sorted(n for n in names if not n.startswith(NOT_DECIDING) and not n.endswith(DOCS))


@functools.cache
def code_version() -> str:
    """sha256 (16 hex digits) over the path and content of every deciding file, as the working tree has them: the
    same for any two checkouts whose results-deciding content is the same, whatever their commits. Computed once
    per process, for the code that process runs."""
    return files_digest(ROOT, deciding_files())[:16]


def files_digest(root: Path, names: list[str]) -> str:
    """sha256 (hex) over each named file's path (relative to root) and content, in the order given; a name with no
    file (tracked but deleted in the working tree) is left out."""
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def git_commit() -> str:
    """The short commit, with +dirty when a deciding file differs from it; "unknown" outside git."""
    commit = (_git("rev-parse", "--short", "HEAD") or "").strip()
    if not commit:
        return "unknown"
    dirty = _git("status", "--porcelain", "--", *_deciding_paths(), *(f":(exclude){p}" for p in NOT_DECIDING),
                 f":(exclude,glob)**/*{DOCS}")
    return commit + ("+dirty" if dirty and dirty.strip() else "")
