"""`hiahia train`: the study's recommended recipe (core/run/recipe.py, the same steps a study run takes) on a user's
facts, measured before and after with the study's metrics, written atomically to an adapter folder
(core/facts/folder.py); core/facts/adapter.py loads such a folder again.
"""
from __future__ import annotations

import datetime
import json
import shutil
import sys
import time
from pathlib import Path

from core.facts.card import plot_curve, render_card
from core.facts.folder import (
    CARD,
    CURVE,
    EVALUATION,
    FORMAT_VERSION,
    META,
    CommandError,
    check_out,
    clean_stale,
    install,
    temp_beside,
)
from core.facts.userfile import load_user_knowledge, split_summary, user_replay
from core.run import metrics, models, recipe
from core.run.config import RunConfig
from core.run.evaluate import answer_hit, generate
from core.run.examples import MODEL_DEFAULT
from core.run.knowledge import KnowledgeSet
from core.run.lora import export_peft

# The baseline RunConfig plus self-replay of 40 everyday requests (the self_replay ablation: replay raises retention
# without costing recall; its numbers are in the report). format=auto: a base model without a chat template trains
# in plain text.
RECIPE = RunConfig(replay=40, format="auto")
# the study's metrics the card reports, asked as `hiahia ask` asks (the model's default system prompt)
CARD_METRICS = ("heldout_recall", "train_recall", "retention", "retention_raw")
BEFORE_METRICS = ("heldout_recall", "train_recall", "retention_raw")


# The fields a study arm may change and still be what `hiahia train` runs on a user's facts as the study ran it:
# training settings applied to any facts file unchanged. Every other field (the model, the prompts and format, the
# data design, where replay comes from, evaluation, weight interpolation, full fine-tuning) must be the recipe's:
# a user's file has no answer variants or study-entity replay, `hiahia ask` asks under the model's own prompt, and
# `hiahia train` keeps a checkpoint as it is (no interpolation).
TRAINING_FIELDS = frozenset({"mask_labels", "debate", "replay", "distill", "lora_targets", "lora_r", "lora_alpha",
                             "lora_dropout", "use_rslora", "lr", "lr_schedule", "warmup_ratio", "weight_decay",
                             "grad_clip", "epochs", "batch_size", "selection"})
# best_recall_retention scores the study's validation probes, which a user's file does not have
SELECTIONS = ("best", "last", "best_recall")


def _as_study_config(config: dict) -> RunConfig:
    """A study config (a stored or planned config dict) as a RunConfig, the seed left at its default."""
    return RunConfig.from_dict({k: v for k, v in config.items() if k != "seed"})


def _changed(cfg: RunConfig) -> set[str]:
    """The fields in which a study config trains otherwise than RECIPE; format chat is the same as RECIPE's auto
    (on the chat model it resolves to chat)."""
    return set(RECIPE.diff(cfg)) - ({"format"} if cfg.format == "chat" else set())


def is_recipe(config: dict) -> bool:
    """Whether a study config is RECIPE itself (any seed): the runs that measure what `hiahia train` does."""
    return not _changed(_as_study_config(config))


def runs_as_studied(config: dict) -> bool:
    """Whether `hiahia train` would run a study config as the study ran it: it differs from RECIPE only in
    TRAINING_FIELDS, with a selection of SELECTIONS."""
    cfg = _as_study_config(config)
    return _changed(cfg) <= TRAINING_FIELDS and cfg.selection in SELECTIONS


def recipe_config(overrides: dict) -> RunConfig:
    cfg = RECIPE.replace(**overrides)
    if cfg.full_finetune:
        raise CommandError("--set full_finetune=true: `hiahia train` writes a LoRA adapter; full fine-tuning is a "
                           "reference arm of the study (run_all.py --only full_finetune)")
    if not cfg.lora_strict:
        raise CommandError("--set lora_strict=false would let targets that match nothing train nothing; name "
                           "modules this model has (the error of a strict miss lists them)")
    if cfg.epochs < 1:
        raise CommandError(f"--set epochs={cfg.epochs}: train at least one epoch")
    return cfg


