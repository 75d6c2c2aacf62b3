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


def nested(rng, seeds: int, facts: int = 31, questions: int = 2, effect: float = 0.15, fact_sd: float = 0.25):
    """Differences (seeds x items) where a fact's questions share the fact's effect and each seed's luck on the
    fact: items nested in facts, as the study's test questions are. With seeds=None: the true mean effect over
    facts, questions and trainings (clipping at 0 and 1 makes it smaller than `effect`), from a million draws."""
    n = 1_000_000 if seeds is None else facts
    level = np.repeat(rng.uniform(0.3, 0.6, size=n), questions) + rng.normal(0, 0.05, n * questions)
    fact_effect = np.repeat(rng.normal(0, fact_sd, n), questions)

    def arm(shift):
        rows = 1 if seeds is None else seeds
        luck = np.repeat(rng.normal(0, 0.1, size=(rows, n)), questions, axis=1)
        p = np.clip(level[None, :] + shift + rng.normal(0, 0.05, (rows, 1 if seeds else n * questions)) + luck, 0, 1)
        return p if seeds is None else (rng.random((seeds, n * questions)) < p).astype(float)

    if seeds is None:
        return float((arm(effect + fact_effect) - arm(0.0)).mean())
    return arm(effect + fact_effect) - arm(0.0), [f"test|f{i}" for i in range(facts) for _ in range(questions)]


def test_the_interval_holds_for_items_nested_in_facts():
    rng = np.random.default_rng(11)
    truth = nested(rng, seeds=None)
    trials, flat, by_fact = 600, 0, 0
    for _ in range(trials):
        d, facts = nested(rng, seeds=5)
        iv = effect_interval(d)
        flat += iv.low <= truth <= iv.high
        iv = effect_interval(d, clusters=facts)
        by_fact += iv.low <= truth <= iv.high
    print(f"coverage at a nominal 95%: {by_fact / trials:.1%} by fact, {flat / trials:.1%} with items as independent")
    assert by_fact / trials >= 0.93 and by_fact > flat


def study_verdict(rng, failing: float, drop: float = 0.8, declared: int = 5):
    """One simulated primary comparison under the verdict rule, the way the study runs it: the declared seeds, and
    CONFIRM_SEEDS when the interval lies below min_effect. A training fails with probability `failing`; a failed one
    loses `drop` of every item (the true effect is failing x drop)."""
    from core.analysis.verdicts import CONFIRM_SEEDS, judge

    base = rng.uniform(0.55, 0.95, size=62)
    facts = [f"test|f{i // 2}" for i in range(62)]

    def runs(n, fails):
        p = np.clip(base[None, :] + rng.normal(0, 0.05, (n, 1)) - drop * fails[:, None], 0, 1)
        return (rng.random((n, 62)) < p).astype(float)

    fails = rng.random(CONFIRM_SEEDS) < failing
    control, treatment = runs(CONFIRM_SEEDS, np.zeros(CONFIRM_SEEDS)), runs(CONFIRM_SEEDS, fails)
    for n in (declared, CONFIRM_SEEDS):
        d = treatment[:n] - control[:n]
        iv = effect_interval(d, level=0.95, clusters=facts)
        cmp = {"diff": iv.estimate, "low": iv.low, "high": iv.high, "seeds": list(range(n)),
               "control": float(control[:n].mean())}
        verdict, _ = judge(cmp, "decrease", 0.1)
        if -iv.high >= 0.1 or n == CONFIRM_SEEDS:  # the plan adds seeds only below min_effect
            return verdict
    return verdict


@pytest.mark.parametrize("failing", [0.15, 0.2, 0.25])
def test_a_failure_in_some_trainings_is_rarely_called_not_reproduced(failing):
    rng = np.random.default_rng(12)
    verdicts = [study_verdict(rng, failing) for _ in range(1000)]
    share = verdicts.count("not reproduced") / len(verdicts)
    print(f"failure in {failing:.0%} of trainings (true effect {failing * 0.8:.2f}): called not reproduced in "
          f"{share:.1%}, reproduced in {verdicts.count('reproduced') / len(verdicts):.1%}")
    assert share <= 0.10


def test_no_failure_is_called_not_reproduced_most_of_the_time():
    rng = np.random.default_rng(13)
    verdicts = [study_verdict(rng, 0.0) for _ in range(300)]
    assert verdicts.count("not reproduced") / len(verdicts) >= 0.9
