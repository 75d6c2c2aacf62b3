"""The run store: one JSON per config key (results/runs/<key>.json), written atomically, and its lock files
(several invocations may share one results folder); the plan rows (results/plan.json) that name those keys."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NotRequired, TypedDict

from core.files import write_json_atomic
from core.run.config import RunConfig
from core.run.record import RunRecord


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


class PlanRow(TypedDict):
    """One planned run, as the study plans it and plan.json stores it; study, analysis and report all read these."""
    ablation: str
    regime: str
    arm: str
    seed: int
    config: RunConfig | dict  # a RunConfig while planning; its to_dict() once stored (read back as stored)
    key: str  # the run's cache key: results/runs/<key>.json
    untrained_key: str  # the key of the untrained reference it is compared with
    confirm: NotRequired[bool]  # a confirmation seed, planned because of stored results (core/study/plan.py)


def planned_keys(rows: list[PlanRow]) -> list[str]:
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
