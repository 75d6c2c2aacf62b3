"""Verdicts: the verdict words and the rule that gives them (one place), each ablation's comparisons with their
verdicts (primary comparisons at a corrected level), the ablation's verdict in words naming its regimes, and whether
validation loss turned up in each regime."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from scipy.stats import t as student_t

from core.analysis.compare import compare, matched
from core.run import metrics
from core.run.config import training_of
from core.run.record import RunRecord
from core.study.ablation import MATCHED, Ablation
from core.study.store import PlanRow

REPRODUCED, NOT_REPRODUCED, OTHER_WAY = "reproduced", "not reproduced", "the other way"
UNTESTABLE, INCONCLUSIVE = "untestable here", "inconclusive"
# A failure may hit only some trainings. "not reproduced" says the failure did not show in any of them, so it needs
# enough of them: a failure that hits PARTIAL of all trainings goes unseen in CONFIRM_SEEDS seeds at most MISSED of
# the time ((1 - PARTIAL) ** CONFIRM_SEEDS = 0.087). A primary comparison whose interval lies below min_effect at
# its declared seeds is run to CONFIRM_SEEDS (the plan adds them, core/study/plan.py) and reads inconclusive
# until then; tests/test_verdicts.py simulates partial failures against this rule.
PARTIAL, MISSED = 0.15, 0.10
CONFIRM_SEEDS = 15  # the smallest n with (1 - PARTIAL) ** n <= MISSED


@dataclass(frozen=True)
class Word:
    """A verdict as the summaries, README and report write and colour it."""
    word: str
    css: str  # the report's class for it
    colour: str  # its colour in figures
    meaning: str


WORDS = (  # in the order the report lists them
    Word(REPRODUCED, "v-yes", "#2e7d32", "the interval excludes 0 in the symptom's direction and the effect is at "
                                         "least min_effect"),
    Word(NOT_REPRODUCED, "v-no", "#607d8b", f"the whole interval lies below min_effect, over at least "
                                            f"{CONFIRM_SEEDS} seeds (a failure that hits {PARTIAL:.0%} of trainings "
                                            f"would have shown)"),
    Word(OTHER_WAY, "v-other", "#6a1b9a", "the interval excludes 0 against the symptom: the factor moves the "
                                          "measure the opposite way"),
    Word(UNTESTABLE, "v-untestable", "#9e9e9e", "the design could not show the failure: the arms are the same "
                                                "model, or the control leaves the measure less room than "
                                                "min_effect in the symptom's direction"),
    Word(INCONCLUSIVE, "v-maybe", "#e0a800", "none of these: the interval reaches min_effect but does not "
                                             "exclude 0, the effect is real but below min_effect, or it lies "
                                             f"below min_effect in fewer than {CONFIRM_SEEDS} seeds"),
)
BY_WORD = {w.word: w for w in WORDS}
# an ablation's verdict: the first its primaries give
PRECEDENCE = (REPRODUCED, OTHER_WAY, INCONCLUSIVE, NOT_REPRODUCED, UNTESTABLE)


def judge(cmp: dict, expected: str, min_effect: float, bounds: tuple[float | None, float | None] = (0.0, 1.0)
          ) -> tuple[str, str]:
    """The rule, from compare()'s numbers: (verdict, why). bounds: the metric's range, for the room the control
    leaves the symptom."""
    if cmp["diff"] is None:
        return INCONCLUSIVE, cmp.get("reason") or "nothing to compare"
    if cmp.get("identical"):
        return UNTESTABLE, "the arms gave the same answers to every item in every seed: the same model"
    sign = 1.0 if expected == "increase" else -1.0
    bound = bounds[1] if sign > 0 else bounds[0]
    control = cmp.get("control")
    if bound is not None and control is not None and sign * (bound - control) < min_effect:
        return UNTESTABLE, (f"the control is at {control:.2f}: less than min_effect from {bound:g}, so the "
                            f"symptom had no room to show")
    effect = sign * cmp["diff"]
    e_low, e_high = min(sign * cmp["low"], sign * cmp["high"]), max(sign * cmp["low"], sign * cmp["high"])
    if e_low > 0 and effect >= min_effect:
        return REPRODUCED, ""
    if e_high < 0:
        return OTHER_WAY, "the interval excludes 0 against the symptom"
    if e_high < min_effect:
        if len(cmp["seeds"]) < CONFIRM_SEEDS:
            return INCONCLUSIVE, (f"not seen in {len(cmp['seeds'])} seeds; 'not reproduced' needs "
                                  f"{CONFIRM_SEEDS}")
        return NOT_REPRODUCED, ""
    return INCONCLUSIVE, ""


def awaits_seeds(cmp: "Comparison") -> bool:
    """A judged comparison whose interval lies below min_effect (and not against the symptom) at fewer than
    CONFIRM_SEEDS seeds: inconclusive until the plan's confirmation seeds are run."""
    if cmp.verdict != INCONCLUSIVE or cmp.diff is None or not cmp.expected or len(cmp.seeds) >= CONFIRM_SEEDS:
        return False
    sign = 1.0 if cmp.expected == "increase" else -1.0
    return 0 <= max(sign * cmp.low, sign * cmp.high) < cmp.min_effect


