"""How often each scorer agrees with human labels (data/labels/): accuracy and Cohen's kappa per kind.

The labels were written by reading each stored answer against data/labels/RUBRIC.md, never by running
a scorer. `python -m core.agreement` rescoring the labelled answers with the current scorers and writes
data/labels/AGREEMENT.md; the tests and the report read the same numbers.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from .knowledge import DEFAULT_DATA, load_knowledge
from .scoring import echoes, general_answer_correct, identity_correct, keywords_hit

LABELS = DEFAULT_DATA.parent / "labels"
KINDS = ("recall", "reverse", "identity", "retention", "echo")
# what label 1 means for each kind, and so what the scorer's positive outcome is
MEANING = {"recall": "gives the fact", "reverse": "names hiahia", "identity": "correct identity",
           "retention": "answered correctly", "echo": "repeats the system prompt"}


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


def load_labelled(folder: Path = LABELS) -> list[dict]:
    """The labelled items: items.jsonl (what the scorers need) joined with labels.csv on `row`."""
    items = {int(d["row"]): d for d in map(json.loads, (folder / "items.jsonl").read_text().splitlines())}
    with open(folder / "labels.csv", newline="") as f:
        labels = {int(r["row"]): r for r in csv.DictReader(f)}
    missing = sorted(set(items) - set(labels))
    if missing:
        raise ValueError(f"{folder / 'labels.csv'}: rows {missing[:5]} have no label; label every row of sheet.csv")
    return [dict(items[r], label=int(labels[r]["label"]), note=labels[r].get("note", "")) for r in sorted(items)]


def score(item: dict, vocab) -> bool:
    """The current scorer's verdict on a labelled item, in the label's sense (see MEANING)."""
    if item["kind"] == "identity":
        return identity_correct(item["answer"], vocab, suggests_wrong=item["suggests_wrong"])
    if item["kind"] == "echo":
        return echoes(item["answer"], item["system"])
    if item["kind"] == "retention":
        return general_answer_correct(item["answer"], item["keywords"], "hiahia")
    return keywords_hit(item["answer"], item["keywords"])


def cohen_kappa(pairs: list[tuple[int, int]]) -> float | None:
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    p_a, p_b = sum(a for a, _ in pairs) / n, sum(b for _, b in pairs) / n
    expected = p_a * p_b + (1 - p_a) * (1 - p_b)
    return None if expected == 1 else (observed - expected) / (1 - expected)


def agreement(items: list[dict] | None = None, data_file: Path = DEFAULT_DATA) -> dict[str, KindAgreement]:
    items = load_labelled() if items is None else items
    vocab = load_knowledge(data_file).identity
    out = {}
    for kind in KINDS:
        rows = [i for i in items if i["kind"] == kind]
        pairs = [(i["label"], int(score(i, vocab))) for i in rows]
        wrong = [dict(row=i["row"], label=i["label"], scorer=s, question=i["question"], answer=i["answer"])
                 for i, (_, s) in zip(rows, pairs) if i["label"] != s]
        out[kind] = KindAgreement(kind, len(rows), len(rows) - len(wrong), cohen_kappa(pairs), wrong)
    return out


def markdown(table: dict[str, KindAgreement]) -> str:
    lines = ["| kind | label 1 means | n | agreement | Cohen's kappa | disagreements |", "| --- | --- | --- | --- | --- | --- |"]
    for a in table.values():
        kappa = f"{a.kappa:.2f}" if a.kappa is not None else "-"
        lines.append(f"| {a.kind} | {MEANING[a.kind]} | {a.n} | {a.accuracy:.1%} | {kappa} | {len(a.disagreements)} |")
    return "\n".join(lines)


def report_text(table: dict[str, KindAgreement]) -> str:
    parts = ["# Scorer agreement with human labels", "",
             "Written by `python -m core.agreement` from data/labels/items.jsonl and labels.csv (labels by reading "
             "against RUBRIC.md). Do not edit by hand; tests/test_scoring.py checks it is current.", "",
             markdown(table), "", "## Disagreeing rows", ""]
    for a in table.values():
        for d in a.disagreements:
            parts.append(f"- {a.kind} row {d['row']}: label {d['label']}, scorer {d['scorer']}. "
                         f"Q: {d['question']!r} A: {d['answer']!r}")
    return "\n".join(parts) + "\n"


def main() -> None:
    table = agreement()
    (LABELS / "AGREEMENT.md").write_text(report_text(table))
    print(markdown(table))


if __name__ == "__main__":
    main()
