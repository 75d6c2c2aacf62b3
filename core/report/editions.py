"""What changed since the previous edition: each ablation's verdict, measure, design and seeds in both editions, and
for every verdict that changed, why (a new measure, a new design, more seeds, the stricter verdict rules, or chance
where none of those changed).

The previous edition is a snapshot (data/editions/<edition>.json) written from its tagged commit by
`python tools/edition_snapshot.py <tag>` with snapshot() below, so the comparison needs no git history, and the
current edition is summarised by the same function.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.paths import DATA

PREVIOUS = DATA / "editions" / "edition-2.json"
# third-edition name -> the name the same ablation had before (the second edition's rate sweep was
# training_schedule; that name now belongs to the schedule at fixed rates, a new ablation)
RENAMED = {"learning_rate": "training_schedule"}
DESIGN_FIELDS = ("arms", "regimes", "control", "primary", "expected", "match")
# verdicts only the stricter rules give: identical arms or no room (untestable here); "not reproduced" only on
# CONFIRM_SEEDS seeds (core/analysis/verdicts.py)
STRICTER = {("not reproduced", "inconclusive"), ("not reproduced", "untestable here"),
            ("inconclusive", "untestable here"), ("reproduced", "untestable here")}


def snapshot(metas: dict, outcomes_by_verdict: dict) -> dict:
    """{ablation: what the comparison between editions reads}: its verdict, signature, design and seeds, and the
    deciding effect (findings.outcomes) with the means it is the difference of."""
    found = {o["name"]: (v, o) for v, items in outcomes_by_verdict.items() for o in items}
    out = {}
    for name, ab in metas.items():
        verdict, o = found[name]
        out[name] = {"verdict": verdict, "signature": ab["signature"], "seeds": ab.get("seeds"),
                     "design": {k: ab.get(k) for k in DESIGN_FIELDS},
                     "effect": o["effect"], "means": o["means"], "effect_where": o["effect_where"]}
    return out


def reasons(before: dict, now: dict) -> list[str]:
    """Why an ablation's verdict differs between two snapshots' entries: every cause that applies."""
    why = []
    if before["signature"] != now["signature"]:
        why.append(f"a new measure (`{before['signature']}` -> `{now['signature']}`)")
    if before["design"] != now["design"]:
        changed = [k for k in DESIGN_FIELDS if before["design"].get(k) != now["design"].get(k)]
        why.append(f"a new design ({', '.join(changed)})")
    if (before["seeds"] or 0) < (now["seeds"] or 0):
        why.append(f"more seeds ({before['seeds']} -> {now['seeds']})")
    if (before["verdict"], now["verdict"]) in STRICTER:
        why.append("the stricter verdict rules")
    return why or ["chance: the same measure, design and seeds"]


def changes(before: dict, now: dict) -> dict:
    """{changed: [...], same: [...], new: [...], gone: [...]} between two snapshots; an entry of changed names both
    editions' verdicts and numbers and the reasons."""
    out: dict[str, list] = {"changed": [], "same": [], "new": [], "gone": []}
    matched = set()
    reassigned = set(RENAMED.values()) - set(RENAMED)  # old names that now belong to another ablation
    for name, n in now.items():
        old_name = RENAMED.get(name, name)
        b = None if name in reassigned else before.get(old_name)
        if b is None:
            out["new"].append(name)
            continue
        matched.add(old_name)
        entry = {"name": name, "before_name": old_name, "before": b, "now": n}
        if b["verdict"] == n["verdict"]:
            out["same"].append(entry)
        else:
            out["changed"].append(dict(entry, why=reasons(b, n)))
    out["gone"] = sorted(set(before) - matched)
    return out


def _numbers(entry: dict) -> str:
    means = f"`{entry['signature']}` {entry['means']}, " if entry["means"] else f"`{entry['signature']}` "
    return means + (entry["effect"] or "no effect measured") + (f" ({entry['effect_where']})"
                                                               if entry["effect_where"] else "")


def markdown(c: dict, edition: str) -> list[str]:
    """The README's section lines: the changed verdicts as a table, then the unchanged and the new ablations."""
    lines = [f"What changed since the {edition}: every verdict that changed, with both editions' deciding numbers "
             f"(control -> arm, effect [interval]) and why.", ""]
    if c["changed"]:
        lines += ["| ablation | before | now | before: numbers | now: numbers | why |", "|---|---|---|---|---|---|"]
        for e in c["changed"]:
            was = f" (was {e['before_name']})" if e["before_name"] != e["name"] else ""
            lines.append(f"| {e['name']}{was} | {e['before']['verdict']} | {e['now']['verdict']} | "
                         f"{_numbers(e['before'])} | {_numbers(e['now'])} | {'; '.join(e['why'])} |")
    else:
        lines.append("No verdict changed.")
    if c["same"]:
        lines += ["", "Unchanged: " + "; ".join(f"{e['name']} ({e['now']['verdict']})" for e in c["same"]) + "."]
    if c["new"]:
        lines += ["", "New in this edition: " + ", ".join(c["new"]) + "."]
    if c["gone"]:
        lines += ["", "No longer run: " + ", ".join(c["gone"]) + "."]
    return lines


def previous(path: Path = PREVIOUS) -> dict | None:
    """The previous edition's snapshot; None where there is none."""
    return json.loads(path.read_text()) if path.exists() else None
