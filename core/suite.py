"""Ablation discovery (ablations/<name>/ablation.yaml), the run plan, and the run_all command line.

Every arm is the baseline RunConfig plus a regime's overrides plus the arm's own overrides; runs are
cached by config key in results/runs/, so identical configs are trained once and a rerun resumes.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from . import metrics, models
from .config import FIELD_NAMES, RunConfig, check_keys, parse_overrides
from .data import DEFAULT_DATA, load_knowledge, load_replay
from .results import RESULTS, compare, load_run, write_json_atomic

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"


class SuiteError(ValueError):
    """Bad command line or ablation definition; the message lists the valid choices."""


@dataclass
class Ablation:
    name: str
    title: str
    factor: str
    symptom: str
    signature: str
    expected: str  # increase | decrease: the treatment's effect on the signature if the symptom reproduces
    control: str
    arms: dict[str, dict]
    # the comparison(s) that decide the verdict: "arm" (in every regime) or "regime/arm"; with m of them
    # each interval is at level 1 - 0.05/m (Bonferroni), so the ablation's verdict keeps a 5% error rate
    primary: list[str] = field(default_factory=list)
    regimes: dict[str, dict] = field(default_factory=lambda: {"baseline": {}})
    also: list[str] = field(default_factory=list)
    min_effect: float = 0.1
    kind: str = "pairwise"  # pairwise | sweep (arms are points along `axis`)
    axis: str | None = None
    order: int = 100
    notes: str = ""
    coupled: list[str] = field(default_factory=list)  # fields deliberately changed together with the factor
    seeds: int | None = None  # at most this many seeds, whatever --seeds asks (for the costlier sweeps)

    def configs(self, baseline: RunConfig, seed: int, pair: tuple[str, str]) -> dict[tuple[str, str], RunConfig]:
        out = {}
        for regime, r_over in self.regimes.items():
            for arm, a_over in self.arms.items():
                values = {**r_over, **a_over, "seed": seed}
                values = {k: (pair[0] if v == "{pair.base}" else pair[1] if v == "{pair.chat}" else v)
                          for k, v in values.items()}
                out[(regime, arm)] = baseline.replace(**values)
        return out

    def meta(self) -> dict:
        return dict(self.__dict__)

    def primary_comparisons(self) -> list[tuple[str, str]]:
        """(regime, arm) pairs named by `primary`; ValueError when one is not a treatment arm."""
        if not isinstance(self.primary, list) or not self.primary:
            raise ValueError("give a list of the treatment arm(s) whose comparison decides the verdict, "
                             f"e.g. [{next((a for a in self.arms if a != self.control), 'arm')}] or [regime/arm]")
        out = []
        for entry in self.primary:
            regime, _, arm = str(entry).rpartition("/")
            regimes = [regime] if regime else list(self.regimes)
            if regime and regime not in self.regimes:
                raise ValueError(f"{entry!r}: no regime {regime!r}; regimes: {', '.join(self.regimes)}")
            if arm not in self.arms or arm == self.control:
                raise ValueError(f"{entry!r}: {arm!r} is not a treatment arm; "
                                 f"arms: {', '.join(a for a in self.arms if a != self.control)}")
            out += [(r, arm) for r in regimes if (r, arm) not in out]
        return out

    def primary_level(self) -> float:
        return 1 - 0.05 / len(self.primary_comparisons())


def load_ablation(folder: Path) -> Ablation:
    path = folder / "ablation.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SuiteError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    required = ("title", "factor", "symptom", "signature", "expected", "control", "arms", "primary")
    missing = [k for k in required if k not in (raw or {})]
    if missing:
        raise SuiteError(f"{path}: missing field(s) {', '.join(missing)}; required: {', '.join(required)}")
    known = set(Ablation.__dataclass_fields__) - {"name"}
    unknown = set(raw) - known
    if unknown:
        raise SuiteError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
    ab = Ablation(name=folder.name, **raw)
    if ab.control not in ab.arms:
        raise SuiteError(f"{path}: control {ab.control!r} is not one of the arms {', '.join(ab.arms)}")
    if ab.seeds is not None and (not isinstance(ab.seeds, int) or ab.seeds < 1):
        raise SuiteError(f"{path}: seeds must be a whole number >= 1 (or left out for --seeds), not {ab.seeds!r}")
    if ab.kind not in ("pairwise", "sweep"):
        raise SuiteError(f"{path}: kind must be pairwise or sweep, not {ab.kind!r}")
    if ab.kind == "sweep" and not ab.axis:
        raise SuiteError(f"{path}: a sweep needs axis: the RunConfig field its arms vary")
    bad = [f for f in ab.coupled if f not in FIELD_NAMES]
    if bad:
        raise SuiteError(f"{path}: coupled field(s) {', '.join(bad)} are not RunConfig fields; "
                         f"valid: {', '.join(FIELD_NAMES)}")
    if ab.axis and ab.axis not in FIELD_NAMES:
        raise SuiteError(f"{path}: axis {ab.axis!r} is not a RunConfig field; valid: {', '.join(FIELD_NAMES)}")
    for m in [ab.signature, *ab.also]:
        if m not in metrics.METRICS:
            raise SuiteError(f"{path}: unknown metric {m!r} (signature/also); valid metrics: {', '.join(metrics.METRICS)}")
    if ab.expected not in ("increase", "decrease"):
        raise SuiteError(f"{path}: expected must be increase or decrease, not {ab.expected!r}")
    try:
        ab.primary_comparisons()
    except ValueError as e:
        raise SuiteError(f"{path}: primary: {e}") from None
    for label, section in (("arms", ab.arms), ("regimes", ab.regimes)):
        for name, over in section.items():
            try:
                check_keys(over or {}, where=f"{path}: {label} {name!r}")
            except KeyError as e:
                raise SuiteError(e.args[0]) from None
            section[name] = over or {}
    return ab


def discover(root: Path = ABLATIONS) -> dict[str, Ablation]:
    found = [load_ablation(d) for d in sorted(root.iterdir()) if (d / "ablation.yaml").exists()]
    return {a.name: a for a in sorted(found, key=lambda a: (a.order, a.name))}


def select(available: dict[str, Ablation], only: str | None) -> list[Ablation]:
    if not only:
        return list(available.values())
    names = [n.strip() for n in only.split(",") if n.strip()]
    bad = [n for n in names if n not in available]
    if bad:
        raise SuiteError(f"unknown ablation(s) {', '.join(bad)}; valid: {', '.join(available)}")
    return [available[n] for n in names]


# ---- plan and execution -------------------------------------------------------------------------

def build_plan(ablations: list[Ablation], baseline: RunConfig, seeds: int, pair: tuple[str, str], identity) -> list[dict]:
    """One row per (ablation, regime, arm, seed) with its config and cache key."""
    rows = []
    for ab in ablations:
        for seed in range(min(seeds, ab.seeds or seeds)):
            for (regime, arm), cfg in ab.configs(baseline, seed, pair).items():
                before = untrained_config(cfg, baseline)
                rows.append({"ablation": ab.name, "regime": regime, "arm": arm, "seed": seed,
                             "config": cfg, "key": cfg.key(identity(cfg)), "untrained_key": before.key(identity(before))})
    return rows


def run_identity(cfg: RunConfig, data_sha256: str, device: str, replay_sha=None) -> str:
    """Everything outside the config that decides a run's results, for its cache key: the model's
    weights, the data, and where and in which precision it computes (cpu-fp32 and cuda-bf16-mixed runs
    never share a key)."""
    precision = models.pick_precision(device, trains_all_weights=cfg.full_finetune).tag
    parts = [models.identity(cfg.model), data_sha256, precision] + ([f"replay:{replay_sha()}"] if replay_sha else [])
    return "|".join(parts)


def untrained_config(cfg: RunConfig, baseline: RunConfig) -> RunConfig:
    """The 'before' reference for cfg's model and format: the baseline (with --set overrides), untrained."""
    return baseline.replace(model=cfg.model, format=cfg.format, epochs=0, seed=0)


