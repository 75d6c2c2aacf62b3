"""Shared fixtures: the tiny random Qwen2 model and the project's knowledge set."""
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def ks():
    from core.data import load_knowledge

    return load_knowledge()


@pytest.fixture()
def tiny():
    from core.models import load

    return load("tiny-qwen2")
