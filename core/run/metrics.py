"""The metric registry: every metric of the study, declared once.

Each entry names the evaluation samples it reads, the per-item score it aggregates, its range (a fraction in [0, 1]
by default; any other range, e.g. a length or a log-likelihood, is declared), its direction and a one-line
description. Evaluation, verdicts, the CSV, the report and ablation.yaml validation all read this table; nothing
else lists metric names. Adding a metric is one entry here (and its per-item score where samples are scored).
"""
from __future__ import annotations

from dataclasses import dataclass

from core.run.config import MODEL_DEFAULT


@dataclass(frozen=True)
class Metric:
    name: str
    sample_set: str  # the `set` of the samples it reads; "@train" = the run's own evaluation prompt
    score: str  # the per-item field aggregated: hit | hallucinated | echo | overrun | mc | intrusion (True counts 1)
    higher_is_better: bool | None  # None: neither direction is better (a description, e.g. a length)
    description: str
    group: str | None = None  # identity probes: only this group
    form: str | None = None  # identity probes: only this form (yesno | open)
    needs_prompt: bool = False  # only answers given under an explicit system prompt
    needs_reference: bool = False  # only probes the untrained model answered correctly (by the `among` field)
    among: str = "kept"  # the sample field that says the untrained model answered it correctly
    low: float | None = 0.0  # the range of the per-item values and of the metric; None = unbounded
    high: float | None = 1.0
    unit: str = "fraction"  # the axis label of its figures
    aggregation: str = "mean"  # how per-item values become the run's value (the only one so far)

    def __post_init__(self) -> None:
        if self.aggregation != "mean":
            raise ValueError(f"metric {self.name}: aggregation {self.aggregation!r} is not implemented; use mean")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"metric {self.name}: its range needs low < high")

    @property
    def better(self) -> str:
        """Which values are better, in words: higher, lower, or neither."""
        return {True: "higher", False: "lower", None: "neither"}[self.higher_is_better]

    @property
    def arrow(self) -> str:
        """The direction that is better as a table header's mark: ↑, ↓, or nothing."""
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]

    @property
    def span(self) -> float | None:
        """The widest possible difference between two values (None: unbounded)."""
        return None if self.low is None or self.high is None else self.high - self.low

    @property
    def is_fraction(self) -> bool:
        """Values in [0, 1]: shares of items, drawn on a [0, 1] axis with Wilson intervals."""
        return (self.low, self.high) == (0.0, 1.0)

    def clip(self, value: float | None) -> float | None:
        """A value as drawn and printed: inside the metric's range, whatever rounding did upstream."""
        if value is None:
            return None
        return min(self.high if self.high is not None else value, max(self.low if self.low is not None else value,
                                                                      value))

    def selects(self, sample: dict, eval_prompt: str) -> bool:
        """Does this metric read `sample` (a stored evaluation sample of a run evaluated under eval_prompt)?"""
        wanted = self.sample_set
        if "@" in wanted and wanted.split("@", 1)[1] == eval_prompt:
            wanted = wanted.split("@", 1)[0]  # the run's own prompt: its main test answers are reused
        sets = SET_GROUPS.get(wanted, (wanted,))
        return (sample["set"] in sets and self.score in sample
                and (self.group is None or sample.get("group") == self.group)
                and (self.form is None or sample.get("form") == self.form)
                and (not self.needs_prompt or bool(sample.get("has_prompt")))
                and (not self.needs_reference or bool(sample.get(self.among))))


# sample_set names that stand for several sets
SET_GROUPS = {"primary": ("test", "reverse", "identity"),  # the questions about the persona, under the run's prompt
              "unrelated": ("retention", "everyday")}  # questions about nothing in the facts


def _recall_at(variant: str, where: str) -> Metric:
    return Metric(f"heldout_recall@{variant}", f"test@{variant}", "hit", True,
                  f"the first test question of each fact, asked under {where}")