def execute(plan: list[dict], ks, results: Path, device: str, cache, force: bool, progress: bool, identity,
            baseline: RunConfig) -> dict:
    """Run every pending config (untrained references first); returns {key: record}."""
    from .run import run_group

    refs = {row["untrained_key"]: untrained_config(row["config"], baseline) for row in plan}
    reference_of = {row["key"]: row["untrained_key"] for row in plan}
    wanted: dict[str, RunConfig] = {**refs, **{row["key"]: row["config"] for row in plan}}
    for stale in (results / "runs").glob(".tmp-*"):  # a write interrupted by kill -9: never a result
        stale.unlink()
    records = {} if force else {k: r for k in wanted if (r := load_run(results, k)) is not None}
    pending = [k for k in wanted if k not in records]
    # configs differing only in selection share one training
    groups: dict[str, list[str]] = {}
    for k in pending:
        groups.setdefault(wanted[k].replace(selection="best").key(identity(wanted[k])), []).append(k)
    ordered = sorted(groups.values(), key=lambda ks_: wanted[ks_[0]].epochs != 0)
    log = logging.getLogger("run_all")
    log.info("%d configs planned, %d cached, %d to run in %d trainings", len(wanted), len(records), len(pending),
             len(ordered))
    bar = tqdm(total=len(ordered), desc="runs", unit="run", disable=not progress, dynamic_ncols=True)
    for keys in ordered:
        cfgs = [wanted[k] for k in keys]
        reference = records.get(reference_of.get(keys[0], ""), {}).get("retention_correct") if cfgs[0].epochs else None
        bar.set_postfix_str(f"{cfgs[0].model} seed={cfgs[0].seed} {'untrained' if not cfgs[0].epochs else keys[0][:8]}")
        for key, rec in zip(keys, run_group(cfgs, ks, device=device, cache=cache, progress=progress,
                                            retention_reference=reference)):
            rec["key"] = key
            write_json_atomic(results / "runs" / f"{key}.json", rec)
            records[key] = rec
            if rec["status"] != "ok":
                log.warning("run %s failed: %s", key, rec["error"])
        bar.update(1)
    bar.close()
    return records


