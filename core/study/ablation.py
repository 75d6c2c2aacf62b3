"""One ablation: its definition (ablations/<name>/ablation.yaml), validated, and its configs; discovery by folder.

Everything that is particular to one ablation (its arms, regimes, seeds, the model pairs it compares, whether it
is confounded, what the report shows for it) is declared in its yaml, so core/ names no ablation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from core.paths import ABLATIONS
from core.run import metrics
from core.run.config import FIELD_NAMES, RunConfig, check_keys
from core.run.knowledge import yaml_error

KINDS = ("pairwise", "sweep", "reference")
# what an ablation is to a reader: one of the original's steps (its failures and the fixes it tried), a lever (a
# training choice swept), or a remedy beyond the original; the report ranks each only against its own kind, under
# these names (its answer, ranking and figures)
ROLE_NAMES = {"step": "The original's steps", "lever": "Levers: training choices",
              "remedy": "Remedies the original never tried"}
ROLES = tuple(ROLE_NAMES)
# what `show:` may add to the ablation's report section
SHOWABLE = {
    "selection": "the validation-loss figure marks the best epoch and the checkpoint each arm evaluates",
    "injection": "an injection report per arm: targets, matched modules, trainable parameters, strict errors",
}
PLACEHOLDER = re.compile(r"\{pair\.(\w+)\}")
MATCHED = "matched"  # the primary comparison of an ablation with `match`: two curves compared at equal `by`  # an arm or regime value naming a model of the chosen --pair


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
    also: list[str] = field(default_factory=list)  # further metrics: compared and reported, no verdict
    min_effect: float = 0.1
    kind: str = "pairwise"  # pairwise | sweep (arms are points along `axis`) | reference (arms differ in many fields)
    axis: str | None = None
    order: int = 100
    notes: str = ""
    coupled: list[str] = field(default_factory=list)  # fields deliberately changed together with the factor
    seeds: int = 0  # the seeds the published study runs (5; sweeps 3); --seeds N runs at most N
    confounded: bool = False  # the arms differ in more than the factor, as `notes` states; the report flags it
    show: list[str] = field(default_factory=list)  # extra report content, from SHOWABLE
    pairs: dict[str, dict[str, str]] = field(default_factory=dict)  # --pair name -> {role: model spec}
    # {by: metric, treated: [arms]}: the treated arms form one curve (e.g. full fine-tuning at several rates), the
    # others the control's; the comparison "matched" reads the signature on both curves where `by` is equal
    match: dict = field(default_factory=dict)
    role: str = "lever"  # ROLES
    short: str = ""  # a name for the step or lever in a few words ("The repeater"); the title when empty
    # "regime/arm": the original project's own setting where it is not the control (a sweep's rate or rank); the
    # deciding arms are also compared with it (exploratory), so readers see the gain from where the original stood
    original: str = ""

    @classmethod
    def from_definition(cls, name: str, definition: dict) -> "Ablation":
        """From ablation.yaml's keys (or a stored meta); unknown keys are a TypeError."""
        return cls(**{k: v for k, v in definition.items() if k != "name"}, name=name)

    def meta(self) -> dict:
        """The definition as stored in results/plan.json and read by the report (ablation.yaml's keys)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def same_design(self, meta: dict) -> bool:
        """Whether a stored definition (plan.json's meta) has this ablation's arms and regimes."""
        return (meta.get("arms"), meta.get("regimes") or {"baseline": {}}) == (self.arms, self.regimes)

    def pair_models(self, pair: str | None) -> dict[str, str]:
        """{role: model spec} of the named pair (None: the first declared); {} for an ablation without pairs."""
        if not self.pairs:
            return {}
        if pair is None:
            return next(iter(self.pairs.values()))
        if pair not in self.pairs:
            raise SuiteError(f"{self.name} has no --pair {pair!r}; its pairs: {', '.join(self.pairs)}")
        return self.pairs[pair]

    def configs(self, baseline: RunConfig, seed: int, pair: str | None = None) -> dict[tuple[str, str], RunConfig]:
        roles = self.pair_models(pair)
        out = {}
        for regime, r_over in self.regimes.items():
            for arm, a_over in self.arms.items():
                values = {**r_over, **a_over, "seed": seed}
                values = {k: roles[m[1]] if isinstance(v, str) and (m := PLACEHOLDER.fullmatch(v)) else v
                          for k, v in values.items()}
                out[(regime, arm)] = baseline.replace(**values)
        return out

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
            if arm == MATCHED and self.match:
                out += [(r, arm) for r in regimes if (r, arm) not in out]
                continue
            if arm not in self.arms or arm == self.control:
                raise ValueError(f"{entry!r}: {arm!r} is not a treatment arm; "
                                 f"arms: {', '.join(a for a in self.arms if a != self.control)}")
            out += [(r, arm) for r in regimes if (r, arm) not in out]
        return out

    def primary_level(self) -> float:
        return 1 - 0.05 / len(self.primary_comparisons())

    def original_setting(self) -> tuple[str, str] | None:
        """(regime, arm) of `original` ("regime/arm", or "arm" where there is one regime); None without one.
        ValueError when it names no regime and arm here."""
        if not self.original:
            return None
        regime, _, arm = str(self.original).rpartition("/")
        regime = regime or (next(iter(self.regimes)) if len(self.regimes) == 1 else "")
        if regime not in self.regimes or arm not in self.arms:
            raise ValueError(f"{self.original!r} must be regime/arm with a regime of {', '.join(self.regimes)} and an "
                             f"arm of {', '.join(self.arms)}")
        return regime, arm


def load_ablation(folder: Path) -> Ablation:
    path = folder / "ablation.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SuiteError(yaml_error(path, e)) from None
    required = ("title", "factor", "symptom", "signature", "expected", "control", "arms", "primary", "seeds")
    missing = [k for k in required if k not in (raw or {})]
    if missing:
        raise SuiteError(f"{path}: missing field(s) {', '.join(missing)}; required: {', '.join(required)}")
    known = {f.name for f in fields(Ablation)} - {"name"}
    unknown = set(raw) - known
    if unknown:
        raise SuiteError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}")
    ab = Ablation.from_definition(folder.name, raw)
    if ab.control not in ab.arms:
        raise SuiteError(f"{path}: control {ab.control!r} is not one of the arms {', '.join(ab.arms)}")
    if not isinstance(ab.seeds, int) or isinstance(ab.seeds, bool) or ab.seeds < 1:
        raise SuiteError(f"{path}: seeds must be a whole number >= 1 (the seeds the published study runs), "
                         f"not {ab.seeds!r}")
    if ab.role not in ROLES:
        raise SuiteError(f"{path}: role must be {', '.join(ROLES[:-1])} or {ROLES[-1]}, not {ab.role!r}")
    if ab.kind not in KINDS:
        raise SuiteError(f"{path}: kind must be {', '.join(KINDS[:-1])} or {KINDS[-1]}, not {ab.kind!r}")
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
    try:
        ab.original_setting()
    except ValueError as e:
        raise SuiteError(f"{path}: original: {e}") from None
    for label, section in (("arms", ab.arms), ("regimes", ab.regimes)):
        for name, over in section.items():
            try:
                check_keys(over or {}, where=f"{path}: {label} {name!r}")
            except KeyError as e:
                raise SuiteError(e.args[0]) from None
            section[name] = over or {}
    _check_report_fields(ab, path)
    _check_pairs(ab, path)
    _check_match(ab, path)
    return ab


def _check_match(ab: Ablation, path: Path) -> None:
    if not ab.match:
        return
    m = ab.match
    if not isinstance(m, dict) or set(m) != {"by", "treated"} or not isinstance(m["treated"], list):
        raise SuiteError(f"{path}: match must be {{by: <metric>, treated: [<arms>]}}, not {m!r}")
    if m["by"] not in metrics.METRICS:
        raise SuiteError(f"{path}: match: unknown metric {m['by']!r}; valid metrics: {', '.join(metrics.METRICS)}")
    bad = [a for a in m["treated"] if a not in ab.arms or a == ab.control]
    if bad or not m["treated"]:
        raise SuiteError(f"{path}: match: treated must name treatment arms ({', '.join(a for a in ab.arms if a != ab.control)}), "
                         f"not {', '.join(map(str, bad)) or 'none'}")


def _check_report_fields(ab: Ablation, path: Path) -> None:
    if not isinstance(ab.confounded, bool):
        raise SuiteError(f"{path}: confounded must be true or false, not {ab.confounded!r}")
    if ab.confounded and not str(ab.notes).strip():
        raise SuiteError(f"{path}: confounded: true needs notes: that state the confound (the report shows them "
                         f"before the verdict)")
    if not isinstance(ab.show, list) or any(s not in SHOWABLE for s in ab.show):
        raise SuiteError(f"{path}: show must be a list of {', '.join(SHOWABLE)}, not {ab.show!r}")


def _check_pairs(ab: Ablation, path: Path) -> None:
    """pairs: {name: {role: model spec}}, every pair with the same roles, and every {pair.<role>} a declared role."""
    if not isinstance(ab.pairs, dict) or not all(isinstance(p, dict) and p and all(
            isinstance(v, str) and v.strip() for v in p.values()) for p in ab.pairs.values()):
        raise SuiteError(f"{path}: pairs must map each pair name to its models by role, e.g. "
                         f"embedded: {{base: gemma-3-270m, chat: smollm2-135m-instruct}}")
    roles = {frozenset(p) for p in ab.pairs.values()}
    if len(roles) > 1:
        found = " and ".join("{" + ", ".join(sorted(r)) + "}" for r in roles)
        raise SuiteError(f"{path}: pairs: every pair needs the same roles, found {found}")
    declared = set(next(iter(roles))) if roles else set()
    used = {(where, m[1]) for where, section in (("arms", ab.arms), ("regimes", ab.regimes))
            for over in section.values() for v in over.values()
            if isinstance(v, str) and (m := PLACEHOLDER.fullmatch(v))}
    for where, role in sorted(used):
        if role not in declared:
            raise SuiteError(f"{path}: {where} use {{pair.{role}}} but " + (
                f"the pairs have the roles {', '.join(sorted(declared))}" if declared else
                "no pairs: are declared (name: {role: model spec})"))
    if declared and not used:
        raise SuiteError(f"{path}: pairs: are declared but no arm or regime names a model as {{pair.<role>}}")


def listing_order(metas: dict[str, dict]) -> dict[str, dict]:
    """Ablation definitions ({name: meta}) in the order every listing uses: ablation.yaml `order`, then name."""
    default = Ablation.__dataclass_fields__["order"].default
    return dict(sorted(metas.items(), key=lambda kv: (kv[1].get("order", default), kv[0])))


def discover(root: Path = ABLATIONS) -> dict[str, Ablation]:
    found = {a.name: a for a in (load_ablation(d) for d in sorted(root.iterdir()) if (d / "ablation.yaml").exists())}
    return {name: found[name] for name in listing_order({n: {"order": a.order} for n, a in found.items()})}


def select(available: dict[str, Ablation], only: str | None) -> list[Ablation]:
    if only is None:
        return list(available.values())
    names = [n.strip() for n in only.split(",") if n.strip()]
    if not names:
        raise SuiteError(f"--only {only!r} names no ablation; valid: {', '.join(available)}")
    bad = [n for n in names if n not in available]
    if bad:
        raise SuiteError(f"unknown ablation(s) {', '.join(bad)}; valid: {', '.join(available)}")
    return [available[n] for n in names]