@dataclass(frozen=True)
class Comparison:
    """One comparison of verdicts.json: a treated arm against the control in a regime, on one metric. Files written
    before a field existed still load (the field takes its empty value); fields this code does not know are
    ignored."""
    metric: str
    expected: str | None = None  # the symptom's direction: a verdict is given only with one (the signature)
    min_effect: float = 0.1
    seeds: list[int] = field(default_factory=list)  # seeds with both arms finished
    level: float | None = None
    per_seed: dict = field(default_factory=dict)  # seed -> [control, treatment] on the items both scored
    mde: float | None = None
    items: int | None = None
    verdict: str | None = None
    diff: float | None = None  # treatment minus control
    low: float | None = None
    high: float | None = None
    method: str | None = None
    reason: str = ""
    primary: bool = False  # decides the ablation's verdict
    p: float | None = None  # one-sided: the chance of an effect this far in the symptom's direction if it were 0
    holm: bool | None = None  # primary only: its effect (> 0 in the symptom's direction) holds under Holm across
    # every primary comparison of the study (holm_across)

    @classmethod
    def from_json(cls, data: dict) -> "Comparison":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def measured_verdict(self) -> str | None:
        """The verdict, or None while no seed has both arms finished: an "inconclusive" there would read as
        measured."""
        return (self.verdict or INCONCLUSIVE) if self.seeds else None


@dataclass
class AblationVerdict:
    """One ablation's entry of verdicts.json: its verdict from the primary comparisons, in words, every comparison,
    and per regime whether validation loss turned up."""
    verdict: str | None = None
    regime: str = ""
    statement: str = ""
    comparisons: dict[str, dict[str, dict[str, Comparison]]] = field(default_factory=dict)  # regime, arm, metric
    validation: dict[str, list[dict]] = field(default_factory=dict)
    # "regime/arm" of each deciding arm -> that arm against the original's own setting (Ablation.original) on the
    # signature, at 95%, exploratory (no verdict)
    from_original: dict[str, Comparison] = field(default_factory=dict)

    def comparison(self, regime: str, arm: str, metric: str) -> Comparison | None:
        return self.comparisons.get(regime, {}).get(arm, {}).get(metric)

    def primaries(self) -> list[tuple[str, str, "Comparison"]]:
        """(regime, arm, comparison) of every comparison stored as deciding the verdict."""
        return [(regime, arm, c) for regime, arms in self.comparisons.items() for arm, by_metric in arms.items()
                for c in by_metric.values() if c.primary]

    def flagged_primary(self, signature: str) -> list[tuple[str, str]]:
        """(regime, arm) of the comparisons stored as deciding the verdict."""
        return [(regime, arm) for regime, arms in self.comparisons.items() for arm, by_metric in arms.items()
                if by_metric.get(signature) is not None and by_metric[signature].primary]

    @classmethod
    def from_json(cls, data: dict | None) -> "AblationVerdict":
        data = data or {}
        comparisons = {regime: {arm: {m: Comparison.from_json({"metric": m, **c}) for m, c in (by_metric or {}).items()}
                                for arm, by_metric in (arms or {}).items()}
                       for regime, arms in (data.get("comparisons") or {}).items()}
        return cls(data.get("verdict"), data.get("regime") or "", data.get("statement") or "", comparisons,
                   data.get("validation") or {},
                   {where: Comparison.from_json(c) for where, c in (data.get("from_original") or {}).items()})

    def to_json(self) -> dict:
        out = {"verdict": self.verdict, "regime": self.regime, "statement": self.statement,
               "comparisons": {g: {a: {m: c.to_json() for m, c in by_metric.items()} for a, by_metric in arms.items()}
                               for g, arms in self.comparisons.items()},
               "validation": self.validation}
        return out | ({"from_original": {w: c.to_json() for w, c in self.from_original.items()}}
                      if self.from_original else {})


