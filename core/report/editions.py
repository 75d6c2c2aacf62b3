"""What changed since the previous edition: each ablation's verdict, measure, design and seeds in both editions, and
for every verdict that changed, the recorded differences that could explain it (a new measure, a new design, more
seeds, the stricter verdict rules), or that none of them changed.

The previous edition is a snapshot (data/editions/<tag>.json) written from its tagged commit by
`python tools/edition_snapshot.py <tag>`: its name, the names its ablations have now where they were renamed, and
per ablation what snapshot() below records, the same function that summarises the current edition; so the
comparison needs no git history. Only the published study is compared (readme.block).
"""
from __future__ import annotations

import json
from pathlib import Path

from core.paths import DATA

PREVIOUS = DATA / "editions" / "edition-2.json"
DESIGN_FIELDS = ("arms", "regimes", "control", "primary", "expected", "match", "min_effect")
# verdict pairs only the current rules give: "untestable here" (identical arms, or a control with no room) and
# "not reproduced" only on CONFIRM_SEEDS seeds (core/analysis/verdicts.py); the older rules already required
# room for "reproduced"
STRICTER = {("not reproduced", "inconclusive"), ("not reproduced", "untestable here"),
            ("inconclusive", "untestable here")}
NONE_RECORDED = "none of the recorded differences (measure, design, seeds); code and data changed too"


def snapshot(metas: dict, outcomes_by_verdict: dict) -> dict:
    """{ablation: what the comparison between editions reads}: its verdict, signature, design, the seeds its
    deciding comparisons measured, and the deciding effect (findings.outcomes) with the means it is the difference
    of."""
    found = {o["name"]: (v, o) for v, items in outcomes_by_verdict.items() for o in items}
    out = {}
    for name, ab in metas.items():
        verdict, o = found[name]
        out[name] = {"verdict": verdict, "signature": ab["signature"], "seeds": o["measured_seeds"],
                     "design": {k: ab.get(k) or None for k in DESIGN_FIELDS},  # absent and empty read alike
                     "effect": o["effect"], "means": o["means"], "effect_where": o["effect_where"]}
    return out


def differences(before: dict, now: dict) -> list[str]:
    """The recorded differences between an ablation's two entries: measure, design (naming the fields), seeds."""
    out = []
    if before["signature"] != now["signature"]:
        out.append(f"a new measure (`{before['signature']}` -> `{now['signature']}`)")
    # a new measure may run the other way (hallucination down, identity_mc up): its direction is no new design
    changed = [k for k in DESIGN_FIELDS if before["design"].get(k) != now["design"].get(k)
               and not (k == "expected" and before["signature"] != now["signature"])]
    if changed:
        out.append(f"a new design ({', '.join(changed)})")
    if (before["seeds"] or 0) < (now["seeds"] or 0):
        out.append(f"more seeds ({before['seeds']} -> {now['seeds']})")
    return out


def changes(previous: dict, now: dict) -> dict:
    """{changed, same, new, gone} between a previous edition's snapshot file ({edition, renamed, ablations}) and the
    current snapshot; each entry of changed and same names both editions' numbers and the recorded differences
    (for a changed verdict also whether only the stricter rules give it, or that nothing recorded changed)."""
    before, renamed = previous["ablations"], previous.get("renamed") or {}
    reassigned = set(renamed.values()) - set(renamed)  # old names that now belong to another ablation
    out: dict[str, list] = {"changed": [], "same": [], "new": [], "gone": []}
    matched = set()
    for name, n in now.items():
        old_name = renamed.get(name, name)
        b = None if name in reassigned else before.get(old_name)
        if b is None:
            out["new"].append(name)
            continue
        matched.add(old_name)
        entry = {"name": name, "before_name": old_name, "before": b, "now": n, "why": differences(b, n)}
        if b["verdict"] == n["verdict"]:
            out["same"].append(entry)
            continue
        if (b["verdict"], n["verdict"]) in STRICTER:
            entry["why"].append("the stricter verdict rules")
        out["changed"].append(dict(entry, why=entry["why"] or [NONE_RECORDED]))
    out["gone"] = sorted(set(before) - matched)
    return out


def _numbers(entry: dict) -> str:
    means = f"`{entry['signature']}` {entry['means']}, " if entry["means"] else f"`{entry['signature']}` "
    return means + (entry["effect"] or "no effect measured") + (f" ({entry['effect_where']})"
                                                               if entry["effect_where"] else "")


def markdown(c: dict, edition: str) -> list[str]:
    """The README's section lines: the changed verdicts as a table, then the unchanged ones (with what changed under
    them) and the new ablations."""
    lines = [f"What changed since the {edition}: every verdict that changed, with both editions' deciding numbers "
             f"(control -> arm, effect [interval]) and the recorded differences that could explain it.", ""]
    if c["changed"]:
        lines += ["| ablation | before | now | before: numbers | now: numbers | recorded differences |",
                  "|---|---|---|---|---|---|"]
        for e in c["changed"]:
            was = f" (was {e['before_name']})" if e["before_name"] != e["name"] else ""
            lines.append(f"| {e['name']}{was} | {e['before']['verdict']} | {e['now']['verdict']} | "
                         f"{_numbers(e['before'])} | {_numbers(e['now'])} | {'; '.join(e['why'])} |")
    else:
        lines.append("No verdict changed.")
    if c["same"]:
        lines += ["", "Unchanged: " + "; ".join(
            f"{e['name']} ({e['now']['verdict']}" + (f"; under {', '.join(e['why'])}" if e["why"] else "") + ")"
            for e in c["same"]) + "."]
    if c["new"]:
        lines += ["", "New in this edition: " + ", ".join(c["new"]) + "."]
    if c["gone"]:
        lines += ["", "No longer run: " + ", ".join(c["gone"]) + "."]
    return lines


def previous(path: Path = PREVIOUS) -> dict | None:
    """The previous edition's snapshot file; None where there is none."""
    return json.loads(path.read_text()) if path.exists() else None
