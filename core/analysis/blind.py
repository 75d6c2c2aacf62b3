"""The blind scorer check (data/labels/blind/): stored answers drawn at random within each arm, read by two
independent readers against a rubric about correctness only (data/labels/blind/RUBRIC.md, never a scorer's rules), a
third reading settling their disagreements; scorers were developed on the dev batches and are reported on the
held-out batch alone, labelled before any further scorer change.

Per scorer: agreement with the labels, Cohen's kappa, precision (labelled positive among the scorer's positives) and
recall (the scorer's positives among the labelled positives), each with a Wilson 95% interval; and, for the study's
baseline recipe, the scorer's raw rate next to the prevalence corrected for its errors (Rogan-Gladen).
`python -m core.analysis.blind` writes data/labels/blind/AGREEMENT.md; tests/test_scoring.py checks it is current.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from core.analysis.agreement import KINDS, MEANING, cohen_kappa, labeller_agreement, load_labelled, score
from core.paths import DATA, RESULTS, ROOT
from core.run.config import RunConfig
from core.run.knowledge import KnowledgeSet, load_knowledge
from core.run.metrics import METRICS

BLIND = DATA / "labels" / "blind"
HELDOUT = BLIND / "heldout"  # the first held-out batch; its AGREEMENT.md reports every held-out batch
# every held-out batch, pooled per scorer: heldout2 adds 150 recall answers, drawn (and its use decided, e3377ad)
# after the recall scorer missed the bar's lower bound on the first (144 of 150: Wilson lower bound 0.9155 < 0.92)
HELDOUT_BATCHES = (HELDOUT, BLIND / "heldout2")
# one arm's answers (base_vs_chat's base model), read to check the recall scorer on the model whose arm heldout_recall
# decides; not a uniform draw, so reported by model beside the pooled table, never pooled into it (rule: bece191)
ARM_CHECKS = (BLIND / "base_model",)
DEV_BATCHES = (BLIND / "dev", BLIND / "dev2")
TARGET, TARGET_LOW = 0.95, 0.92  # a scorer passes at >= 95% agreement with a 95% lower bound >= 0.92
# the study's set each kind reads (retention answers also serve intrusion; echo reads the persona questions)
KIND_OF_SET = {"test": "recall", "train": "recall", "test@model_default": "recall", "test@none": "recall",
               "test@unseen": "recall", "reverse": "reverse", "identity": "identity", "retention": "retention"}


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rogan_gladen(raw: float, sensitivity: float | None, specificity: float | None) -> float | None:
    """The prevalence a raw positive rate implies once the scorer's sensitivity and specificity are allowed for,
    clipped to [0, 1]; None when the scorer does no better than chance (sensitivity + specificity <= 1)."""
    if sensitivity is None or specificity is None or sensitivity + specificity <= 1:
        return None
    return min(1.0, max(0.0, (raw + specificity - 1) / (sensitivity + specificity - 1)))


def answers_by_kind(results: Path, taken: set[tuple] = frozenset(), unique: bool = True
                    ) -> dict[str, dict[str, list[dict]]]:
    """{kind: {arm: [items]}} over every finished run of results/plan.json, each answer once per kind (see dedup;
    unique=False: every run's own answers, so one arm's count does not depend on which other runs exist) and
    none of `taken`. An arm is ABLATION/REGIME/ARM (a run shared by several arms: the first), or "untrained".
    intrusion reads the general-knowledge answers of trained runs, each next to its untrained reference's answer."""
    plan = json.loads((results / "plan.json").read_text())
    names, untrained_of = {}, {}
    for r in plan["rows"]:
        names.setdefault(r["key"], f"{r['ablation']}/{r['regime']}/{r['arm']}")
        names.setdefault(r["untrained_key"], "untrained")
        untrained_of[r["key"]] = r["untrained_key"]
    records = {}
    for path in sorted((results / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") == "ok" and rec["key"] in names:
            records[rec["key"]] = rec
    gold = {p.id: p.gold for p in load_knowledge().retention_probes}
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    seen = set(taken)
    for key, rec in records.items():
        arm = names[key]
        before = {s["id"]: s["answer"] for s in records.get(untrained_of.get(key, ""), {}).get("samples", [])
                  if s["set"] == "retention"}
        for s in rec["samples"]:
            for kind in _kinds(s, arm, before):
                if unique and dedup(kind, s) in seen:
                    continue
                seen.add(dedup(kind, s))
                out[kind][arm].append(_item(kind, s, key, arm, rec, before, gold))
    return out


def _kinds(sample: dict, arm: str, before: dict) -> list[str]:
    kinds = [KIND_OF_SET[sample["set"]]] if sample["set"] in KIND_OF_SET else []
    if sample.get("has_prompt") and sample["set"] in ("test", "reverse", "identity"):
        kinds.append("echo")
    if sample["set"] == "retention" and arm != "untrained" and sample["id"] in before:
        kinds.append("intrusion")
    return kinds


def dedup(kind: str, item: dict) -> tuple:
    """What makes two answers the same item of a kind."""
    return kind, item.get("system") if kind == "echo" else "", item["question"], item["answer"]


def _item(kind: str, s: dict, key: str, arm: str, rec: dict, before: dict, gold: dict) -> dict:
    """Everything a scorer needs about one answer, and the reference a reader is shown."""
    reference = {"recall": s["expected"], "reverse": "hiahia",
                 "identity": "hiahia is a person (a human clock restorer)",
                 "retention": gold.get(s["id"], s["expected"]), "intrusion": "", "echo": ""}[kind]
    return {"kind": kind, "set": s["set"], "id": s["id"], "group": s.get("group", ""), "form": s.get("form", ""),
            "run_key": key, "arm": arm, "suggests": s.get("suggests"), "question": s["question"], "system": s["system"],
            "answer": s["answer"], "keywords": s["keywords"], "expected": s["expected"], "reference": reference,
            "untrained_answer": before.get(s["id"], "") if kind == "intrusion" else "",
            "model": rec["config"]["model"]}


@dataclass
class ScorerCheck:
    kind: str
    n: int
    agree: int
    kappa: float | None
    true_pos: int
    scorer_pos: int
    label_pos: int
    baseline_raw: float | None = None  # the scorer's positive rate on the baseline recipe's answers
    baseline_n: int = 0

    @property
    def agreement(self) -> float:
        return self.agree / self.n

    @property
    def precision(self) -> float | None:
        return self.true_pos / self.scorer_pos if self.scorer_pos else None

    @property
    def recall(self) -> float | None:
        return self.true_pos / self.label_pos if self.label_pos else None

    @property
    def specificity(self) -> float | None:
        negatives = self.n - self.label_pos
        return (negatives - (self.scorer_pos - self.true_pos)) / negatives if negatives else None

    @property
    def passes(self) -> bool:
        return _passes(self.agree, self.n)

    @property
    def corrected(self) -> float | None:
        return None if self.baseline_raw is None else rogan_gladen(self.baseline_raw, self.recall, self.specificity)


def baseline_rates(results: Path, knowledge: KnowledgeSet) -> dict[str, tuple[float, int]]:
    """{kind: (the current scorer's positive rate, answers)} over the answers of the baseline recipe's runs (the
    default RunConfig at any seed)."""
    recipe = RunConfig().to_dict()
    found = answers_by_kind(results, unique=False)
    plan = json.loads((results / "plan.json").read_text())
    keys = {r["key"] for r in plan["rows"]  # stored configs gain the fields added since, as defaults
            if dict(RunConfig.from_dict(r["config"]).to_dict(), seed=recipe["seed"]) == recipe}
    out = {}
    for kind, arms in found.items():
        items = [i for items in arms.values() for i in items if i["run_key"] in keys]
        if items:
            out[kind] = (sum(score(i, knowledge) for i in items) / len(items), len(items))
    return out


def labelled_batches(folders: Path | tuple[Path, ...] = HELDOUT_BATCHES) -> list[Path]:
    """The batches of `folders` whose labels are settled (labels.csv); a batch still being read counts nowhere."""
    folders = (folders,) if isinstance(folders, Path) else folders
    return [f for f in folders if (f / "labels.csv").exists()]


def scorer_of(metric: str) -> str | None:
    """The blind check's kind whose scorer a metric counts with; None for a judge-free metric (likelihood choices,
    the end-of-turn token)."""
    m = METRICS[metric]
    if m.score in ("mc", "overrun"):
        return None
    by_score = {"hallucinated": "identity", "echo": "echo", "intrusion": "intrusion"}
    if m.score in by_score:
        return by_score[m.score]
    # the held-out general-knowledge family is scored by the retention scorer (never sampled on its own answers)
    kind = (KIND_OF_SET | {"heldout_gk": "retention"}).get(m.sample_set)
    if kind is None:
        raise KeyError(f"{metric}: its sample set {m.sample_set!r} has no scorer kind here (KIND_OF_SET)")
    return kind


def check(folder: Path | tuple[Path, ...] = HELDOUT_BATCHES, results: Path | None = RESULTS,
          knowledge: KnowledgeSet | None = None) -> dict[str, ScorerCheck]:
    """Each kind's ScorerCheck on the labelled batches, pooled; with `results`, the baseline recipe's raw rates too."""
    knowledge = knowledge or load_knowledge()
    items = [i for f in labelled_batches(folder) for i in load_labelled(f)]
    rates = baseline_rates(results, knowledge) if results is not None and (results / "plan.json").exists() else {}
    out = {}
    for kind in KINDS:
        rows = [i for i in items if i["kind"] == kind]
        if not rows:
            continue
        pairs = [(i["label"], int(score(i, knowledge))) for i in rows]
        raw, n_raw = rates.get(kind, (None, 0))
        out[kind] = ScorerCheck(kind, len(rows), sum(a == b for a, b in pairs), cohen_kappa(pairs),
                                sum(a and b for a, b in pairs), sum(b for _, b in pairs), sum(a for a, _ in pairs),
                                raw, n_raw)
    return out


def _share(k: int, n: int, digits: int = 2) -> str:
    if not n:
        return "-"
    low, high = wilson(k, n)
    return f"{k / n:.1%} [{low:.{digits}f}, {high:.{digits}f}]"


def _passes(agree: int, n: int) -> bool:
    """The bar: >= TARGET agreement with a Wilson 95% lower bound >= TARGET_LOW."""
    return agree / n >= TARGET and wilson(agree, n)[0] >= TARGET_LOW


def markdown(table: dict[str, ScorerCheck]) -> str:
    lines = ["| scorer | label 1 means | n | agreement [95% CI] | kappa | precision [95% CI] | recall [95% CI] | "
             "passes | baseline: raw rate | baseline: corrected |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in table.values():
        kappa = "-" if c.kappa is None else f"{c.kappa:.2f}"
        raw = "-" if c.baseline_raw is None else f"{c.baseline_raw:.3f} (n={c.baseline_n})"
        corrected = "-" if c.corrected is None else f"{c.corrected:.3f}"
        lines.append(f"| {c.kind} | {MEANING[c.kind]} | {c.n} | {_share(c.agree, c.n)} | {kappa} | "
                     f"{_share(c.true_pos, c.scorer_pos)} | {_share(c.true_pos, c.label_pos)} | "
                     f"{'yes' if c.passes else '**no**'} | {raw} | {corrected} |")
    return "\n".join(lines)


def _where(folder: Path) -> str:
    return folder.relative_to(ROOT).as_posix() if folder.is_relative_to(ROOT) else folder.as_posix()


def tally(folders: list[Path], knowledge: KnowledgeSet, key) -> dict:
    """{key(item, batch): (answers, agreed)} over the labelled answers of `folders`: how often the scorer agrees with
    the settled label, counted per whatever `key` names (None: the answer is not counted)."""
    out: dict = defaultdict(lambda: [0, 0])
    for f in folders:
        for i in load_labelled(f):
            if (k := key(i, f.name)) is not None:
                out[k][0] += 1
                out[k][1] += i["label"] == int(score(i, knowledge))
    return {k: (n, agree) for k, (n, agree) in out.items()}


def by_batch(folders: list[Path], knowledge: KnowledgeSet) -> dict[str, list[tuple[str, int, int]]]:
    """{kind: [(batch, answers, agreed)]} for each kind read in more than one batch."""
    out = defaultdict(list)
    for (kind, batch), (n, agree) in tally(folders, knowledge, lambda i, batch: (i["kind"], batch)).items():
        out[kind].append((batch, n, agree))
    return {k: out[k] for k in KINDS if len(out.get(k, [])) > 1}


def by_model(kind: str, folders: list[Path], knowledge: KnowledgeSet) -> dict[str, tuple[int, int]]:
    """{model: (answers, agreed)} for one scorer over every labelled answer of `folders`."""
    return dict(sorted(tally(folders, knowledge,
                             lambda i, _: i.get("model", "?") if i["kind"] == kind else None).items()))


def report_text(table: dict[str, ScorerCheck], folder: Path | tuple[Path, ...] = HELDOUT_BATCHES,
                knowledge: KnowledgeSet | None = None, arm_checks: tuple[Path, ...] = ARM_CHECKS) -> str:
    folders = labelled_batches(folder)
    parts = ["# Blind scorer check", "",
             f"Written by `python -m core.analysis.blind` from "
             f"{', '.join(_where(f) + '/' for f in folders + labelled_batches(arm_checks))} "
             f"(items.jsonl, labels.csv). Do not edit by hand; "
             "tests/test_scoring.py checks it is current.", "",
             f"The {sum(c.n for c in table.values())} answers were drawn uniformly at random within each arm of the "
             "stored runs (tools/sample_labels.py), never by a scorer's outcome, and none was in a development batch. "
             "Two readers labelled each answer alone against data/labels/blind/RUBRIC.md, which says what a right "
             "answer is and nothing about how a scorer decides; a third reading settled their disagreements. The "
             "readers were language-model agents, not people. The scorers were improved on the development batches "
             "(dev/, dev2/) only, and these labels were written before any further scorer change.", ""]
    if len(folders) > 1:
        parts += [f"A further batch ({', '.join(f.name for f in folders[1:])}) was drawn the same way after the first "
                  f"({folders[0].name}) had been read, to narrow an interval that missed the bar; what it would decide "
                  "was written down (commit e3377ad) before any of its labels. Each scorer's row pools the batches; "
                  "each batch alone (3 decimals: the bar's bound is 0.92): " + "; ".join(
                      f"{kind} " + ", ".join(f"{name} {agree} of {n}, {_share(agree, n, 3)}, "
                                             f"{'passes' if _passes(agree, n) else 'misses'}"
                                             for name, n, agree in rows)
                      for kind, rows in by_batch(folders, knowledge or load_knowledge()).items()) + ".", ""]
    if checks := labelled_batches(arm_checks):
        models = by_model("recall", folders + checks, knowledge or load_knowledge())
        parts += [f"The recall scorer by model, over the recall answers of {', '.join(f.name for f in folders)} "
                  f"and {', '.join(f.name for f in checks)} (answers of base_vs_chat's base arm that no other arm "
                  "gave first, read to check the model whose arm heldout_recall decides there; not pooled above, "
                  "being one arm; the development batches aside): "
                  + "; ".join(f"{m} {agree} of {n} ({agree / n:.1%})" for m, (n, agree) in models.items()) + ".", ""]
    for f in folders + checks:
        if between := labeller_agreement(f):
            parts += [f"The two readers of {f.name} agreed on {between['agree']} of {between['n']} answers "
                      f"({between['agree'] / between['n']:.1%})"
                      + (" before the third reading." if between["agree"] < between["n"] else
                         ": no third reading was needed."), ""]
    parts += [f"A scorer passes at >= {TARGET:.0%} agreement with a 95% lower bound >= {TARGET_LOW}. "
              "Baseline: the scorer's positive rate on every answer of the baseline recipe's runs, and that rate "
              "corrected for the scorer's recall and specificity here (Rogan-Gladen).", "", markdown(table), ""]
    parts.append(misses(table))
    return "\n".join(parts) + "\n"


def misses(table: dict[str, ScorerCheck]) -> str:
    """The sentence under the table: which scorers miss the bar, and what that means for the verdicts."""
    missing = [c.kind for c in table.values() if not c.passes]
    return ("Every scorer passes." if not missing else
            f"Scorers that miss: {', '.join(missing)}. No ablation has a metric of a scorer that misses as its "
            f"signature; their metrics are reported as secondary, beside the likelihood metrics that need no judge.")


def main() -> None:
    table = check()
    (HELDOUT / "AGREEMENT.md").write_text(report_text(table))
    print(markdown(table))


if __name__ == "__main__":
    main()