def verdicts(ablations: list[Ablation], plan: list[dict], records: dict) -> dict:
    out = {}
    for ab in ablations:
        rows = [r for r in plan if r["ablation"] == ab.name]
        primary = ab.primary_comparisons()
        per_regime = {}
        for regime in ab.regimes:
            runs = {arm: [records[r["key"]] for r in rows if r["regime"] == regime and r["arm"] == arm
                          and r["key"] in records] for arm in ab.arms}
            per_regime[regime] = {}
            for arm in ab.arms:
                if arm == ab.control:
                    continue
                is_primary = (regime, arm) in primary
                per_regime[regime][arm] = {
                    m: dict(compare(runs[ab.control], runs[arm], m, ab.expected if m == ab.signature else None,
                                    ab.min_effect, ab.primary_level() if is_primary and m == ab.signature else 0.95),
                            primary=is_primary and m == ab.signature)
                    for m in [ab.signature, *ab.also]}
        out[ab.name] = per_regime
    return out


def overall(ab: Ablation, per_regime: dict) -> tuple[str, str]:
    """The ablation's verdict from its primary comparisons only: reproduced in one of them > inconclusive >
    not reproduced (in all of them). Other comparisons are exploratory and decide nothing."""
    found = [(regime, per_regime[regime][arm][ab.signature]["verdict"]) for regime, arm in ab.primary_comparisons()
             if arm in per_regime.get(regime, {})]
    for wanted in ("reproduced", "inconclusive", "not reproduced"):
        for regime, verdict in found:
            if verdict == wanted:
                return verdict, regime
    return "inconclusive", ""


def tidy_rows(plan: list[dict], records: dict) -> list[dict]:
    rows = []
    for p in plan:
        rec = records.get(p["key"])
        status = rec["status"] if rec else "missing"
        for m in metrics.METRICS:
            value = rec["metrics"].get(m) if rec and rec.get("status") == "ok" else None
            rows.append({"ablation": p["ablation"], "regime": p["regime"], "arm": p["arm"], "seed": p["seed"],
                         "key": p["key"], "status": status, "metric": m, "value": value})
    return rows


def save_summary(results: Path, ablations: list[Ablation], plan: list[dict], records: dict) -> dict:
    """Merge this invocation's plan into results/plan.json and rewrite the CSV and verdicts."""
    import pandas as pd

    plan_file = results / "plan.json"
    old = json.loads(plan_file.read_text()) if plan_file.exists() else {"rows": [], "ablations": {}}
    names = {a.name for a in ablations}
    rows = [r for r in old["rows"] if r["ablation"] not in names]
    rows += [{k: (v.to_dict() if k == "config" else v) for k, v in r.items()} for r in plan]
    metas = {k: v for k, v in old["ablations"].items() if k not in names}
    metas.update({a.name: a.meta() for a in ablations})
    write_json_atomic(plan_file, {"rows": rows, "ablations": metas})
    all_records = {r["key"]: records.get(r["key"]) or load_run(results, r["key"]) for r in rows}
    all_records = {k: v for k, v in all_records.items() if v}
    all_abs = [Ablation(**m) for m in metas.values()]
    v = verdicts(all_abs, rows, all_records)
    summary = {a.name: {"verdict": overall(a, v[a.name])[0], "regime": overall(a, v[a.name])[1],
                        "comparisons": v[a.name]} for a in all_abs}
    write_json_atomic(results / "verdicts.json", summary)
    df = pd.DataFrame(tidy_rows(rows, all_records))
    tmp = results / ".summary.csv.tmp"
    df.to_csv(tmp, index=False)
    tmp.replace(results / "summary.csv")
    return summary


def refresh_summary(results: Path, available: dict[str, Ablation]) -> dict:
    """Recompute verdicts and the CSV from stored runs, with the current ablation definitions."""
    plan = json.loads((results / "plan.json").read_text())
    metas = plan["ablations"]
    for name in metas:
        if name in available:
            metas[name] = available[name].meta()
    write_json_atomic(results / "plan.json", plan)
    return save_summary(results, [], [], {})


# ---- command line -----------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_all.py", description="Run the hiahia LoRA ablation suite and render the report.")
    p.add_argument("--only", help="comma-separated ablation names (default: all); see --list")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (default 3)")
    p.add_argument("--model", help="chat model for every arm (embedded name, hub id or folder); same as --set model=...")
    p.add_argument("--pair", default="embedded", help=f"(base, chat) pair for base_vs_chat: {', '.join(models.PAIRS)}")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="knowledge file in the schema of data/hiahia.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a baseline RunConfig field")
    p.add_argument("--results", default=str(RESULTS), help="results folder (default results/)")
    p.add_argument("--cache-dir", help=f"model cache (default ${models.CACHE_ENV} or ~/.cache/hiahia-lora)")
    p.add_argument("--force", action="store_true", help="rerun even cached runs")
    p.add_argument("--list", action="store_true", help="list the ablations and their arms, then exit")
    p.add_argument("--report-only", action="store_true", help="re-render the report from results/ without training")
    p.add_argument("--no-report", action="store_true", help="do not render the report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return _main(args)
    except (SuiteError, KeyError, ValueError, models.ModelError) as e:
        msg = e.args[0] if e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2


def _main(args) -> int:
    results = Path(args.results)
    available = discover()
    chosen = select(available, args.only)
    if args.list:
        for ab in chosen:
            print(f"{ab.name:24s} {ab.title}  arms: {', '.join(ab.arms)}  regimes: {', '.join(ab.regimes)}")
        return 0
    if args.report_only:
        if (results / "plan.json").exists():  # verdicts follow the current code and ablation definitions
            refresh_summary(results, available)
        return _render(results)
    if args.pair not in models.PAIRS:
        raise SuiteError(f"unknown --pair {args.pair!r}; valid: {', '.join(models.PAIRS)}")
    if args.seeds < 1:
        raise SuiteError("--seeds must be >= 1")
    overrides = parse_overrides(args.set)
    if args.model:
        overrides["model"] = args.model
    baseline = RunConfig().replace(**overrides)
    ks = load_knowledge(args.data)
    replay_sha = functools.cache(lambda: load_replay(ks).sha256)  # read (and validated) only if a run uses replay

    def identity(cfg: RunConfig) -> str:
        return run_identity(cfg, ks.sha256, args.device, replay_sha if cfg.replay else None)

    plan = build_plan(chosen, baseline, args.seeds, models.PAIRS[args.pair], identity)
    start = time.perf_counter()
    save_summary(results, chosen, plan, {})  # the plan is on disk first: partial results can be rendered
    records = execute(plan, ks, results, args.device, args.cache_dir, args.force, not args.quiet, identity, baseline)
    summary = save_summary(results, chosen, plan, records)
    print(f"\nfinished in {time.perf_counter() - start:.0f} s")
    for ab in chosen:
        s = summary[ab.name]
        print(f"  {ab.name:24s} {s['verdict']:15s} (regime: {s['regime'] or '-'})")
    return 0 if args.no_report else _render(results)


def _render(results: Path) -> int:
    try:
        from .report import render
    except ImportError:
        print("report module not available; results are in", results)
        return 0
    out = render(results)
    print(f"report written to {out}")
    return 0
