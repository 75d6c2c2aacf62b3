"""Paired comparisons and verdicts."""
from core.results import compare, mean_ci


def _run(seed, value, items=None):
    samples = [{"set": "test", "id": f"f{i}", "question": f"q{i}", "hit": bool(h)} for i, h in enumerate(items or [])]
    return {"status": "ok", "config": {"seed": seed, "eval_prompt": "train"}, "metrics": {"heldout_recall": value},
            "samples": samples}


def test_mean_ci_t_interval():
    m, lo, hi = mean_ci([0.5, 0.7])
    sd = (2 * 0.1 ** 2) ** 0.5
    assert abs(m - 0.6) < 1e-12 and lo < 0.6 < hi and abs((hi - lo) / 2 - 12.7062 * sd / 2 ** 0.5) < 1e-4
    assert mean_ci([0.4]) == (0.4, None, None)


def test_clear_drop_over_seeds_is_reproduced():
    control = [_run(s, v) for s, v in enumerate([0.90, 0.92, 0.91])]
    treatment = [_run(s, v) for s, v in enumerate([0.10, 0.12, 0.09])]
    v = compare(control, treatment, "heldout_recall", "decrease", 0.1)
    assert v["verdict"] == "reproduced" and v["diff"] < -0.7 and v["high"] < 0


def test_tiny_difference_is_not_reproduced_and_noise_is_inconclusive():
    control = [_run(s, v) for s, v in enumerate([0.90, 0.91, 0.90])]
    same = [_run(s, v) for s, v in enumerate([0.90, 0.90, 0.91])]
    assert compare(control, same, "heldout_recall", "decrease", 0.1)["verdict"] == "not reproduced"
    noisy = [_run(s, v) for s, v in enumerate([0.2, 0.95, 0.6])]
    assert compare(control, noisy, "heldout_recall", "decrease", 0.1)["verdict"] == "inconclusive"


def test_one_seed_uses_paired_bootstrap_over_items():
    control = [_run(0, 0.9, [1] * 9 + [0])]
    treatment = [_run(0, 0.1, [0] * 9 + [1])]
    v = compare(control, treatment, "heldout_recall", "decrease", 0.1)
    assert "bootstrap" in v["method"] and v["verdict"] == "reproduced"


def test_secondary_metric_has_no_verdict_and_missing_arm_is_inconclusive():
    control = [_run(0, 0.9, [1] * 10)]
    assert compare(control, [_run(0, 0.5, [1] * 5 + [0] * 5)], "heldout_recall", None, 0.1)["verdict"] is None
    failed = [{"status": "failed", "config": {"seed": 0}}]
    assert compare(control, failed, "heldout_recall", "decrease", 0.1)["verdict"] == "inconclusive"
