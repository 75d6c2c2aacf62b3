"""Shared fixtures: the tiny random Qwen2 model and the project's knowledge set."""
import os
import sys

import pytest
import torch

from core.paths import ROOT

sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))
# the same numbers on every machine: the tests compute in fp32 unless a test asks for bf16 (whatever the CPU offers)
os.environ.setdefault("HIAHIA_PRECISION", "fp32")
PRECISION = os.environ["HIAHIA_PRECISION"]


@pytest.fixture(autouse=True)
def same_precision_for_every_test(monkeypatch):
    """A test that runs `--precision bf16` sets HIAHIA_PRECISION for its process (as the CLI does for the Ray
    workers it starts): put the session's choice back after it, so no later test computes in bf16 by accident."""
    monkeypatch.setenv("HIAHIA_PRECISION", PRECISION)


@pytest.fixture(scope="session")
def knowledge():
    from core.run.knowledge import load_knowledge

    return load_knowledge()


@pytest.fixture()
def tiny():
    from core.run.models import load

    return load("tiny-qwen2")


@pytest.fixture()
def error_line(capsys):
    """The command's stderr, checked to be exactly one line `error: ...`; returns that line."""
    def read(stderr: str | None = None) -> str:
        text = capsys.readouterr().err if stderr is None else stderr
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), text[-3000:]
        return lines[0]

    return read
