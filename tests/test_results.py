"""Paired comparisons and verdicts."""
import dataclasses
import shutil
import tempfile
from pathlib import Path

import pytest

from core.analysis.compare import arm_summary
from core.analysis.verdicts import CONFIRM_SEEDS, judged
from core.paths import ROOT


def _run(seed, value, items=None, n=60):
    """A run whose heldout_recall is `value`: the first round(value * n) of n items hit, unless given."""
    items = items if items is not None else [1] * round(value * n) + [0] * (n - round(value * n))
    samples = [{"set": "test", "id": f"f{i}", "question": f"q{i}", "hit": bool(h)} for i, h in enumerate(items)]
    return {"status": "ok", "config": {"seed": seed, "eval_prompt": "train"},
            "metrics": {"heldout_recall": sum(items) / len(items)}, "samples": samples}


def test_arm_interval_stays_inside_0_1_and_lists_every_seed():
    s = arm_summary([_run(sd, v) for sd, v in enumerate([1.0, 0.95, 0.9])], "heldout_recall")
    assert 0.0 <= s["low"] < s["mean"] < s["high"] <= 1.0
    assert s["per_seed"] == {0: 1.0, 1: 0.95, 2: 0.9}
    s = arm_summary([_run(sd, 0.0) for sd in range(3)], "heldout_recall")
    assert s["low"] == 0.0 == s["mean"] and 0 < s["high"] < 0.1


def test_clear_drop_over_seeds_is_reproduced():
    control = [_run(s, v) for s, v in enumerate([0.90, 0.92, 0.91])]
    treatment = [_run(s, v) for s, v in enumerate([0.10, 0.12, 0.09])]
    v = judged(control, treatment, "heldout_recall", "decrease", 0.1)
    assert v.verdict == "reproduced" and v.diff < -0.7 and v.high < 0


def test_tiny_difference_is_not_reproduced_only_over_enough_seeds_and_noise_is_inconclusive():
    values = [0.90, 0.91, 0.90, 0.89] * 4
    control = [_run(s, v) for s, v in enumerate(values[:CONFIRM_SEEDS])]
    same = [_run(s, v) for s, v in enumerate(values[1:CONFIRM_SEEDS + 1])]
    few = judged(control[:3], same[:3], "heldout_recall", "decrease", 0.1)
    assert few.verdict == "inconclusive" and few.reason == f"not seen in 3 seeds; 'not reproduced' needs {CONFIRM_SEEDS}"
    assert judged(control, same, "heldout_recall", "decrease", 0.1).verdict == "not reproduced"
    noisy = [_run(s, v) for s, v in enumerate([0.2, 0.95, 0.6])]
    assert judged(control[:3], noisy, "heldout_recall", "decrease", 0.1).verdict == "inconclusive"


def test_an_effect_against_the_symptom_is_the_other_way():
    control = [_run(s, v) for s, v in enumerate([0.50, 0.52, 0.49])]
    better = [_run(s, v) for s, v in enumerate([0.80, 0.83, 0.79])]
    v = judged(control, better, "heldout_recall", "decrease", 0.1)
    assert v.verdict == "the other way" and v.low > 0


def test_identical_arms_or_no_room_for_the_symptom_are_untestable_here():
    control = [_run(s, v) for s, v in enumerate([0.50, 0.52, 0.49])]
    for r in control:
        for i, sample in enumerate(r["samples"]):
            sample["answer"] = f"answer {i}"
    twin = [dict(r, samples=[dict(x) for x in r["samples"]]) for r in control]  # same answers: the same model
    v = judged(control, twin, "heldout_recall", "decrease", 0.1)
    assert v.verdict == "untestable here" and "same answers" in v.reason
    twin[0]["samples"][0]["answer"] = "another answer"  # one answer differs: a comparison, not the same model
    assert judged(control, twin, "heldout_recall", "decrease", 0.1).verdict == "inconclusive"
    floor = [_run(s, v) for s, v in enumerate([0.05, 0.0, 0.0])]  # nothing learned: recall cannot drop by 0.1
    v = judged(floor, floor, "heldout_recall", "decrease", 0.1)
    assert v.verdict == "untestable here" and "no room" in v.reason
    assert judged(floor, floor, "heldout_recall", "increase", 0.1).verdict == "inconclusive"  # room upwards


def test_one_seed_uses_items_only_and_says_so():
    control = [_run(0, 0.9, [1] * 9 + [0])]
    treatment = [_run(0, 0.1, [0] * 9 + [1])]
    v = judged(control, treatment, "heldout_recall", "decrease", 0.1)
    assert "training noise not covered" in v.method and v.verdict == "reproduced"