def read_verdicts(stored: dict | None) -> dict[str, AblationVerdict]:
    """verdicts.json as typed records ({} for none)."""
    return {name: AblationVerdict.from_json(v) for name, v in (stored or {}).items()}


def judged(control: list[dict], treatment: list[dict], metric: str, expected: str | None, min_effect: float,
           level: float = 0.95, cmp: dict | None = None) -> Comparison:
    """compare() with the verdict (None for a secondary metric, expected None: a difference and its interval
    only); cmp: compare()'s numbers when they come from elsewhere (matched())."""
    cmp = cmp or compare(control, treatment, metric, level)
    m = metrics.get(metric)
    verdict, why = judge(cmp, expected, min_effect, (m.low, m.high)) if expected else (None, "")
    p = None
    if expected and cmp["diff"] is not None:
        sign = 1.0 if expected == "increase" else -1.0
        p = (float(student_t.sf(sign * cmp["diff"] / cmp["se"], cmp["df"])) if cmp["se"]
             else float(sign * cmp["diff"] <= 0))
    return Comparison(metric, expected, min_effect, cmp["seeds"], cmp["level"], cmp["per_seed"], cmp["mde"],
                      cmp.get("items"), verdict, cmp["diff"], cmp["low"], cmp["high"], cmp["method"],
                      why or cmp["reason"], p=p)


def comparisons(ab: Ablation, rows: list[PlanRow], records: dict[str, RunRecord]) -> dict:
    """Every treated arm against the control in every regime, on the signature (primary ones at the corrected
    level) and the ablation's other metrics: {regime: {arm: {metric: Comparison}}}."""
    primary = ab.primary_comparisons()
    out = {}
    for regime in ab.regimes:
        runs = {arm: _arm_runs(rows, records, regime, arm) for arm in ab.arms}
        out[regime] = {}
        for arm in ab.arms:
            if arm == ab.control:
                continue
            deciding = (regime, arm) in primary
            out[regime][arm] = {m: replace(judged(runs[ab.control], runs[arm], m, ab.expected if m == ab.signature
                                                  else None, ab.min_effect,
                                                  ab.primary_level() if deciding and m == ab.signature else 0.95),
                                           primary=deciding and m == ab.signature)
                                for m in [ab.signature, *ab.also]}
        if (regime, MATCHED) in primary:
            out[regime][MATCHED] = {ab.signature: replace(matched_judged(ab, runs), primary=True)}
    return out


def matched_judged(ab: Ablation, runs: dict[str, list[dict]]) -> Comparison:
    """The `match` comparison of an ablation: its treated arms' curve against the others' (compare.matched), on the
    signature at the corrected level."""
    treated = set(ab.match["treated"])
    cmp = matched({a: v for a, v in runs.items() if a not in treated}, {a: runs[a] for a in ab.match["treated"]},
                  ab.match["by"], ab.signature, ab.primary_level())
    return judged([], [], ab.signature, ab.expected, ab.min_effect, ab.primary_level(), cmp)


def to_confirm(ab: Ablation, rows: list[PlanRow], records: dict[str, RunRecord]) -> list[tuple[str, str]]:
    """(regime, arm) of the primary comparisons that await confirmation seeds (awaits_seeds), judged on the
    ablation's declared seeds once every one of them is stored for both arms."""
    out = []
    for regime, arm in ab.primary_comparisons():
        wanted = list(ab.arms) if arm == MATCHED else [ab.control, arm]
        runs = {a: _arm_runs(rows, records, regime, a, ab.seeds) for a in wanted}
        if any(len(v) < ab.seeds for v in runs.values()):
            continue
        cmp = (matched_judged(ab, runs) if arm == MATCHED else
               judged(runs[ab.control], runs[arm], ab.signature, ab.expected, ab.min_effect, ab.primary_level()))
        if awaits_seeds(cmp):
            out.append((regime, arm))
    return out


def holm_across(summary: dict[str, "AblationVerdict"], alpha: float = 0.05) -> int:
    """One family: every primary comparison of the study (11 ablations share the baseline's runs as control).
    Holm's step-down over their one-sided p values at `alpha`; each primary comparison's `holm` says whether it
    is rejected there (its effect in the symptom's direction holds study-wide). Returns the family's size."""
    family = sorted(((c.p, name, regime, arm) for name, v in summary.items()
                     for regime, arm, c in v.primaries() if c.p is not None), key=lambda x: (x[0], x[1:]))
    holds, open_ = set(), True
    for i, (p, *where) in enumerate(family):
        open_ = open_ and p <= alpha / (len(family) - i)
        if open_:
            holds.add(tuple(where))
    for name, v in summary.items():
        for regime, arm, c in v.primaries():
            v.comparisons[regime][arm][c.metric] = replace(c, holm=(name, regime, arm) in holds)
    return len(family)


