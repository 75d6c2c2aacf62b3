"""The study's plan: one row per (ablation, regime, arm, seed) with its config and cache key, the untrained
reference each trained run is compared with, and the models its pending runs need."""
from __future__ import annotations

from pathlib import Path

from core.run import models
from core.run.config import RunConfig
from core.run.version import code_version
from core.study.ablation import Ablation
from core.study.store import PlanRow, load_run


def build_plan(ablations: list[Ablation], baseline: RunConfig, seeds: int | None, pair: str | None,
               key_context) -> list[PlanRow]:
    """One row per (ablation, regime, arm, seed) with its config and cache key. pair: the --pair name for ablations
    that declare pairs (None: each one's first); key_context(cfg): what besides the config keys a run."""
    rows = []
    for ab in ablations:
        for seed in range(ab.seeds if seeds is None else min(seeds, ab.seeds)):
            for (regime, arm), cfg in ab.configs(baseline, seed, pair).items():
                before = untrained_config(cfg, baseline)
                rows.append({"ablation": ab.name, "regime": regime, "arm": arm, "seed": seed, "config": cfg,
                             "key": cfg.key(key_context(cfg)), "untrained_key": before.key(key_context(before))})
    return rows


def key_context(cfg: RunConfig, data_sha256: str, device: str, replay_sha=None, precision_tag=None) -> str:
    """Everything outside the config that decides a run's results, for its cache key: the code a run executes
    (core/run/version.code_version), the model's weights, the data, and where and in which precision it computes (cpu-fp32 and cuda-bf16-mixed runs
    never share a key). precision_tag(device, trains_all_weights): the executor's, where runs compute."""
    precision = (precision_tag(device, cfg.full_finetune) if precision_tag
                 else models.pick_precision(device, trains_all_weights=cfg.full_finetune).tag)
    parts = [f"code:{code_version()}", models.weights_fingerprint(cfg.model), data_sha256, precision]
    return "|".join(parts + ([f"replay:{replay_sha()}"] if replay_sha else []))


def untrained_config(cfg: RunConfig, baseline: RunConfig) -> RunConfig:
    """The 'before' reference for cfg's model and format: the baseline (with --set overrides), untrained."""
    return baseline.replace(model=cfg.model, format=cfg.format, epochs=0, seed=0)


def resolve_models(plan: list[PlanRow], results: Path, force: bool, baseline: RunConfig, cache, resolve=None) -> None:
    """Check every model a pending run will load (fetching, converting and verifying embedded ones) before
    anything is written; a model whose runs are all stored is not needed."""
    needed = {}  # an ordered set
    for row in plan:
        for key, cfg in ((row["key"], row["config"]), (row["untrained_key"], untrained_config(row["config"], baseline))):
            if cfg.model not in needed and (force or load_run(results, key) is None):
                needed[cfg.model] = True
    for spec in needed:
        (resolve or models.resolve)(spec, cache)