def test_comparison_reports_per_seed_values_and_a_minimum_detectable_effect():
    control = [_run(s, v) for s, v in enumerate([0.90, 0.92, 0.91, 0.88, 0.9])]
    treatment = [_run(s, v) for s, v in enumerate([0.85, 0.9, 0.86, 0.9, 0.88])]
    v = judged(control, treatment, "heldout_recall", "decrease", 0.1)
    assert v.per_seed[0] == [0.9, 0.85] and len(v.per_seed) == 5
    assert 0 < v.mde < 0.5 and v.low >= -1 and v.high <= 1


def test_per_seed_values_are_on_the_items_both_arms_scored_so_their_differences_average_to_the_effect():
    """Arms scored on different item sets (retention against each arm's own untrained reference): each seed's
    pair is the two arms' means on the shared items, not their own metrics, so control -> treatment reads as the
    effect says."""
    def run(seed, hits):  # hits: {item index: 0/1}
        samples = [{"set": "test", "id": f"f{i}", "question": f"q{i}", "hit": bool(h)} for i, h in hits.items()]
        return {"status": "ok", "config": {"seed": seed, "eval_prompt": "train"},
                "metrics": {"heldout_recall": sum(hits.values()) / len(hits)}, "samples": samples}
    control = [run(sd, {i: 1 for i in range(10)}) for sd in range(3)]  # own metric 1.0
    treatment = [run(sd, {i: int(i < 5 + sd) for i in range(5, 15)}) for sd in range(3)]  # shared items 5..9
    v = judged(control, treatment, "heldout_recall", "decrease", 0.1)
    assert v.items == 5
    assert v.per_seed == {0: [1.0, 0.0], 1: [1.0, 0.2], 2: [1.0, 0.4]}
    assert abs(sum(t - c for c, t in v.per_seed.values()) / 3 - v.diff) < 1e-12
    assert treatment[2]["metrics"]["heldout_recall"] == 0.2  # the arm's own value differs from its paired mean


def test_secondary_metric_has_no_verdict_and_missing_arm_is_inconclusive():
    control = [_run(0, 0.9, [1] * 10)]
    assert judged(control, [_run(0, 0.5, [1] * 5 + [0] * 5)], "heldout_recall", None, 0.1).verdict is None
    failed = [{"status": "failed", "config": {"seed": 0}}]
    assert judged(control, failed, "heldout_recall", "decrease", 0.1).verdict == "inconclusive"


def test_holm_runs_across_every_primary_comparison_of_the_study():
    from core.analysis.verdicts import AblationVerdict, Comparison, holm_across

    def verdict(*ps):
        return AblationVerdict(comparisons={"baseline": {f"arm{i}": {"m": Comparison("m", "increase", p=p,
                                                                                         primary=True)}
                                                         for i, p in enumerate(ps)}})

    # 5 primaries: Holm compares the sorted p values with 0.05/5, 0.05/4, ... and stops at the first that fails
    summary = {"a": verdict(0.001, 0.03), "b": verdict(0.012, 0.011), "c": verdict(0.2)}
    assert holm_across(summary) == 5
    held = {(n, arm): c.holm for n, v in summary.items() for _, arm, c in v.primaries()}
    # 0.001 <= 0.01, 0.011 <= 0.0125, 0.012 <= 0.0167, 0.03 > 0.025: stop
    assert held == {("a", "arm0"): True, ("b", "arm1"): True, ("b", "arm0"): True, ("a", "arm1"): False,
                    ("c", "arm0"): False}


def test_a_comparison_carries_its_one_sided_p_value():
    control = [_run(s, v) for s, v in enumerate([0.90, 0.92, 0.91])]
    treatment = [_run(s, v) for s, v in enumerate([0.10, 0.12, 0.09])]
    assert judged(control, treatment, "heldout_recall", "decrease", 0.1).p < 0.01
    assert judged(control, treatment, "heldout_recall", "increase", 0.1).p > 0.99


def test_two_curves_are_compared_where_they_reach_the_same_recall():
    from core.analysis.verdicts import ablation_verdict
    from core.run.record import RunRecord
    from core.study.ablation import discover

    ab = discover()["full_finetune"]
    curves = {"lora": (0.9, 0.4), "lora_lr2e-4": (0.5, 0.8), "lora_lr5e-4": (0.7, 0.6),  # (recall, retention)
              "full_lr1e-5": (0.6, 0.5), "full_lr3e-5": (0.8, 0.3), "full_lr5e-5": (0.95, 0.1), "full_lr1e-4": (0.97, 0.05)}
    rows, records = [], {}
    for seed, noise in enumerate((0.0, 0.01, -0.01, 0.02, -0.02)):
        for arm, (recall, retention) in curves.items():
            key = f"{arm}-{seed}"
            rows.append({"ablation": ab.name, "regime": "baseline", "arm": arm, "seed": seed, "key": key, "config": {}})
            records[key] = RunRecord(key=key, status="ok", config={"seed": seed, "eval_prompt": "train"},
                                     metrics={"heldout_recall": recall, "retention_mc": retention + noise})
    cmp = ablation_verdict(ab, rows, records).comparison("baseline", "matched", "retention_mc")
    # recall 0.9 is the highest both reach: LoRA keeps 0.4 there, full fine-tuning 0.3 - 0.2 * (0.1 / 0.15)
    assert cmp.primary and cmp.diff == pytest.approx(0.3 - 0.2 / 1.5 - 0.4)
    assert cmp.verdict == "reproduced" and "heldout_recall = 0.900" in cmp.method and cmp.seeds == [0, 1, 2, 3, 4]


