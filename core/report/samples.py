"""Sample answers side by side: one table per seed, questions where the arms answered differently first, and the
questions every arm answered alike marked (the page hides them behind a toggle).

Questions come from each set the ablation measures: test (one per fact), reverse, identity and retention probes,
plus the sets its metrics read (test@<variant>, overrun, ...).
"""
from __future__ import annotations

from core.report.data import gap, status
from core.run.metrics import METRICS
from core.run.record import RunRecord

QUOTA = {"test": 6, "reverse": 3, "identity": 5, "retention": 4}  # questions shown per set and seed
OTHER_QUOTA = 3  # for a set that only one of the ablation's metrics reads


def shown_sets(metrics: list[str]) -> list[str]:
    """The sample sets shown: the four every run answers, then those the metrics read, in metric order."""
    sets = list(QUOTA)
    for m in metrics:
        wanted = METRICS[m].sample_set if m in METRICS else "primary"
        if wanted != "primary" and wanted not in sets:
            sets.append(wanted)
    return sets


def _key(s: dict) -> tuple:
    return s["set"], s["id"], s["question"]


def _norm(answer) -> str:
    return " ".join(str(answer or "").lower().split())


def _spread(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    if n <= 0:
        return []
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _candidates(ref: RunRecord, sample_set: str) -> list[dict]:
    """A set's questions in the reference run's order: the first test question of each fact; retention probes
    the untrained model answered (those retention counts) first."""
    found = [s for s in ref.samples if s["set"] == sample_set]
    if sample_set == "test":
        return list({s["id"]: s for s in reversed(found)}.values())[::-1]
    if sample_set == "retention":
        return [s for s in found if s.get("kept")] + [s for s in found if not s.get("kept")]
    return found


def _answers(index: list[dict | None], key: tuple) -> list[str]:
    return [_norm(idx[key]["answer"]) for idx in index if idx is not None and key in idx]


def _differs(index: list[dict | None], key: tuple) -> bool:
    return len(set(_answers(index, key))) > 1


def sample_tables(columns_by_seed: list[tuple[int, list[tuple[str, dict, RunRecord | None]]]],
                  sets: tuple[str, ...] | list[str] = tuple(QUOTA)) -> dict | None:
    """columns_by_seed: [(seed, [(label, plan row, record), ...]), ...]; one table per seed with the same questions,
    chosen where the arms' answers differ in the most seeds. None when no run has samples."""
    indexes = [(seed, cols, [{_key(s): s for s in rec.samples} if status(rec) == "ok" else None
                             for _, _, rec in cols]) for seed, cols in columns_by_seed]
    ref = next((rec for _, cols in columns_by_seed for _, _, rec in cols if status(rec) == "ok"), None)
    if ref is None:
        return {"tables": [{"seed": seed, "head": _head(cols), "rows": [], "hidden": 0, "hidden_sets": ""}
                           for seed, cols, _ in indexes]} if indexes else None
    chosen = []
    for sample_set in sets:
        found = _candidates(ref, sample_set)
        score = {_key(s): sum(_differs(index, _key(s)) for _, _, index in indexes) for s in found}
        differ = [s for s in found if score[_key(s)]]
        quota = QUOTA.get(sample_set, OTHER_QUOTA)
        chosen += differ[:quota] + _spread([s for s in found if not score[_key(s)]], quota - len(differ[:quota]))
    return {"tables": [_table(seed, cols, index, chosen) for seed, cols, index in indexes]}


def _head(cols: list) -> list[dict]:
    return [{"label": label, "seed": row["seed"], "key": row["key"] if status(rec) == "ok" else None,
             "gap": None if status(rec) == "ok" else gap(rec, row["key"])} for label, row, rec in cols]


def _table(seed: int, cols: list, index: list[dict | None], chosen: list[dict]) -> dict:
    rows = []
    for s in chosen:
        cells, systems = [], []
        for (label, _, _), idx in zip(cols, index):
            got = idx.get(_key(s)) if idx is not None else None
            if idx is None:
                cells.append({"gap": True})
            elif got is None:
                cells.append({"answer": None})
            else:
                cells.append({"answer": got["answer"], "hit": bool(got.get("hit")), "echo": bool(got.get("echo")),
                              "kept": got.get("kept")})
                systems.append((label, "(no system prompt)" if got.get("system") is None else got["system"]))
        answered = _answers(index, _key(s))
        # retention counts a probe against each arm's own untrained model (chat or plain format, another model):
        # where the arms' references disagree, each cell says whether its arm counts it
        kept = {c["kept"] for c in cells if c.get("kept") is not None}
        per_cell = s["set"] == "retention" and len(kept) > 1
        rows.append({"set": s["set"], "id": s["id"], "question": s["question"], "expected": s["expected"],
                     "kept": s.get("kept") if s["set"] == "retention" and not per_cell else None,
                     "kept_per_arm": per_cell,
                     "same": len(cols) > 1 and len(answered) > 1 and len(set(answered)) == 1,
                     "systems": systems if len({sp for _, sp in systems}) > 1 else
                     # one column (the untrained model's page): the prompt needs no column name
                     [("every arm" if len(systems) > 1 else label if len(cols) > 1 else None, sp)
                      for label, sp in systems[:1]],
                     "cells": cells})
    rows.sort(key=lambda r: r["same"])  # stable: answers that differ first, each part in set order
    hidden: dict[str, int] = {}
    for r in rows:
        if r["same"]:
            hidden[r["set"]] = hidden.get(r["set"], 0) + 1
    return {"seed": seed, "head": _head(cols), "rows": rows, "hidden": sum(hidden.values()),
            "hidden_sets": ", ".join(f"{n} {name}" for name, n in hidden.items())}
