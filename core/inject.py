"""`hiahia train`: the study's recommended recipe on a user's facts, written atomically to an adapter folder
(PEFT adapter, hiahia.json, the model card); core/adapted.py loads such a folder again.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import models, run
from .card import plot_curve, render_card
from .config import RunConfig
from .data import MODEL_DEFAULT, KnowledgeSet, Renderer, build_train_examples, build_validation_examples
from .evaluate import generate
from .lora import export_peft, inject_lora, load_trainable_state
from .results import owner_alive
from .scoring import general_answer_correct, keywords_hit
from .train import train
from .userdata import load_user_knowledge, split_summary, user_replay

# The baseline RunConfig plus self-replay of 40 everyday requests (the self_replay ablation: replay raises retention
# without costing recall; its numbers are in the report). format=auto: a base model without a chat template trains
# in plain text.
RECIPE = RunConfig(replay=40, format="auto")
META = "hiahia.json"  # what ask, chat and export need to rebuild base + adapter, and what the card reports
EVALUATION = "evaluation.json"
CARD = "README.md"
CURVE = "training_curve.png"
FORMAT_VERSION = 1


class CommandError(ValueError):
    """Bad input to a `hiahia` command; the message is one line naming what is wrong and the fix."""


def recipe(overrides: dict) -> RunConfig:
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


# ---- the output folder: written beside it, renamed into place ------------------------------------

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


def install(tmp: Path, out: Path) -> None:
    """Put the finished folder in place; an existing `out` (allowed by --force) is moved aside first."""
    umask = os.umask(0)
    os.umask(umask)
    for p in (tmp, *tmp.rglob("*")):  # mkdtemp and some writers create owner-only modes
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)
    if out.exists():
        old = temp_beside(out, "old")
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def base_model_path(spec: str, cache) -> str:
    """What adapter_config.json names as the base: the folder (converted, for embedded models) or hub id."""
    if spec in models.EMBEDDED:
        return str(models.cache_dir(cache) / spec)
    if Path(spec).is_dir():
        return str(Path(spec).resolve())
    return spec


# ---- measuring: the card's before/after answers -----------------------------------------------

def answer_probes(model, renderer: Renderer, ks: KnowledgeSet, cfg: RunConfig, progress: bool, desc: str
                  ) -> list[dict]:
    """Greedy answers under the model's default prompt (as `hiahia ask` asks) to every test question, each
    fact's first training question and the retention probes, each scored."""
    rows = [dict(set="test", id=f.id, question=q, keywords=f.keywords) for f in ks.facts for q in f.test]
    rows += [dict(set="train", id=f.id, question=f.train[0], keywords=f.keywords) for f in ks.facts]
    rows += [dict(set="retention", id=p.id, question=p.question, keywords=p.keywords) for p in ks.retention_probes]
    answers = generate(model, renderer, [(MODEL_DEFAULT, r["question"]) for r in rows], cfg.max_new_tokens,
                       progress=progress, desc=desc)
    for r, a in zip(rows, answers):
        r["answer"] = a
        r["hit"] = (general_answer_correct(a, r["keywords"], ks.name) if r["set"] == "retention"
                    else keywords_hit(a, r["keywords"]))
        r["keywords"] = [list(g) for g in r["keywords"]]
    return rows


def _share(rows: list[dict], kind: str, among: set | None = None) -> dict:
    chosen = [r for r in rows if r["set"] == kind and (among is None or r["id"] in among)]
    hits = sum(r["hit"] for r in chosen)
    return {"hits": hits, "n": len(chosen), "value": hits / len(chosen) if chosen else None}


def measurements(before: list[dict], after: list[dict]) -> dict:
    known = {r["id"] for r in before if r["set"] == "retention" and r["hit"]}
    return {"heldout_recall": _share(after, "test"), "heldout_recall_before": _share(before, "test"),
            "train_recall": _share(after, "train"), "train_recall_before": _share(before, "train"),
            "retention": _share(after, "retention", known), "retention_raw": _share(after, "retention"),
            "retention_raw_before": _share(before, "retention")}


# ---- the command ----------------------------------------------------------------------------------

