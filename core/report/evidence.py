"""Links from the pages to the evidence: the results folder's files as seen from the report folder, and the
command that reruns one ablation into a folder of its own (so a partial run never overwrites published results).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import quote

from core.run.config import RunConfig
from core.run.knowledge import DEFAULT_DATA
from core.study.ablation import PLACEHOLDER
from core.study.store import PlanRow, precision_flags

EVIDENCE_FILES = (("summary.csv", "every run's metrics, one row per run and metric"),
                  ("verdicts.json", "every comparison: effect, interval, per-seed values, verdict"),
                  ("plan.json", "every planned run: ablation, regime, arm, seed, config, key"))


def results_href(results_dir: Path, out_dir: Path) -> str:
    """The results folder relative to the report folder, as a URL path (absolute where no relative path exists)."""
    try:
        rel = os.path.relpath(Path(results_dir).resolve(), Path(out_dir).resolve())
    except ValueError:  # another drive: no relative path
        return Path(results_dir).resolve().as_uri()
    return quote(Path(rel).as_posix())


def evidence_files(results_dir: Path, href: str) -> list[dict]:
    """The results folder's summary files with their links; one that is not there is marked, not linked."""
    return [{"name": name, "what": what, "href": f"{href}/{name}" if (Path(results_dir) / name).exists() else None}
            for name, what in EVIDENCE_FILES]


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _pair(ab: dict, rows: list[PlanRow]) -> str | None:
    """The --pair whose models the planned rows use (None: the ablation's first pair, the default, or none)."""
    pairs = ab.get("pairs") or {}
    for name, roles in pairs.items():
        if all(_resolve(v, roles) == r["config"].get(k) for r in rows
               for k, v in {**(ab.get("regimes") or {}).get(r["regime"], {}), **ab["arms"].get(r["arm"], {})}.items()
               if isinstance(v, str) and PLACEHOLDER.fullmatch(v)):
            return None if name == next(iter(pairs)) else name
    return None


def _resolve(value, roles: dict):
    m = PLACEHOLDER.fullmatch(value) if isinstance(value, str) else None
    return roles.get(m[1]) if m else value


def _baseline_overrides(ab: dict, rows: list[PlanRow]) -> dict:
    """Fields every planned row sets to the same non-default value although neither its arm nor its regime
    overrides them: the --set options the study ran with."""
    default = {k: list(v) if isinstance(v, tuple) else v for k, v in RunConfig().to_dict().items()}
    seen: dict[str, list] = {}
    for r in rows:
        own = {**(ab.get("regimes") or {}).get(r["regime"], {}), **ab["arms"].get(r["arm"], {}), "seed": None}
        for k, v in r["config"].items():
            v = list(v) if isinstance(v, (list, tuple)) else v
            if k in default and k not in own and v not in seen.get(k, []):
                seen.setdefault(k, []).append(v)
    return {k: values[0] for k, values in seen.items() if len(values) == 1 and values[0] != default[k]}


def precision_options(records: list) -> list[str]:
    """--device and --precision as the finished runs record them (environment.precision, e.g. cpu-bfloat16-mixed),
    so a rerun computes as they did whatever its hardware would pick by default; none when the runs disagree."""
    tags = {rec.environment.get("precision") for rec in records if rec is not None and rec.ok} - {None}
    return precision_flags(tags.pop()) if len(tags) == 1 else []


def reproduce_command(ab: dict, rows: list[PlanRow], runs: dict | None = None) -> str:
    """`python run_all.py --only <name> --results results-<name>`, plus the --seeds, --pair and --set options that
    the planned rows show the study used, and the device and precision its stored runs record."""
    parts = ["python", "run_all.py", "--only", ab["name"]]
    planned = {r["arm"]: set() for r in rows}
    for r in rows:
        planned[r["arm"]].add(r["seed"])
    seeds = max((len(s) for s in planned.values()), default=0)
    if seeds and ab.get("seeds") and seeds < ab["seeds"]:
        parts += ["--seeds", str(seeds)]
    pair = _pair(ab, rows) if rows else None
    if pair:
        parts += ["--pair", pair]
    for k, v in sorted(_baseline_overrides(ab, rows).items()):
        parts += ["--set", f"{k}={_shown(v)}"]
    parts += precision_options([(runs or {}).get(r["key"]) for r in rows])
    return " ".join(parts + ["--results", f"results-{ab['name']}"])


def data_note(shas: list[str]) -> str:
    """What the reproduce command cannot say: the runs' data file, when it is not today's default one."""
    try:
        default = hashlib.sha256(DEFAULT_DATA.read_bytes()).hexdigest()
    except OSError:
        default = ""
    other = [sha for sha in shas if sha != default]
    if not other:
        return ""
    return (f"These runs read a data file other than {DEFAULT_DATA.parent.name}/{DEFAULT_DATA.name} as it is now "
            f"(sha256 {', '.join(sha[:12] for sha in other)}): add --data FILE with that file.")
