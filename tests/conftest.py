"""Shared fixtures: the tiny random Qwen2 model and the project's knowledge set."""
import os
import sys

import pytest
import torch

from core.paths import ROOT

sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))
# the same numbers on every machine: the tests take the path of a CPU without bf16 hardware, so --precision auto
# computes in fp32 (in this process, its subprocesses and Ray workers) unless a test asks for bf16
os.environ.setdefault("HIAHIA_TEST_CPU_BF16", "0")
CPU_BF16 = os.environ["HIAHIA_TEST_CPU_BF16"]


@pytest.fixture(autouse=True)
def same_hardware_for_every_test(monkeypatch):
    """Put the session's stand-in for the CPU back after a test that changed it."""
    monkeypatch.setenv("HIAHIA_TEST_CPU_BF16", CPU_BF16)


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
