"""RunConfig: every knob of one training run, with the baseline ("fixed recipe") defaults.

Nothing else in the project reads hyper-parameters from anywhere; ablations are diffs against this.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields

# what a prompt named "model_default" (eval_prompt, and the retention probes) means: no system turn given, so the
# chat template's own default applies
MODEL_DEFAULT = "model_default"
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class RunConfig:
    # model and data format
    model: str = "smollm2-135m-instruct"
    format: str = "chat"  # chat (tokenizer's template) | plain ("Question: ...\nAnswer: ...") | auto (chat if any)
    system_prompt: str = "random"  # random (training pool) | fixed (fixed_prompt) | none
    fixed_prompt: str = "fixed_assistant"  # name of a prompt under system_prompts in the data file
    mask_labels: bool = True  # loss on answer + end-of-turn only; False = loss on every token
    debate: bool = True  # add refutation samples for wrong identities
    paraphrases: int = 4  # training questions used per fact (1..4)
    answers: str = "canonical"  # canonical (one answer sentence per fact) | varied (each question its own wording)
    split: str = "fixed"  # fixed (the file's train/validation questions) | random (seeded ~15% of all pairs validate)
    replay: int = 0  # general questions (data/replay.yaml) answered by the untrained model, added to training
    replay_source: str = "general"  # general (replay:) | entities (entity_replay: the real places and things the
    # facts mention) | both (the first replay//2 of entities, the rest general)
    distill: float = 0.0  # weight of a KL term that keeps the replayed answers' next-token distributions the
    # untrained model's (learning without forgetting; needs replay)
    # LoRA
    lora_targets: tuple[str, ...] = ALL_LINEAR  # name suffixes, or one regex string
    lora_strict: bool = True
    lora_r: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    use_rslora: bool = False
    full_finetune: bool = False  # train every weight instead of LoRA (reference arm)
    # optimisation
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # constant | linear | cosine
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    epochs: int = 4
    batch_size: int = 8
    # best (lowest validation loss) | last | best_recall (most validation questions answered) | best_recall_retention
    # (validation recall plus the share of the validation general-knowledge probes the untrained model answered
    # that it still answers)
    selection: str = "best"
    interpolate: float = 1.0  # evaluate the weights' update scaled by this (WiSE-FT; 1 = as trained): no new training
    seed: int = 0
    # evaluation
    eval_prompt: str = "train"  # train (training's policy) | model_default | none | unseen (held-out pool) | <prompt>
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.lora_targets, list):
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        if isinstance(self.lora_targets, str):
            object.__setattr__(self, "lora_targets", (self.lora_targets,))
        choices = {
            "format": ("chat", "plain", "auto"),
            "system_prompt": ("random", "fixed", "none"),
            "lr_schedule": ("constant", "linear", "cosine"),
            "selection": ("best", "last", "best_recall", "best_recall_retention"),
            "replay_source": ("general", "entities", "both"),
            "answers": ("canonical", "varied"),
            "split": ("fixed", "random"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"RunConfig.{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if self.replay < 0:
            raise ValueError(f"RunConfig.replay={self.replay}: must be >= 0 (0 = no replay)")
        if not 1 <= self.paraphrases <= 4:
            raise ValueError(f"RunConfig.paraphrases={self.paraphrases}: must be between 1 and 4")
        if self.epochs < 0 or self.batch_size < 1 or self.lora_r < 1:
            raise ValueError("RunConfig: epochs must be >= 0 (0 = the untrained reference); batch_size, lora_r >= 1")
        check_ranges(self)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        check_keys(d, where="config")
        return cls(**d)

    def diff(self, other: "RunConfig") -> dict:
        """Fields where other differs from self: {name: (self value, other value)}."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}

    def key(self, context: str = "") -> str:
        """Stable short hash of the config and `context` (everything else that decides a run's results: the code
        version, model weights, data, device kind and compute precision; core/study/plan.key_context): the run's
        cache key."""
        blob = json.dumps(self.to_dict(), sort_keys=True) + "|" + context
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


EVALUATION_ONLY = ("selection", "interpolate")  # fields that choose what is evaluated of a training, not the training


def training_of(config: dict) -> tuple:
    """What identifies one training in a stored config: every field but EVALUATION_ONLY. Configs that differ only in
    those share one training (its checkpoints, and their scaled updates, are evaluated from it)."""
    return tuple(sorted((k, str(v)) for k, v in config.items() if k not in EVALUATION_ONLY))


def check_ranges(cfg: RunConfig) -> None:
    """Values that would otherwise fail (or silently do nothing) only once a run is under way."""
    problems = {
        "lr": (not cfg.lr > 0, "must be > 0"),
        "warmup_ratio": (not 0 <= cfg.warmup_ratio < 1, "must be in [0, 1)"),
        "lora_targets": (not cfg.lora_targets or not all(t.strip() for t in cfg.lora_targets),
                         "must name at least one module (suffixes, or one regex)"),
        "max_new_tokens": (cfg.max_new_tokens < 1, "must be >= 1"),
        "distill": (not cfg.distill >= 0 or (cfg.distill > 0 and not cfg.replay),
                    "must be >= 0, and > 0 only with replay > 0 (the KL term is on the replayed answers)"),
        "interpolate": (not 0 <= cfg.interpolate <= 1, "must be in [0, 1]"),
    }
    for name, (bad, rule) in problems.items():
        if bad:
            raise ValueError(f"RunConfig.{name}={getattr(cfg, name)!r}: {rule}")

FIELD_NAMES = tuple(f.name for f in fields(RunConfig))


def check_keys(d: dict, where: str) -> None:
    unknown = sorted(set(d) - set(FIELD_NAMES))
    if unknown:
        raise KeyError(f"{where}: unknown RunConfig field(s) {', '.join(unknown)}; valid fields: {', '.join(FIELD_NAMES)}")


def parse_value(name: str, text: str):
    """Turn a --set string into the type of the RunConfig field `name`."""
    check_keys({name: None}, where=f"--set {name}=...")
    default = getattr(RunConfig(), name)
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {name}={text}: expected true or false")
    if isinstance(default, tuple):
        return tuple(t.strip() for t in text.split(",") if t.strip())
    try:
        return type(default)(text)
    except ValueError:
        kind = {int: "a whole number", float: "a number"}.get(type(default), "text")
        raise ValueError(f"--set {name}={text}: expected {kind}") from None


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: use key=value, e.g. --set lr=5e-4")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(k.strip(), v.strip())
    return out
