"""The study's plan: one row per (ablation, regime, arm, seed) with its config and cache key, the untrained
reference each trained run is compared with, and the models its pending runs need."""
from __future__ import annotations

import statistics
from pathlib import Path

from core.analysis.verdicts import CONFIRM_SEEDS, to_confirm
from core.run import models
from core.run.config import RunConfig, training_of
from core.run.record import RunRecord
from core.run.version import code_version
from core.study.ablation import MATCHED, Ablation
from core.study.store import PlanRow, load_run, planned_keys


def build_plan(ablations: list[Ablation], baseline: RunConfig, seeds: int | None, pair: str | None,
               key_context, stored=None) -> list[PlanRow]:
    """One row per (ablation, regime, arm, seed) with its config and cache key. pair: the --pair name for ablations
    that declare pairs (None: each one's first); key_context(cfg): what besides the config keys a run.
    stored(key): a stored RunRecord or None. With it (and the declared seeds), a primary comparison whose interval
    lies below min_effect at the declared seeds gets rows up to CONFIRM_SEEDS for its control and treated arm
    (confirm: True): "not reproduced" needs them (core/analysis/verdicts.py)."""
    rows = []
    for ab in ablations:
        mine = _rows(ab, range(ab.seeds if seeds is None else min(seeds, ab.seeds)), baseline, pair, key_context)
        if stored is not None and seeds is None:
            records = {r["key"]: rec for r in mine if (rec := stored(r["key"])) is not None}
            mine += _confirmation_rows(ab, to_confirm(ab, mine, records), baseline, pair, key_context)
        rows += mine
    return rows


def _rows(ab: Ablation, seeds, baseline: RunConfig, pair: str | None, key_context, wanted=None,
          confirm: bool = False) -> list[PlanRow]:
    out = []
    for seed in seeds:
        for (regime, arm), cfg in ab.configs(baseline, seed, pair).items():
            if wanted is None or (regime, arm) in wanted:
                before = untrained_config(cfg, baseline)
                out.append({"ablation": ab.name, "regime": regime, "arm": arm, "seed": seed, "config": cfg,
                            "key": cfg.key(key_context(cfg)), "untrained_key": before.key(key_context(before)),
                            **({"confirm": True} if confirm else {})})
    return out


def _confirmation_rows(ab: Ablation, comparisons: list[tuple[str, str]], baseline: RunConfig, pair: str | None,
                       key_context) -> list[PlanRow]:
    """The seeds from the declared ones up to CONFIRM_SEEDS for each comparison's control and treated arm."""
    wanted = {(regime, a) for regime, arm in comparisons for a in (ab.arms if arm == MATCHED else (ab.control, arm))}
    return _rows(ab, range(ab.seeds, CONFIRM_SEEDS), baseline, pair, key_context, wanted, True) if wanted else []


def confirmation_ceiling(ablations: list[Ablation], baseline: RunConfig, pair: str | None, key_context
                         ) -> list[PlanRow]:
    """Every confirmation row the plan could add: each primary comparison below min_effect at its declared seeds."""
    return [r for ab in ablations
            for r in _confirmation_rows(ab, ab.primary_comparisons(), baseline, pair, key_context)]


def estimated_seconds(rows: list[PlanRow], stored: list[RunRecord]) -> float | None:
    """The time `rows` would take: each training once (a training shared by selection arms once) plus one evaluation
    per run key they name that is not stored (untrained references evaluate only).

    A stored training took what its records took beyond their evaluations (loading, replay answers, training): the
    largest of its records' totals (each counts the whole group so far) less the sum of their evaluations, per code
    version. A training in `rows` takes the median of its stored times (any code version); else the median of the
    stored trainings of its config at other seeds (replay, full fine-tuning or more wordings cost what they cost);
    else the median per epoch over all stored trainings times its epochs (an arm with more examples per epoch and no
    stored seed, replay, is under-counted). An evaluation takes the median stored evaluation. Medians, since a run
    slowed by other work records a much longer time. None when no trained run is stored to time them by."""
    groups: dict[tuple, dict] = {}  # (training, code version) -> its records' largest total, summed evaluations
    evals = []
    for rec in stored:
        t = rec.timings or {}
        if not rec.ok:
            continue
        if t.get("eval"):
            evals.append(t["eval"])
        if t.get("total") and rec.config.get("epochs"):  # stored configs gain the fields added since, as defaults
            training = training_of(RunConfig.from_dict(rec.config).to_dict())
            g = groups.setdefault((training, rec.environment.get("code_version")),
                                  {"total": 0.0, "eval": 0.0, "train": 0.0, "epochs": rec.config["epochs"]})
            g["total"], g["eval"] = max(g["total"], t["total"]), g["eval"] + t.get("eval", 0.0)
            g["train"] = max(g["train"], t.get("train", 0.0))
    if not groups:
        return None
    by_training: dict[tuple, list[float]] = {}
    by_config: dict[tuple, list[float]] = {}  # the same training but for its seed
    per_epoch = []
    for (training, _), g in groups.items():  # never below the training itself (a group stored across restarts)
        took = max(g["total"] - g["eval"], g["train"])
        by_training.setdefault(training, []).append(took)
        by_config.setdefault(_seedless(training), []).append(took)
        per_epoch.append(took / g["epochs"])
    fallback = statistics.median(per_epoch)
    to_evaluate = set(planned_keys(rows)) - {rec.key for rec in stored}
    seen, seconds = set(), statistics.median(evals) * len(to_evaluate) if evals else 0.0
    for r in rows:
        cfg = r["config"] if isinstance(r["config"], dict) else r["config"].to_dict()
        training = training_of(cfg)
        if training in seen or not cfg.get("epochs"):
            continue
        seen.add(training)
        times = by_training.get(training) or by_config.get(_seedless(training))
        seconds += statistics.median(times) if times else fallback * cfg["epochs"]
    return seconds


def _seedless(training: tuple) -> tuple:
    """A training_of key without its seed: what the trainings of one config at several seeds share."""
    return tuple(kv for kv in training if kv[0] != "seed")


def declared(rows: list[PlanRow]) -> list[PlanRow]:
    """The rows of the declared seeds, without the confirmation seeds that stored results added."""
    return [r for r in rows if not r.get("confirm")]


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
