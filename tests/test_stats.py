"""Seeds x items intervals: coverage on simulated studies, power for a large effect, bounds, MDE."""
import numpy as np
import pytest

from core.analysis.stats import arm_interval, effect_interval, minimum_detectable_effect


def simulate(rng, seeds: int, items: int, effect: float, seed_sd: float = 0.08):
    """One simulated comparison: per-item difficulty, per-seed training noise, Bernoulli answers."""
    base = rng.uniform(0.3, 0.8, size=items)
    def arm(shift):
        p = np.clip(base[None, :] + shift + rng.normal(0, seed_sd, size=(seeds, 1)), 0, 1)
        return (rng.random((seeds, items)) < p).astype(float)
    return arm(0.0), arm(effect)


@pytest.mark.parametrize("seeds, seed_sd", [(5, 0.02), (5, 0.08), (5, 0.15), (3, 0.08)])
def test_effect_interval_covers_the_true_effect_at_least_90_percent_of_the_time(seeds, seed_sd):
    rng = np.random.default_rng(1)
    effect, hits, trials = 0.15, 0, 400
    for i in range(trials):
        control, treatment = simulate(rng, seeds=seeds, items=60, effect=effect, seed_sd=seed_sd)
        iv = effect_interval(treatment - control)
        # the true effect of this simulation is `effect` on the probabilities (clipping at 0/1 aside)
        hits += iv.low <= effect <= iv.high
    print(f"coverage {hits / trials:.1%} for a nominal 95%")
    assert hits / trials >= 0.90


def test_a_large_effect_at_five_seeds_is_detected():
    rng = np.random.default_rng(2)
    detected = 0
    for i in range(50):
        control, treatment = simulate(rng, seeds=5, items=60, effect=0.3)
        detected += effect_interval(treatment - control).low > 0
    assert detected >= 48


def test_per_arm_intervals_stay_inside_0_1_even_at_the_edges():
    scores = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], dtype=float)
    iv = arm_interval(scores)
    assert 0.0 <= iv.low < iv.estimate < iv.high <= 1.0
    for value in (0.0, 1.0):
        iv = arm_interval(np.full((3, 10), value))
        assert 0.0 <= iv.low <= iv.estimate == value <= iv.high <= 1.0 and iv.high - iv.low > 0
    rng = np.random.default_rng(5)
    for _ in range(100):  # whatever the data, never outside [0, 1]
        p = rng.uniform(0, 1)
        iv = arm_interval((rng.random((3, 9)) < p).astype(float))
        assert 0.0 <= iv.low <= iv.estimate <= iv.high <= 1.0


def test_one_seed_says_training_noise_is_not_covered():
    rng = np.random.default_rng(3)
    control, treatment = simulate(rng, seeds=5, items=60, effect=0.1)
    one = effect_interval((treatment - control)[:1])
    assert "training noise not covered" in one.method
    five = effect_interval(treatment - control)
    assert "5 seeds" in five.method and five.seeds == 5


def test_minimum_detectable_effect_shrinks_with_seeds():
    rng = np.random.default_rng(4)
    control, treatment = simulate(rng, seeds=10, items=60, effect=0.0)
    diffs = treatment - control
    mde3 = minimum_detectable_effect(effect_interval(diffs[:3]))
    mde10 = minimum_detectable_effect(effect_interval(diffs))
    assert 0 < mde10 < mde3 < 1
