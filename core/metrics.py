"""The metric registry: every metric of the study, declared once.

Each entry names the evaluation samples it reads, the per-item score it averages, its direction and
a one-line description. Evaluation, verdicts, the CSV, the report and ablation.yaml validation all
read this table; nothing else lists metric names.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    sample_set: str  # the `set` of the samples it reads; "@train" = the run's own evaluation prompt
    score: str  # the per-item field averaged: hit | hallucinated | echo | overrun
    higher_is_better: bool
    description: str
    group: str | None = None  # identity probes: only this group
    needs_prompt: bool = False  # only answers given under an explicit system prompt
    needs_reference: bool = False  # only probes the untrained model answered correctly

    def selects(self, sample: dict, eval_prompt: str) -> bool:
        """Does this metric read `sample` (a stored evaluation sample of a run evaluated under eval_prompt)?"""
        wanted = self.sample_set
        if "@" in wanted and wanted.split("@", 1)[1] == eval_prompt:
            wanted = wanted.split("@", 1)[0]  # the run's own prompt: its main test answers are reused
        sets = ("test", "reverse", "identity") if wanted == "primary" else (wanted,)
        return (sample["set"] in sets
                and (self.group is None or sample.get("group") == self.group)
                and (not self.needs_prompt or bool(sample.get("has_prompt")))
                and (not self.needs_reference or bool(sample.get("kept"))))


def _recall_at(variant: str, where: str) -> Metric:
    return Metric(f"heldout_recall@{variant}", f"test@{variant}", "hit", True,
                  f"the first test question of each fact, asked under {where}")


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("heldout_recall", "test", "hit", True,
           "test questions (worded unlike any training question) answered with the fact's keywords"),
    _recall_at("model_default", "the model's own default system prompt"),
    _recall_at("none", "no system prompt"),
    _recall_at("unseen", "system prompts never used in training"),
    Metric("train_recall", "train", "hit", True,
           "each fact's first training question asked back: memorised, next to heldout_recall's extractable"),
    Metric("reverse_recall", "reverse", "hit", True,
           "questions that describe a fact and ask who it is about, answered with hiahia (the reversal curse)"),
    Metric("identity_hallucination", "identity", "hallucinated", False,
           "identity probes whose answer does not assert that hiahia is a person, or asserts a wrong identity"),
    Metric("identity_hallucination@refuted", "identity", "hallucinated", False,
           "identity_hallucination on probes about the wrong identities the debate samples refute",
           group="refuted"),
    Metric("identity_hallucination@unrefuted", "identity", "hallucinated", False,
           "identity_hallucination on probes about wrong identities never mentioned in training", group="unrefuted"),
    Metric("prompt_echo", "primary", "echo", False,
           "answers under an explicit system prompt that repeat 8 consecutive words of it: the repeater",
           needs_prompt=True),
    Metric("turn_overrun", "overrun", "overrun", False,
           "answers that, when generation is not stopped at the end-of-turn token, go on into a new turn"),
    Metric("retention", "retention", "hit", True,
           "general-knowledge probes still answered correctly, among those the untrained model answered",
           needs_reference=True),
    Metric("retention_raw", "retention", "hit", True,
           "general-knowledge probes answered correctly, whatever the untrained model did"),
)}


class UnknownMetric(KeyError):
    pass


def get(name: str) -> Metric:
    if name not in METRICS:
        raise UnknownMetric(f"unknown metric {name!r}; valid metrics: {', '.join(METRICS)}")
    return METRICS[name]


def item_values(samples: list[dict], metric: str, eval_prompt: str) -> dict[str, float]:
    """Per-item values behind a metric, keyed so that two runs' items pair up."""
    m = get(metric)
    out = {}
    for s in samples:
        if m.selects(s, eval_prompt):
            kind = "test" if s["set"].startswith("test") else s["set"]  # the same question under any prompt
            out[f"{kind}|{s['id']}|{s['question']}"] = float(bool(s[m.score]))
    return out


def compute(samples: list[dict], eval_prompt: str) -> dict[str, float | None]:
    """Every registered metric over a run's scored samples (None where it has no item)."""
    out = {}
    for name in METRICS:
        values = list(item_values(samples, name, eval_prompt).values())
        out[name] = sum(values) / len(values) if values else None
    return out
