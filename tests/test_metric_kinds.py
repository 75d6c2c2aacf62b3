"""A metric declares its range: fractions stay in [0, 1]; any other metric (a length, a log-likelihood) keeps its
own values, intervals and axis. Adding a metric is one registry entry."""
import random

import pytest

from core.analysis.compare import arm_summary
from core.analysis.verdicts import judged
from core.report import figures
from core.report.data import arm_stat
from core.run import metrics
from core.run.metrics import Metric
from core.run.record import RunRecord

WORDS = Metric("answer_words", "test", "words", None, "words per answer to a test question", low=0.0, high=None,
               unit="words")


@pytest.fixture()
def registered(monkeypatch):
    """answer_words registered as any metric is: one entry in the registry."""
    monkeypatch.setitem(metrics.METRICS, WORDS.name, WORDS)
    return WORDS


def _run(seed: int, words: list[float]) -> dict:
    samples = [{"set": "test", "id": f"f{i}", "question": f"q{i}", "hit": True, "words": w} for i, w in enumerate(words)]
    return {"status": "ok", "config": {"seed": seed, "eval_prompt": "train"}, "samples": samples,
            "metrics": metrics.compute(samples, "train")}


def test_a_fraction_is_the_default_kind_and_every_registered_metric_declares_one():
    assert Metric("x", "test", "hit", True, "d").is_fraction
    assert all(m.unit and m.aggregation == "mean" and (m.is_fraction or m.unit != "fraction")
               for m in metrics.METRICS.values())
    with pytest.raises(ValueError, match="aggregation 'median' is not implemented"):
        Metric("x", "test", "hit", True, "d", aggregation="median")


def test_a_non_fraction_metric_averages_its_values_instead_of_counting_them(registered):
    run = _run(0, [12.0, 30.0, 0.0])
    assert run["metrics"]["answer_words"] == 14.0  # not 2/3, as a cast to bool would give
    assert run["metrics"]["heldout_recall"] == 1.0
    with pytest.raises(ValueError, match="outside its range"):
        metrics.item_values([{"set": "test", "id": "f", "question": "q", "words": -1}], "answer_words", "train")


def test_its_arm_interval_and_effect_are_not_clipped_to_0_1(registered):
    rng = random.Random(0)
    control = [_run(sd, [rng.uniform(5, 15) for _ in range(20)]) for sd in range(3)]
    longer = [_run(sd, [rng.uniform(25, 45) for _ in range(20)]) for sd in range(3)]
    arm = arm_summary(longer, "answer_words")
    assert 25 < arm["low"] < arm["mean"] < arm["high"] < 45
    effect = judged(control, longer, "answer_words", "increase", 5.0)
    assert effect.low > 1.0 and effect.verdict == "reproduced"
    stat = arm_stat([{"key": f"k{sd}", "seed": sd} for sd in range(3)],
                    {f"k{sd}": RunRecord.from_json(r) for sd, r in enumerate(longer)}, "answer_words")
    assert stat["mean"] == pytest.approx(arm["mean"]) and stat["high"] > 1.0


def test_it_gets_an_axis_of_its_own_beside_the_fractions(registered, tmp_path, monkeypatch):
    assert figures._axes_groups(["heldout_recall", "answer_words", "retention"]) == \
        [["heldout_recall", "retention"], ["answer_words"]]
    stat = {"mean": 20.0, "low": 15.0, "high": 25.0, "per_seed": {0: 18.0, 1: 22.0}}
    recall = {"mean": 0.5, "low": 0.4, "high": 0.6, "per_seed": {0: 0.45, 1: 0.55}}
    stats = {arm: {"answer_words": stat, "heldout_recall": recall} for arm in ("a", "b")}
    ab = {"name": "x", "arms": {"a": {}, "b": {}}, "signature": "heldout_recall"}
    captured = {}
    real_save = figures.save

    def save(fig, path):
        captured["axes"] = [(ax.get_ylabel(), ax.get_ylim()) for ax in fig.axes]
        return real_save(fig, path)

    monkeypatch.setattr(figures, "save", save)
    figures.metric_figure(ab, stats, ["heldout_recall", "answer_words"], tmp_path / "bars.png")
    (fraction_label, fraction_range), (words_label, words_range) = captured["axes"]
    assert fraction_label == "fraction" and fraction_range == (0.0, 1.0)
    assert words_label == "words" and words_range[0] == 0.0 and words_range[1] >= 25.0
    assert (tmp_path / "bars.png").stat().st_size > 0