def train_adapter(data: str | Path, out: str | Path, overrides: dict, force: bool = False, device: str = "cpu",
                  cache=None, progress: bool = True, warn=None, log=None) -> dict:
    """Train the recipe on `data` and write the adapter folder `out`; returns its hiahia.json content.

    Everything is checked before training (the file, the config, the model, the folder); the folder is
    written beside `out` and renamed into place at the end, so a killed run leaves no half-written `out`."""
    cfg = recipe(overrides)
    out = Path(out)
    check_out(out, force)
    uk = load_user_knowledge(data, seed=cfg.seed, warn=warn)
    ks = uk.ks
    replay = user_replay(ks) if cfg.replay else None
    models.resolve(cfg.model, cache)
    clean_stale(out)
    tmp = temp_beside(out)
    phase = Phases(5, log)
    try:
        phase(f"loading {cfg.model}")
        precision = models.pick_precision(device)
        torch.manual_seed(cfg.seed)
        model, tok = models.load(cfg.model, device=precision, cache=cache)
        fmt = run.resolve_format(cfg, tok)
        renderer = Renderer(tok, fmt)
        n_probe = sum(len(f.test) for f in ks.facts) + len(ks.facts) + len(ks.retention_probes)
        replaying = (f"{min(cfg.replay, len(replay.questions))} replay answers (up to {run.REPLAY_TOKENS} tokens "
                     f"each), " if replay else "")
        phase(f"untrained model: {replaying}{n_probe} reference answers")
        replayed, dropped = run.replay_triples(model, renderer, replay, cfg.replay, progress) if replay else ([], [])
        t_probe = time.perf_counter()
        with precision.autocast():
            before = answer_probes(model, renderer, ks, cfg, progress, "reference answers")
        probe_s = time.perf_counter() - t_probe

        torch.manual_seed(cfg.seed)  # LoRA A initialisation depends only on the seed
        injection = inject_lora(model, cfg.lora_targets, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.use_rslora)
        train_ex = build_train_examples(ks, cfg, renderer, replayed)
        val_ex = build_validation_examples(ks, cfg, renderer)
        steps = -(-len(train_ex) // cfg.batch_size) * cfg.epochs
        phase(f"training: {len(train_ex)} examples ({len(replayed)} replayed), {cfg.epochs} epochs, {steps} steps")
        result = train(model, train_ex, val_ex, cfg, tok.pad_token_id, progress=progress, desc="train",
                       precision=precision)
        best = cfg.selection == "best" and bool(val_ex)
        load_trainable_state(model, result.best_state if best else result.last_state)
        selected = result.best_epoch if best else result.last_epoch
        selection = (f"epoch {selected} of {cfg.epochs}, the lowest validation loss" if best else
                     f"the last epoch ({selected}): " + ("selection=last" if val_ex else "no validation questions"))

        phase(f"evaluation: {n_probe} answers (about {probe_s:.0f} s, as the untrained pass took)")
        with precision.autocast():
            after = answer_probes(model, renderer, ks, cfg, progress, "evaluation")

        phase(f"writing {out}")
        base_path = base_model_path(cfg.model, cache)
        export_peft(model, tmp, base_model_name=base_path)
        meta = {
            "format_version": FORMAT_VERSION, "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "model": str(Path(cfg.model).resolve()) if Path(cfg.model).is_dir() else cfg.model,
            "base_model_path": base_path, "model_identity": models.weights_fingerprint(cfg.model), "format": fmt,
            "precision": precision.tag,
            "data": {"path": str(Path(data).resolve()), "name": ks.name, "sha256": ks.sha256,
                     "splits": split_summary(uk), "carved": uk.carved, "defaults": uk.defaults,
                     "defaults_left_out": uk.left_out, "warnings": uk.warnings},
            "config": cfg.to_dict(), "overrides": {k: new for k, (_, new) in RECIPE.replace(model=cfg.model).diff(cfg).items()},
            "training": {"history": result.history, "best_epoch": result.best_epoch, "selected_epoch": selected,
                         "selection": selection, "steps": result.steps, "seconds": result.seconds,
                         "train_examples": len(train_ex), "validation_examples": len(val_ex),
                         "replay_kept": len(replayed), "replay_dropped": dropped,
                         "replay_tokens": run.REPLAY_TOKENS, "matched_modules": len(injection.matched),
                         "trainable_params": injection.trainable_params},
            "metrics": measurements(before, after),
        }
        meta["seconds"] = phase.elapsed()
        (tmp / META).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        (tmp / EVALUATION).write_text(json.dumps({"before": before, "after": after}, indent=1, ensure_ascii=False),
                                      encoding="utf-8")
        plot_curve(result.history, selected, tmp / CURVE)
        (tmp / CARD).write_text(render_card(meta, after, out), encoding="utf-8")
        install(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta
