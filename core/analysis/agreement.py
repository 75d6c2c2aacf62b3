"""How often each scorer agrees with labels written by reading (data/labels/): accuracy and Cohen's kappa per kind.

The labels were written by reading each stored answer against data/labels/RUBRIC.md, never by running
a scorer. The readers so far were language-model agents, not people (README: "Scorer agreement"); a person can
label sheet.csv the same way and compare. `python -m core.analysis.agreement` rescores the labelled answers with the
current scorers and writes data/labels/AGREEMENT.md; the tests and the report read the same numbers.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from core.paths import DATA, ROOT
from core.run.evaluate import answer_hit
from core.run.knowledge import DEFAULT_DATA, KnowledgeSet, load_knowledge
from core.run.scoring import echoes, identity_correct, intruding_terms

LABELS = DATA / "labels"
KINDS = ("recall", "reverse", "identity", "retention", "intrusion", "echo")
# what label 1 means for each kind, and so what the scorer's positive outcome is
MEANING = {"recall": "gives the fact", "reverse": "names hiahia", "identity": "correct identity",
           "retention": "answered correctly", "intrusion": "hiahia intrudes", "echo": "repeats the system prompt"}
# the study's set whose scorer each kind checks (evaluate.answer_hit)
SET_OF_KIND = {"recall": "test", "reverse": "reverse", "retention": "retention"}


@dataclass
class KindAgreement:
    kind: str
    n: int
    agree: int
    kappa: float | None
    disagreements: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.agree / self.n if self.n else 0.0


def _labels(path: Path) -> dict[int, dict]:
    with open(path, newline="") as f:
        return {int(r["row"]): r for r in csv.DictReader(f)}


def load_labelled(folder: Path = LABELS) -> list[dict]:
    """The labelled items: items.jsonl (what the scorers need) joined with labels.csv on `row`."""
    items = {int(d["row"]): d for d in map(json.loads, (folder / "items.jsonl").read_text().splitlines())}
    labels = _labels(folder / "labels.csv")
    missing = sorted(set(items) - set(labels))
    if missing:
        raise ValueError(f"{folder / 'labels.csv'}: rows {missing[:5]} have no label; label every row of sheet.csv")
    return [dict(items[r], label=int(labels[r]["label"]), note=labels[r].get("note", "")) for r in sorted(items)]


def labeller_agreement(folder: Path) -> dict | None:
    """How often two independent labellers (labels_a.csv, labels_b.csv) agreed before their disagreements were
    settled in labels.csv: the ceiling a scorer can be held to. None without both files."""
    if not ((folder / "labels_a.csv").exists() and (folder / "labels_b.csv").exists()):
        return None
    a, b = _labels(folder / "labels_a.csv"), _labels(folder / "labels_b.csv")
    pairs = [(int(a[r]["label"]), int(b[r]["label"])) for r in sorted(set(a) & set(b))]
    return {"n": len(pairs), "agree": sum(x == y for x, y in pairs), "kappa": cohen_kappa(pairs)}


def score(item: dict, knowledge: KnowledgeSet) -> bool:
    """The study's scorer's verdict on a labelled item, in the label's sense (see MEANING): the same functions
    evaluation scores with."""
    kind = item["kind"]
    if kind == "identity":
        suggests = item["suggests_wrong"] if "suggests_wrong" in item else bool(item.get("suggests"))
        return identity_correct(item["answer"], knowledge.identity, suggests_wrong=suggests)
    if kind == "echo":
        return echoes(item["answer"], item["system"])
    if kind == "intrusion":
        return bool(intruding_terms(item["answer"], item["untrained_answer"], knowledge.intrusion_terms,
                                    item["question"], item["keywords"]))
    return answer_hit(SET_OF_KIND[kind], item["answer"], item["keywords"], knowledge, item["question"])


def cohen_kappa(pairs: list[tuple[int, int]]) -> float | None:
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    p_a, p_b = sum(a for a, _ in pairs) / n, sum(b for _, b in pairs) / n
    expected = p_a * p_b + (1 - p_a) * (1 - p_b)
    return None if expected == 1 else (observed - expected) / (1 - expected)


def agreement(items: list[dict] | None = None, data_file: Path = DEFAULT_DATA,
              folder: Path = LABELS) -> dict[str, KindAgreement]:
    """Per kind (and per identity probe group, for answers that record one: identity@refuted, @unrefuted,
    @open), how often the current scorer agrees with the labels."""
    items = load_labelled(folder) if items is None else items
    knowledge = load_knowledge(data_file)
    groups = sorted({i.get("group") for i in items if i["kind"] == "identity" and i.get("group")})
    out = {}
    for kind in [*KINDS, *(f"identity@{g}" for g in groups)]:
        base, _, group = kind.partition("@")
        rows = [i for i in items if i["kind"] == base and (not group or i.get("group") == group)]
        if not rows:  # a batch without echo answers (no system prompt) has no echo row
            continue
        pairs = [(i["label"], int(score(i, knowledge))) for i in rows]
        wrong = [dict(row=i["row"], label=i["label"], scorer=s, question=i["question"], answer=i["answer"])
                 for i, (_, s) in zip(rows, pairs) if i["label"] != s]
        out[kind] = KindAgreement(kind, len(rows), len(rows) - len(wrong), cohen_kappa(pairs), wrong)
    return out


def by_arm(table: dict[str, KindAgreement], items: list[dict]) -> dict[str, tuple[int, int]]:
    """{arm the answers came from: (answers, answers the scorer agrees on)}, every kind together, read off the
    kinds' disagreements (rows are numbered across a batch): does a scorer hold on every arm's answers (a base
    model's plain text, a model that never saw refutations)?"""
    wrong = {d["row"] for kind, a in table.items() if "@" not in kind for d in a.disagreements}
    out: dict[str, list[int]] = {}
    for i in items:
        n_agree = out.setdefault(i.get("arm", "?"), [0, 0])
        n_agree[0] += 1
        n_agree[1] += i["row"] not in wrong
    return {arm: (n, agree) for arm, (n, agree) in sorted(out.items())}


def markdown(table: dict[str, KindAgreement]) -> str:
    lines = ["| kind | label 1 means | n | agreement | Cohen's kappa | disagreements |", "| --- | --- | --- | --- | --- | --- |"]
    for a in table.values():
        kappa = f"{a.kappa:.2f}" if a.kappa is not None else "-"
        lines.append(f"| {a.kind} | {MEANING[a.kind.partition('@')[0]]} | {a.n} | {a.accuracy:.1%} | {kappa} | "
                     f"{len(a.disagreements)} |")
    return "\n".join(lines)


def report_text(table: dict[str, KindAgreement], folder: Path = LABELS) -> str:
    where = folder.relative_to(ROOT).as_posix() if folder.is_relative_to(ROOT) \
        else folder.as_posix()
    parts = ["# Scorer agreement with labels by reading", "",
             f"Written by `python -m core.analysis.agreement` from {where}/items.jsonl and labels.csv (labels written by "
             "reading each answer against data/labels/RUBRIC.md; the readers were language-model agents, not "
             "people). Do not edit by hand; tests/test_scoring.py checks it is current.", ""]
    between = labeller_agreement(folder)
    if between:
        kappa = "-" if between["kappa"] is None else f"{between['kappa']:.2f}"
        parts += [f"Two labellers, each reading every row alone (labels_a.csv, labels_b.csv), agreed on "
                  f"{between['agree']} of {between['n']} rows ({between['agree'] / between['n']:.1%}, Cohen's kappa "
                  f"{kappa}); labels.csv settles the rest by a third reading (its note says how).", ""]
    parts += [markdown({k: a for k, a in table.items() if "@" not in k}), ""]
    groups = {k: a for k, a in table.items() if "@" in k}
    if groups:
        parts += ["Identity answers by probe group:", "", markdown(groups), ""]
    arms = by_arm(table, load_labelled(folder))
    parts += ["Answers by the arm they came from (every kind together):", "", "| arm | n | agreement |",
              "| --- | --- | --- |", *(f"| {arm} | {n} | {agree / n:.1%} |" for arm, (n, agree) in arms.items()), ""]
    parts += ["## Disagreeing rows", ""]
    for a in table.values():
        if "@" in a.kind:
            continue
        for d in a.disagreements:
            parts.append(f"- {a.kind} row {d['row']}: label {d['label']}, scorer {d['scorer']}. "
                         f"Q: {d['question']!r} A: {d['answer']!r}")
    return "\n".join(parts) + "\n"


# the first edition's answers; the second edition's first runs (no_masking, baseline, untrained); its arms where
# the remaining identity verdicts rest (debate_augmentation without debate, chatml_vs_plain plain text,
# base_vs_chat's base model)
BATCHES = (LABELS, LABELS / "edition2", LABELS / "edition2b")


def batches_markdown() -> str:
    """Every labelled batch's agreement table (identity probe groups included) under a line naming the batch and
    how often its two labellers agreed: the scorer-agreement block of docs/terms-and-measures.md (core.report.readme writes it)."""
    parts = []
    for folder in BATCHES:
        if not (folder / "labels.csv").exists():
            continue
        table = agreement(folder=folder)
        n = sum(a.n for k, a in table.items() if "@" not in k)
        head = f"`{folder.relative_to(ROOT).as_posix()}/` ({n} answers"
        if between := labeller_agreement(folder):
            head += (f"; its two labellers agreed on {between['agree']} of {between['n']} before a third reading "
                     f"settled the rest")
        parts += [head + "):", "", markdown(table), ""]
    return "\n".join(parts).rstrip("\n")


def main() -> None:
    for folder in BATCHES:
        if not (folder / "labels.csv").exists():
            print(f"{folder}: not labelled yet")
            continue
        table = agreement(folder=folder)
        (folder / "AGREEMENT.md").write_text(report_text(table, folder))
        print(f"{folder}:\n{markdown(table)}")


if __name__ == "__main__":
    main()