class Phases:
    """The overall progress lines: which phase, how long the run has taken; the bars below show each ETA."""

    def __init__(self, total: int, out=None):
        self.total, self.index, self.out, self.start = total, 0, out or sys.stderr, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, text: str) -> None:
        self.index += 1
        print(f"[{self.index}/{self.total}] {text} (at {self.elapsed():.0f} s)", file=self.out, flush=True)


def base_model_path(spec: str, cache) -> str:
    """What adapter_config.json names as the base: the folder (converted, for embedded models) or hub id."""
    if spec in models.EMBEDDED:
        return str(models.cache_dir(cache) / spec)
    if Path(spec).is_dir():
        return str(Path(spec).resolve())
    return spec


# ---- measuring: the card's before/after answers, scored by the study's metric registry ---------------

def answer_probes(loaded: recipe.Loaded, ks: KnowledgeSet, cfg: RunConfig, progress: bool, desc: str) -> list[dict]:
    """Greedy answers under the model's default prompt (as `hiahia ask` asks) to every test question, each
    fact's first training question and the retention probes, each scored as the study scores them."""
    rows = [dict(set="test", id=f.id, question=q, keywords=f.keywords) for f in ks.facts for q in f.test]
    rows += [dict(set="train", id=f.id, question=f.train[0], keywords=f.keywords) for f in ks.facts]
    rows += [dict(set="retention", id=p.id, question=p.question, keywords=p.keywords) for p in ks.retention_probes]
    with loaded.precision.autocast():
        answers = generate(loaded.model, loaded.renderer, [(MODEL_DEFAULT, r["question"]) for r in rows],
                           cfg.max_new_tokens, progress=progress, desc=desc)
    for r, a in zip(rows, answers):
        r["answer"] = a
        r["hit"] = answer_hit(r["set"], a, r["keywords"], ks, r["question"])
        r["keywords"] = [list(g) for g in r["keywords"]]
    return rows


def _measure(rows: list[dict], name: str) -> dict:
    values = list(metrics.item_values(rows, name, MODEL_DEFAULT).values())
    return {"hits": int(sum(values)), "n": len(values), "value": sum(values) / len(values) if values else None}


def measurements(before: list[dict], after: list[dict]) -> dict:
    """The card's figures: each of CARD_METRICS after training (retention over the probes the untrained model
    answered), and BEFORE_METRICS before it, suffixed _before."""
    known = {r["id"] for r in before if r["set"] == "retention" and r["hit"]}
    for r in (*before, *after):
        if r["set"] == "retention":
            r["kept"] = r["id"] in known
    return {**{name: _measure(after, name) for name in CARD_METRICS},
            **{f"{name}_before": _measure(before, name) for name in BEFORE_METRICS}}


# ---- the command ----------------------------------------------------------------------------------