def _arm_runs(rows: list[PlanRow], records: dict[str, RunRecord], regime: str, arm: str,
              below_seed: int | None = None) -> list[dict]:
    """The stored runs of one arm in one regime (of seeds below `below_seed` when given), as run-record dicts."""
    return [records[r["key"]].to_json() for r in rows if r["regime"] == regime and r["arm"] == arm
            and r["key"] in records and (below_seed is None or r["seed"] < below_seed)]


def from_original(ab: Ablation, rows: list[PlanRow], records: dict[str, RunRecord]) -> dict[str, Comparison]:
    """Each deciding arm against the original's own setting (Ablation.original), on the signature at 95%: where a
    user who starts from the original's setting ends up (everything the two differ in, e.g. the schedule as well as
    the rate). Exploratory: no verdict. {} without `original`."""
    start = ab.original_setting()
    if start is None:
        return {}
    return {f"{regime}/{arm}": judged(_arm_runs(rows, records, *start), _arm_runs(rows, records, regime, arm),
                                      ab.signature, None, ab.min_effect)
            for regime, arm in ab.primary_comparisons() if arm != MATCHED and (regime, arm) != start}


def ablation_verdict(ab: Ablation, rows: list[PlanRow], records: dict[str, RunRecord]) -> AblationVerdict:
    """The ablation's entry of verdicts.json, from the plan rows of this ablation and the stored runs."""
    per_regime = comparisons(ab, rows, records)
    verdict, regime = overall(ab, per_regime)
    return AblationVerdict(verdict, regime, statement(ab, per_regime), per_regime, validation_turns(rows, records),
                           from_original(ab, rows, records))


def overall(ab: Ablation, per_regime: dict) -> tuple[str, str]:
    """The ablation's verdict from its primary comparisons only, the first of PRECEDENCE any of them gives:
    reproduced in one of them > the other way > inconclusive > not reproduced > untestable here (in all of them).
    Other comparisons are exploratory and decide nothing."""
    found = [(regime, per_regime[regime][arm][ab.signature].verdict) for regime, arm in ab.primary_comparisons()
             if arm in per_regime.get(regime, {})]
    for wanted in PRECEDENCE:
        for regime, verdict in found:
            if verdict == wanted:
                return verdict, regime
    return INCONCLUSIVE, ""


def statement(ab: Ablation, per_regime: dict) -> str:
    """The verdict in words, naming the regimes of the primary comparisons: "reproduced under: original_budget",
    "not reproduced under: baseline, overfit, varied" ..."""
    by_verdict: dict[str, list[str]] = {}
    for regime, arm in ab.primary_comparisons():
        cmp = per_regime.get(regime, {}).get(arm, {}).get(ab.signature)
        verdict = (cmp.verdict if cmp is not None else None) or INCONCLUSIVE
        label = regime if len(ab.arms) == 2 else f"{regime}/{arm}"
        by_verdict.setdefault(verdict, []).append(label)
    return "; ".join(f"{v} under: {', '.join(by_verdict[v])}" for v in PRECEDENCE if v in by_verdict)


def validation_turns(rows: list[PlanRow], records: dict[str, RunRecord]) -> dict[str, list[dict]]:
    """Per regime and seed, for runs that trained: the epoch of the lowest validation loss against the last
    epoch. Validation loss "turns up" (overfitting can show) when the minimum comes before the end."""
    out: dict[str, list[dict]] = {}
    seen = set()
    for r in rows:
        rec = records.get(r["key"])
        history = rec.history if rec is not None else []
        val = [h for h in history if h["split"] == "validation"]
        training = (r["regime"], training_of(r["config"]))  # arms that differ only in selection share it
        if not val or training in seen:
            continue
        seen.add(training)
        best = min(val, key=lambda h: h["loss"])
        out.setdefault(r["regime"], []).append({
            "seed": r["seed"], "arm": r["arm"], "best_epoch": best["epoch"], "last_epoch": val[-1]["epoch"],
            "min_loss": best["loss"], "last_loss": val[-1]["loss"], "turned_up": best["epoch"] < val[-1]["epoch"]})
    return out