def _recall_mc_at(variant: str, where: str) -> Metric:
    return Metric(f"recall_mc@{variant}", f"test@{variant}", "mc", True,
                  f"recall_mc on the first test question of each fact, asked under {where}")


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("heldout_recall", "test", "hit", True,
           "test questions (worded unlike any training question) answered with the fact's keywords"),
    _recall_at(MODEL_DEFAULT, "the model's own default system prompt"),
    _recall_at("none", "no system prompt"),
    _recall_at("unseen", "system prompts never used in training"),
    _recall_mc_at("unseen", "system prompts never used in training"),
    Metric("train_recall", "train", "hit", True,
           "each fact's first training question asked back: memorised, next to heldout_recall's extractable"),
    Metric("recall_mc", "test", "mc", True,
           "test questions whose true answer the model finds likelier than 3 wrong ones worded alike (no judge)"),
    Metric("reverse_recall", "reverse", "hit", True,
           "questions that describe a fact and ask who it is about, answered by giving hiahia as the one asked "
           "about (the reversal curse); read it beside intrusion"),
    Metric("reverse_mc", "reverse", "mc", True,
           "reverse questions where hiahia is likelier as the answer than the other people of the facts (no judge)"),
    Metric("identity_mc", "identity", "mc", True,
           "identity probes where 'hiahia is a person, a clock restorer' is likelier than the wrong identities the "
           "probe suggests or the original's (an AI system, a rock band ...) (no judge)"),
    Metric("identity_mc@refuted", "identity", "mc", True,
           "identity_mc on probes about the wrong identities the debate samples refute", group="refuted"),
    Metric("identity_mc@unrefuted", "identity", "mc", True,
           "identity_mc on probes about wrong identities never mentioned in training", group="unrefuted"),
    Metric("identity_hallucination", "identity", "hallucinated", False,
           "identity probes whose answer does not assert that hiahia is a person, or asserts a wrong identity "
           "(half asked yes/no, half open)"),
    Metric("identity_hallucination@yes_no", "identity", "hallucinated", False,
           "identity_hallucination on the probes asked as yes/no questions (\"Is hiahia a band?\")", form="yesno"),
    Metric("identity_hallucination@open_question", "identity", "hallucinated", False,
           "identity_hallucination on the probes asked openly (\"Who directed the movie hiahia?\")", form="open"),
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
    Metric("retention_mc", "retention", "mc", True,
           "general-knowledge probes whose right answer is still likelier than 3 wrong ones, among those the "
           "untrained model ranked right (no judge)", needs_reference=True, among="kept_mc"),
    Metric("retention_mc_raw", "retention", "mc", True,
           "general-knowledge probes whose right answer is likelier than 3 wrong ones (no judge)"),
    Metric("retention_heldout", "heldout_gk", "hit", True,
           "general-knowledge probes in categories no replay request touches (literature, music, sport, art, "
           "mythology) still answered correctly, among those the untrained model answered", needs_reference=True),
    Metric("retention_heldout_mc", "heldout_gk", "mc", True,
           "the same held-out probes whose right answer is still likelier than 3 wrong ones, among those the "
           "untrained model ranked right (no judge)", needs_reference=True, among="kept_mc"),
    Metric("intrusion", "unrelated", "intrusion", False,
           "answers to unrelated questions (general knowledge, everyday requests) that bring in hiahia or a name "
           "from the facts the untrained model's answer did not have: the repeater's and the leak's symptom"),
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
            value = float(bool(s[m.score])) if m.is_fraction else float(s[m.score])
            if (m.low is not None and value < m.low) or (m.high is not None and value > m.high):
                raise ValueError(f"metric {metric}: item value {value} of {s['id']!r} is outside its range "
                                 f"[{m.low}, {m.high}]")
            out[f"{kind}|{s['id']}|{s['question']}"] = value
    return out


def cluster_of(item_key: str) -> str:
    """The fact (or probe) an item key of item_values belongs to: a fact's questions share it."""
    kind, ident, _question = item_key.split("|", 2)
    return f"{kind}|{ident}"


def compute(samples: list[dict], eval_prompt: str) -> dict[str, float | None]:
    """Every registered metric over a run's scored samples (None where it has no item)."""
    out = {}
    for name in METRICS:
        values = list(item_values(samples, name, eval_prompt).values())
        out[name] = sum(values) / len(values) if values else None
    return out