def train_adapter(data: str | Path, out: str | Path, overrides: dict, force: bool = False, device: str = "cpu",
                  cache=None, progress: bool = True, warn=None, log=None, mixed: bool | None = None) -> dict:
    """Train the recipe on `data` and write the adapter folder `out`; returns its hiahia.json content.

    Everything is checked before training (the file, the config, the model, the folder); the folder is
    written beside `out` and renamed into place at the end, so a killed run leaves no half-written `out`."""
    cfg = recipe_config(overrides)
    out = Path(out)
    check_out(out, force)
    uk = load_user_knowledge(data, seed=cfg.seed, warn=warn)
    replay = user_replay(uk.ks) if cfg.replay else None
    models.resolve(cfg.model, cache)
    clean_stale(out)
    tmp = temp_beside(out)
    try:
        phase = Phases(5, log)
        phase(f"loading {cfg.model}")
        loaded = recipe.load(cfg, device, cache, mixed)
        meta, after, before, history = _train(cfg, uk, replay, data, loaded, cache, progress, phase, out, tmp)
        (tmp / META).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        (tmp / EVALUATION).write_text(json.dumps({"before": before, "after": after}, indent=1, ensure_ascii=False),
                                      encoding="utf-8")
        plot_curve(history, meta["training"]["selected_epoch"], tmp / CURVE)
        (tmp / CARD).write_text(render_card(meta, after, out), encoding="utf-8")
        install(tmp, out, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _train(cfg: RunConfig, uk, replay, data, loaded: recipe.Loaded, cache, progress: bool, phase: Phases, out: Path,
           tmp: Path):
    """The recipe's steps with the card's measurements around them; the adapter is exported into tmp. Returns
    (hiahia.json content, the answers after and before, the loss history)."""
    ks = uk.ks
    n_probe = sum(len(f.test) for f in ks.facts) + len(ks.facts) + len(ks.retention_probes)
    replaying = (f"{len(replay.chosen(cfg.replay, cfg.replay_source))} replay answers (up to "
                 f"{recipe.REPLAY_TOKENS} tokens each), " if replay else "")
    phase(f"untrained model: {replaying}{n_probe} reference answers")
    replayed, dropped = (recipe.replay_triples(loaded.model, loaded.renderer, replay, cfg.replay, progress,
                                               cfg.replay_source) if replay else ([], []))
    t_probe = time.perf_counter()
    before = answer_probes(loaded, ks, cfg, progress, "reference answers")
    probe_s = time.perf_counter() - t_probe
    fitted = recipe.fit(loaded, cfg, ks, replayed, progress, desc="train", announce=lambda n, steps: phase(
        f"training: {n} examples ({len(replayed)} replayed), {cfg.epochs} epochs, {steps} steps"),
        scored=frozenset({cfg.selection}) & frozenset(recipe.SCORED_SELECTIONS))
    selected = recipe.use_checkpoint(loaded.model, fitted, cfg.selection)
    kept_by = {"best_recall": "the most validation questions answered",
               "best_recall_retention": "the most validation questions and general-knowledge probes answered"
               }.get(cfg.selection, "the lowest validation loss")
    selection = (f"epoch {selected} of {cfg.epochs}, {kept_by}"
                 if recipe.keeps_best(fitted, cfg.selection) else
                 f"the last epoch ({selected}): " + ("selection=last" if fitted.validation_examples
                                                     else "no validation questions"))
    phase(f"evaluation: {n_probe} answers (about {probe_s:.0f} s, as the untrained pass took)")
    after = answer_probes(loaded, ks, cfg, progress, "evaluation")
    phase(f"writing {out}")
    base_path = base_model_path(cfg.model, cache)
    export_peft(loaded.model, tmp, base_model_name=base_path)
    result = fitted.result
    meta = {
        "format_version": FORMAT_VERSION, "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": str(Path(cfg.model).resolve()) if Path(cfg.model).is_dir() else cfg.model,
        "base_model_path": base_path, "model_identity": models.weights_fingerprint(cfg.model), "format": loaded.fmt,
        "precision": loaded.precision.tag,
        "data": {"path": str(Path(data).resolve()), "name": ks.name, "sha256": ks.sha256,
                 "splits": split_summary(uk), "carved": uk.carved, "defaults": uk.defaults,
                 "defaults_left_out": uk.left_out, "warnings": uk.warnings},
        "config": cfg.to_dict(),
        "overrides": {k: new for k, (_, new) in RECIPE.replace(model=cfg.model).diff(cfg).items()},
        "training": {"history": result.history, "best_epoch": result.best_epoch, "selected_epoch": selected,
                     "selection": selection, "steps": result.steps, "seconds": result.seconds,
                     "train_examples": fitted.train_examples, "validation_examples": fitted.validation_examples,
                     "replay_kept": len(replayed), "replay_dropped": dropped,
                     "replay_tokens": recipe.REPLAY_TOKENS, "matched_modules": len(fitted.injection["matched"]),
                     "trainable_params": fitted.injection["trainable_params"]},
        "metrics": measurements(before, after),
    }
    meta["seconds"] = phase.elapsed()
    return meta, after, before, result.history