def test_rates_that_tie_on_the_matching_metric_count_as_their_mean():
    from core.analysis.compare import matched

    def run(seed, recall, kept):
        return {"status": "ok", "config": {"seed": seed}, "metrics": {"heldout_recall": recall, "retention_mc": kept}}

    # two LoRA rates both at recall 1.0 keep 0.2 and 0.6; one full rate at 1.0 keeps 0.5 (seed noise +-0.01)
    control = {a: [run(sd, 1.0, kept + d) for sd, d in enumerate((0.0, 0.01, -0.01))]
               for a, kept in (("lr_a", 0.2), ("lr_b", 0.6))}
    treated = {"full": [run(sd, 1.0, 0.5 + d) for sd, d in enumerate((0.0, 0.01, -0.01))]}
    cmp = matched(control, treated, "heldout_recall", "retention_mc")
    assert cmp["diff"] == pytest.approx(0.5 - 0.4)  # against the tied rates' mean, not whichever sorts last (0.6)


def test_the_report_says_which_primary_comparisons_hold_across_the_study():
    from core.analysis.verdicts import AblationVerdict, Comparison, holm_across
    from core.report.findings import study_wide

    summary = {"a": AblationVerdict(comparisons={"baseline": {"x": {"m": Comparison("m", "increase", p=0.001,
                                                                                      primary=True)}}}),
               "b": AblationVerdict(comparisons={"baseline": {"y": {"m": Comparison("m", "increase", p=0.3,
                                                                                      primary=True)}}})}
    assert study_wide(summary) is None  # stored before the correction existed
    holm_across(summary)
    assert study_wide(summary) == {"family": 2, "held": ["a / baseline / x"]}


def test_a_sweep_s_deciding_arm_is_also_measured_from_the_original_s_own_setting():
    from core.analysis.verdicts import AblationVerdict, ablation_verdict
    from core.report.findings import answer, outcomes
    from core.run.record import RunRecord
    from core.study.ablation import SuiteError, discover, load_ablation

    ab = dataclasses.replace(discover()["learning_rate"], signature="heldout_recall", also=[])
    assert ab.original_setting() == ("constant", "lr_2e-4")
    recall = {("warmup_cosine", "lr_5e-5"): 0.1, ("warmup_cosine", "lr_1e-3"): 0.9, ("constant", "lr_2e-4"): 0.5}
    rows, records = [], {}
    for seed, shift in enumerate((0, 1, 2)):
        for regime in ab.regimes:
            for arm in ab.arms:
                key = f"{regime}-{arm}-{seed}"
                rows.append({"ablation": ab.name, "regime": regime, "arm": arm, "seed": seed, "key": key,
                             "config": {}})
                hits = round(60 * recall.get((regime, arm), 0.3))
                run = _run(seed, 0, [0] * shift + [1] * hits + [0] * (60 - hits - shift))
                records[key] = RunRecord(key=key, **run)
    v = ablation_verdict(ab, rows, records)
    start = v.from_original["warmup_cosine/lr_1e-3"]
    # the deciding arm against the original's constant 2e-4, not against the control (lr 5e-5)
    assert start.diff == pytest.approx(0.4) and start.verdict is None and start.level == 0.95
    assert v.comparison("warmup_cosine", "lr_1e-3", "heldout_recall").diff == pytest.approx(0.8)
    assert AblationVerdict.from_json(v.to_json()).from_original == v.from_original  # through verdicts.json
    metas = {ab.name: ab.meta()}
    sentence = answer(metas, outcomes(metas, {ab.name: v}, []), [])[0]["rows"][0]["sentence"]
    assert "from the original's setting (constant/lr_2e-4) to warmup_cosine/lr_1e-3 (exploratory, 95%): " \
        "`heldout_recall` 0.50 → 0.90, +0.40 [" in sentence

    bad = Path(tempfile.mkdtemp()) / "learning_rate"
    shutil.copytree(ROOT / "ablations" / "learning_rate", bad)
    text = (bad / "ablation.yaml").read_text().replace("original: constant/lr_2e-4", "original: constant/lr_3e-4")
    (bad / "ablation.yaml").write_text(text)
    with pytest.raises(SuiteError, match=r"ablation.yaml: original: 'constant/lr_3e-4' must be regime/arm with a "
                                         r"regime of warmup_cosine, constant and an arm of lr_5e-5, lr_2e-4, lr_1e-3"):
        load_ablation(bad)
