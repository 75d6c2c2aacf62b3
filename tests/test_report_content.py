"""What the report's pages say, from the committed fixture results (tests/fixtures/report/results, no training) and
small hand-made records: findings generated from verdicts.json, a forest row per deciding comparison, figures that
stay inside [0, 1] with a dot per seed, sample answers that differ first, links that resolve, the rerun command."""
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest

from core.analysis.verdicts import AblationVerdict, Comparison, read_verdicts
from core.paths import ROOT
from core.report import figures, render, study_figures
from core.report.data import load_results
from core.report.evidence import precision_options, reproduce_command
from core.report.findings import findings, forest_rows
from core.report.frontier import arm_stats, forgetting, goal
from core.report.samples import sample_tables
from core.report.sections import summary_row
from core.run.record import RunRecord

FIXTURE = ROOT / "tests" / "fixtures" / "report" / "results"


def fixture_copy(dest: Path) -> Path:
    shutil.copytree(FIXTURE, dest)
    return dest


def _cmp(stored: dict) -> Comparison:
    """A comparison as verdicts.json stores it."""
    return Comparison.from_json({"metric": "heldout_recall", **stored})


def findings_box(index: Path) -> str:
    html = index.read_text()
    start = html.index('<section class="findings" id="findings">')
    return html[start:html.index("</section>", start)]


def test_findings_say_what_reproduced_where_and_rank_the_fixes_from_verdicts_json(tmp_path):
    res = fixture_copy(tmp_path / "results")
    verdicts = json.loads((res / "verdicts.json").read_text())
    wrong = verdicts["wrong_layer_path"]
    wrong["verdict"] = "reproduced"
    wrong["comparisons"]["baseline"]["wrong_path"]["heldout_recall"].update(
        verdict="reproduced", diff=-0.6, low=-0.8, high=-0.4)
    (res / "verdicts.json").write_text(json.dumps(verdicts))

    box = findings_box(render.render(res, tmp_path / "report"))
    reproduced = box[box.index('data-verdict="reproduced"'):box.index('data-verdict="not reproduced"')]
    assert "wrong_layer_path.html" in reproduced and "under baseline" in reproduced
    assert "-0.60 [-0.80, -0.40]" in reproduced
    not_reproduced = box[box.index('data-verdict="not reproduced"'):]
    assert "no_val_selection.html" in not_reproduced.split("</div>")[0]
    steps = box[box.index('<ol class="rank">'):box.index("</ol>")]  # the steps' list comes first
    assert steps.index("wrong_layer_path") < steps.index("no_val_selection") and "weight_decay" not in steps
    levers = box[box.index("<b>Levers: training choices</b>"):]
    assert "weight_decay.html" in levers[:levers.index("</ol>")]
    assert "The forgetting price" in box


def test_findings_show_an_effect_against_the_symptom_the_other_metrics_and_references_apart(tmp_path):
    """A "not reproduced" whose interval lies on the other side of 0 says so, the largest clear effects on the
    other metrics come with it (labelled exploratory), the reference ablation is not ranked among the fixes, and an
    arm that trained 0 parameters is not counted as a trained arm: on the index and in the README block alike."""
    from core.report.readme import block

    res = fixture_copy(tmp_path / "results")
    verdicts = json.loads((res / "verdicts.json").read_text())
    selection = verdicts["no_val_selection"]["comparisons"]["baseline"]["final_epoch"]
    selection["heldout_recall"].update(diff=0.3, low=0.1, high=0.5, per_seed={"0": [0.4, 0.7]})  # final epoch better
    selection["retention"].update(diff=-0.2, low=-0.3, high=-0.1, per_seed={"0": [0.6, 0.4]})  # but forgets more
    selection["reverse_recall"].update(diff=0.05, low=0.01, high=0.09)  # clear of 0 but under min_effect: not listed
    # seed_recipe's arm answers under the fixed prompt, which names hiahia: its reverse answers are cued
    verdicts["seed_recipe"]["comparisons"]["baseline"]["seed_recipe"]["reverse_recall"].update(
        diff=0.3, low=0.1, high=0.5, per_seed={"0": [0.0, 0.3]})
    verdicts["wrong_layer_path"]["comparisons"]["baseline"]["wrong_path"]["reverse_recall"].update(
        diff=0.3, low=0.1, high=0.5, per_seed={"0": [0.0, 0.3]})
    (res / "verdicts.json").write_text(json.dumps(verdicts))

    box = findings_box(render.render(res, tmp_path / "report"))
    item = box[box.index('<li><a href="no_val_selection.html">'):]
    item = item[:item.index("</li>")]
    assert ("the other way, clear of 0: <code>heldout_recall</code> 0.40 → 0.70, +0.30 [+0.10, +0.50] (baseline)"
            in item)
    assert ("other metrics (exploratory, 95% each): <code>retention</code> 0.60 → 0.40, -0.20 [-0.30, -0.10] "
            "(baseline)") in item
    assert "reverse_recall" not in item
    for name, flagged in (("seed_recipe", True), ("wrong_layer_path", False)):
        line = box[box.index(f'<li><a href="{name}.html">'):]
        line = line[:line.index("</li>")]
        assert "<code>reverse_recall</code> 0.00 → 0.30, +0.30 [+0.10, +0.50] (baseline)" in line
        assert ("cued by the system prompt" in line) is flagged, name
    ranking = box[box.index("What mattered"):box.index("The forgetting price")]
    fixes, references = ranking.split("References (several fields changed at once")
    assert "seed_recipe.html" in references and "seed_recipe.html" not in fixes and "wrong_layer_path.html" in fixes
    # a bug (a step) is never ranked against the levers: each kind has its own list
    steps, levers = fixes.split("<b>Levers: training choices</b>")
    assert "wrong_layer_path.html" in steps and "wrong_layer_path.html" not in levers
    rows, metas, _, runs = load_results(res)  # the wrong path trained 0 parameters: not a trained arm
    assert [a["label"] for a in arm_stats(metas, rows, runs) if a["ablation"] == "wrong_layer_path"] == \
        ["wrong_layer_path / baseline / correct_path"]

    text = block(res)
    assert "- no_val_selection (baseline): `heldout_recall` 0.40 -> 0.70, +0.30 [+0.10, +0.50]" in text
    assert "- no_val_selection: `retention` 0.60 -> 0.40, -0.20 [-0.30, -0.10] (baseline)" in text
    ranked = text[text.index("Ranked by effect"):]
    assert "seed_recipe" not in ranked.split("References")[0] and "References (several fields" in ranked


def test_a_verdict_on_fewer_seeds_than_planned_says_so(tmp_path):
    from core.report.readme import block

    res = fixture_copy(tmp_path / "results")
    plan = json.loads((res / "plan.json").read_text())
    extra = [dict(r, seed=1, key=r["key"] + "-s1") for r in plan["rows"] if r["ablation"] == "weight_decay"]
    plan["rows"] += extra  # a second planned seed, not run yet
    (res / "plan.json").write_text(json.dumps(plan))
    box = findings_box(render.render(res, tmp_path / "report"))
    item = box[box.index('<li><a href="weight_decay.html">'):]
    assert "on 1 of 2 seeds so far" in item[:item.index("</li>")]
    assert "on 1 of" not in box[:box.index('<li><a href="weight_decay.html">')]  # the others planned one seed
    assert "| weight_decay | not reproduced (on 1 of 2 seeds so far) |" in block(res)


def test_the_forest_plot_has_a_row_per_primary_comparison_or_per_regime_and_arm_without_one():
    rows, metas, verdicts, runs = load_results(FIXTURE)
    forest = forest_rows(metas, verdicts, rows, runs)
    assert [r["label"] for r in forest if r["ablation"] == "weight_decay"] == ["weight_decay / wd_0.1"]  # primary
    assert all(r["declared"] for r in forest) and len(forest) == len(metas)
    assert all(len(r["per_seed"]) == 1 for r in forest if r["diff"] is not None)  # the fixture's one seed

    rows, metas, verdicts, runs = load_results(ROOT / "tests" / "fixtures" / "first_edition" / "results")  # no `primary`
    first = forest_rows(metas, verdicts, rows, runs)
    assert [r["label"] for r in first if r["ablation"] == "no_masking"] == ["no_masking / baseline",
                                                                          "no_masking / original_budget"]
    assert not any(r["declared"] for r in first)
    assert all(len(r["per_seed"]) == 3 for r in first if r["ablation"] == "no_masking")  # seeds from the runs


def _retention_run(kept_hits: list[bool], epochs: int, seed: int = 0) -> RunRecord:
    samples = [{"set": "retention", "id": f"p{i}", "question": f"q{i}", "expected": "a", "answer": "a" if hit else "b",
                "hit": hit, "kept": True} for i, hit in enumerate(kept_hits)]
    return RunRecord(config={"seed": seed, "epochs": epochs, "eval_prompt": "train", "model": "m"}, status="ok",
                     metrics={"retention": sum(kept_hits) / len(kept_hits), "retention_raw": 0.5}, samples=samples)


def test_the_forgetting_price_is_the_recipe_s_retention_of_what_the_untrained_model_knew():
    metas = {"a": {"name": "a", "arms": {"recipe": {}, "slow": {"lr": 1e-4}}, "regimes": {"baseline": {}}}}
    rows = [{"ablation": "a", "regime": "baseline", "arm": arm, "seed": 0, "key": arm, "untrained_key": "u",
             "config": {"epochs": 4}} for arm in ("recipe", "slow")]
    runs = {"recipe": _retention_run([True, True, True, False], 4), "slow": _retention_run([True] * 4, 4),
            "u": _retention_run([True, True, True, True], 0)}
    price = forgetting(metas, rows, runs, arm_stats(metas, rows, runs))
    assert price["recipe"]["mean"] == 0.75 and price["recipe_runs"] == 1
    assert price["untrained"][0]["kept"] == 4 and price["untrained"][0]["probes"] == 4
    assert price["worst"][0]["label"] == "a / baseline / recipe" and price["best"][0]["label"] == "a / baseline / slow"


def _scored_run(recall_hits: list[bool], retention_hits: list[bool], seed: int = 0) -> RunRecord:
    run = _retention_run(retention_hits, 4, seed)
    run.samples += [{"set": "test", "id": f"f{i}", "question": f"t{i}", "hit": hit} for i, hit in enumerate(recall_hits)]
    run.metrics["heldout_recall"] = sum(recall_hits) / len(recall_hits)
    return run


def test_the_goal_names_the_arms_that_reach_both_and_otherwise_the_closest_and_the_best_that_learned():
    metas = {"a": {"name": "a", "arms": {"recipe": {}, "replay": {"replay": 40}, "slow": {"lr": 1e-4}},
                   "regimes": {"baseline": {}}},
             "b": {"name": "b", "arms": {"recipe": {}}, "regimes": {"baseline": {}}}}
    rows = [{"ablation": ab, "regime": "baseline", "arm": arm, "seed": sd, "key": f"{arm}{sd}", "untrained_key": "u",
             "config": {"epochs": 4}} for ab, arms in (("a", ("recipe", "replay", "slow")), ("b", ("recipe",)))
            for arm in arms for sd in (0, 1)]
    ten = [True] * 10
    runs = {f"{arm}{sd}": _scored_run(recall, retention, sd) for arm, recall, retention in (
        ("recipe", ten, [True] * 5 + [False] * 5),  # learned, forgot half
        ("replay", ten[:9] + [False], ten[:8] + [False] * 2),  # learned, kept 0.8
        ("slow", [False] * 10, ten)) for sd in (0, 1)}  # kept everything, learned nothing
    g = goal(arm_stats(metas, rows, runs))
    assert g["arms"] == 3, "b / baseline / recipe is the same two runs as a / baseline / recipe: listed once"
    metas["c"] = {"name": "c", "arms": {"recipe": {}}, "regimes": {"baseline": {}}}  # a sweep's subset of them
    rows.append(dict(rows[0], ablation="c"))
    assert [a["label"] for a in arm_stats(metas, rows, runs)] == \
        ["a / baseline / recipe", "a / baseline / replay", "a / baseline / slow"]
    del metas["c"], rows[-1]
    assert g["reached"] == [] and g["learned"] == 2
    assert g["closest"]["label"] == "a / baseline / replay" and g["closest"]["shortfall"] == pytest.approx(0.1)
    assert g["best_learned"] is g["closest"]
    from core.report.readme import goal_sentence
    assert ("reached by 0 of 3 trained arms; closest (the smallest shortfall of the worse of the two): a / baseline / "
            "replay (recall 0.90") in goal_sentence(g)
    runs["replay0"] = runs["replay1"] = _scored_run(ten, ten[:9] + [False])
    g = goal(arm_stats(metas, rows, runs))
    assert [a["label"] for a in g["reached"]] == ["a / baseline / replay"] and g["closest"]["shortfall"] == 0.0
    assert goal_sentence(g).startswith("Goal (retention >= 0.9 at heldout_recall >= 0.9, arm means): reached by 1 "
                                       "of 3 trained arms: a / baseline / replay (recall 1.00")
    # the same goal read with the likelihood retention: the recipe keeps 0.95 of what it knew by likelihood
    from core.report.frontier import goals_by_measure
    from core.report.readme import other_measures
    for arm, kept in (("recipe", 0.95), ("replay", 0.85), ("slow", 1.0)):
        for sd in (0, 1):
            runs[f"{arm}{sd}"].metrics["retention_mc"] = kept
    goals = goals_by_measure(arm_stats(metas, rows, runs))
    assert [a["label"] for a in goals["retention_mc"]["reached"]] == ["a / baseline / recipe"]
    assert goals["retention_heldout"]["closest"] is None  # not measured in these runs: not named
    text = other_measures(goals)
    assert text.startswith("The same goal with retention read otherwise (likelihood; the held-out family no replay "
                           "request touches): `retention_mc`: reached by 1 of 3; closest a / baseline / recipe (recall "
                           "1.00") and "retention_mc 0.95" in text and "retention_heldout" not in text



def test_a_mean_just_under_the_goal_is_not_printed_as_reaching_it():
    from core.report.data import stat_text
    from core.report.readme import goal_sentence

    def stat(mean: float, low: float, high: float) -> dict:
        s = {"mean": mean, "low": low, "high": high, "n": 5}
        return dict(s, text=stat_text(s))

    arms = [{"label": "a / baseline / near", "ablation": "a", "recall": stat(0.897, 0.85, 0.93),
             "retention": stat(0.5, 0.4, 0.6)},
            {"label": "a / baseline / over", "ablation": "a", "recall": stat(0.9, 0.85, 0.95),
             "retention": stat(0.3, 0.2, 0.4)}]
    assert arms[0]["recall"]["text"] == "0.90 [0.85, 0.93]", "two decimals alone would read as reaching 0.9"
    g = goal(arms)
    assert g["closest"]["label"] == "a / baseline / near" and g["learned"] == 1
    sentence = goal_sentence(g)
    assert ("closest (the smallest shortfall of the worse of the two): a / baseline / near (recall 0.897 [0.850, "
            "0.930], retention 0.50 [0.40, 0.60])") in sentence
    assert "the best retention is a / baseline / over (recall 0.90 [0.85, 0.95]" in sentence
    assert arms[0]["recall"]["text"] == "0.90 [0.85, 0.93]", "the arm_stats list itself is left as it was"


@pytest.fixture
def captured(monkeypatch) -> list:
    """The figures the next calls draw, kept open instead of written."""
    figs = []
    monkeypatch.setattr(figures, "save", lambda fig, path: figs.append(fig) or f"figures/{path.name}")
    yield figs
    figures.close_all()


def _drawn_y(ax) -> list[float]:
    ys = [y for line in ax.get_lines() for y in line.get_ydata()]
    ys += [y for p in ax.patches for y in (p.get_y(), p.get_y() + p.get_height())]
    for c in ax.collections:
        offsets = c.get_offsets()
        ys += [y for _, y in offsets] if len(offsets) else []
        if type(c).__name__ != "PathCollection":  # markers' paths are in points, the rest in data
            ys += [y for path in c.get_paths() for _, y in path.vertices]
    return ys


def test_per_arm_figures_stay_inside_0_1_with_a_dot_per_seed(captured, tmp_path):
    out_of_range = {"mean": 0.98, "low": -0.1, "high": 1.2, "per_seed": {0: 1.0, 1: 0.9, 2: 1.05}}
    ab = {"arms": {"a": {}, "b": {"lr": 1.0}}, "signature": "heldout_recall", "axis": "lr"}
    stats = {arm: {"heldout_recall": out_of_range, "retention": dict(out_of_range, mean=0.02, low=-0.3)}
             for arm in ab["arms"]}
    figures.metric_figure(ab, stats, ["heldout_recall", "retention"], tmp_path / "bars.png")
    figures.sweep_figure(ab, stats, ["heldout_recall", "retention"], {"a": 0.1, "b": 1.0}, tmp_path / "sweep.png")
    for fig in captured:
        ax = fig.axes[0]
        assert ax.get_ylim() == (0.0, 1.0)
        ys = _drawn_y(ax)
        assert ys and min(ys) >= 0.0 and max(ys) <= 1.0
        dots = sum(len(c.get_offsets()) for c in ax.collections if type(c).__name__ == "PathCollection")
        assert dots == 2 * 2 * 3  # arms x metrics x seeds


def test_the_forest_plot_is_as_wide_as_its_intervals_need_and_never_wider_than_1(captured, tmp_path):
    def row(diff, low, high, seeds):
        return {"label": "x", "metric": "m", "expected": "increase", "verdict": "not reproduced", "min_effect": 0.05,
                "diff": diff, "low": low, "high": high, "per_seed": seeds}

    study_figures.forest_figure([row(0.02, 0.0, 0.04, [0.01, 0.03]), row(None, None, None, [])], tmp_path / "f.png")
    study_figures.forest_figure([row(0.02, -0.1, 0.15, [0.2])], tmp_path / "g.png")
    study_figures.forest_figure([row(0.9, 0.7, 1.0, [1.0])], tmp_path / "h.png")
    assert [fig.axes[0].get_xlim() for fig in captured] == [
        pytest.approx((-0.115, 0.115)), pytest.approx((-0.23, 0.23)), (-1.0, 1.0)]


def test_a_sweep_marks_the_points_without_a_finished_run(captured, tmp_path):
    ab = {"arms": {"r4": {"lora_r": 4}, "r16": {}}, "signature": "heldout_recall", "axis": "lora_r"}
    none = {"mean": None, "low": None, "high": None, "per_seed": {}}
    some = {"mean": 0.5, "low": 0.4, "high": 0.6, "per_seed": {0: 0.5}}
    figures.sweep_figure(ab, {"r4": {"heldout_recall": none}, "r16": {"heldout_recall": some}}, ["heldout_recall"],
                         {"r4": 4, "r16": 16}, tmp_path / "a.png")
    figures.sweep_figure(ab, {"r4": {"heldout_recall": none}, "r16": {"heldout_recall": none}}, ["heldout_recall"],
                         {"r4": 4, "r16": 16}, tmp_path / "b.png")
    ticks = [[t.get_text() for t in fig.axes[0].get_xticklabels()] for fig in captured]
    assert ticks[0] == ["4\nr4\n(no run yet)", "16\nr16"]
    assert [t.get_text() for t in captured[1].axes[0].texts] == ["no finished run yet"]
    assert not [t.get_text() for t in captured[0].axes[0].texts]


def test_an_ablation_without_a_finished_pair_reads_no_verdict_on_every_page_not_inconclusive():
    from core.report.data import ablation_verdict

    ab = {"name": "a", "signature": "heldout_recall", "control": "a", "arms": {"a": {}, "b": {}}}

    def stored(seeds):
        cmp = {"seeds": seeds, "verdict": "inconclusive", "primary": True}
        return AblationVerdict.from_json({"verdict": "inconclusive",
                                          "comparisons": {"baseline": {"b": {"heldout_recall": cmp}}}})

    assert ablation_verdict(ab, stored([])) is None  # what a comparison stores when no seed has both arms
    assert ablation_verdict(ab, stored([0])) == "inconclusive"
    rows, runs = [], {}
    assert summary_row(ab, rows, runs, stored([]))["verdict"] is None
    assert summary_row(ab, rows, runs, stored([0]))["verdict"] == "inconclusive"


def test_a_zero_width_interval_says_why():
    from core.report.data import effect_text

    nothing = {"diff": 0.0, "low": 0.0, "high": 0.0, "per_seed": {0: [0.0, 0.0], 1: [0.0, 0.0]}}
    assert effect_text(_cmp(nothing)) == "+0.00 [+0.00, +0.00] (no answer counted in either arm)"
    counted = dict(nothing, seeds=[0, 1], items=72)  # verdicts.json says how many paired items each seed has
    assert effect_text(_cmp(counted)) == "+0.00 [+0.00, +0.00] (none of 144 answers per arm counted, in either arm)"
    alike = dict(nothing, per_seed={0: [1.0, 1.0], 1: [0.5, 0.5]})
    assert effect_text(_cmp(alike)) == "+0.00 [+0.00, +0.00] (no item differs between the arms)"
    assert effect_text(_cmp(dict(nothing, high=0.01))) == "+0.00 [+0.00, +0.01]"


def test_an_interval_end_within_rounding_of_min_effect_prints_a_third_decimal():
    from core.report.data import effect_text

    near = {"diff": -0.0214, "low": -0.0971, "high": 0.0543, "min_effect": 0.1}
    assert effect_text(_cmp(near)) == "-0.021 [-0.097, +0.054]"  # not "[-0.10, +0.05]": the end is inside min_effect
    assert effect_text(_cmp(dict(near, low=-0.1))) == "-0.02 [-0.10, +0.05]"  # exactly at it: two decimals say so
    assert effect_text(_cmp(dict(near, low=-0.12))) == "-0.02 [-0.12, +0.05]"
    assert effect_text(_cmp({"diff": -0.098, "low": -0.195, "high": -0.0006, "min_effect": 0.1})) == \
        "-0.098 [-0.195, -0.001]"  # the effect does not reach -0.1 and the end does not touch 0


def test_the_arm_means_beside_an_effect_are_over_the_seeds_both_arms_finished():
    from core.report.data import means_text

    cmp = {"diff": -0.2, "per_seed": {"0": [0.5, 0.25], "1": [0.9, None], "2": [0.3, 0.15]}}
    assert means_text(_cmp(cmp)) == "0.40 -> 0.20"  # seed 1 has no treated run: left out of both means
    assert means_text(_cmp({"diff": None, "per_seed": {}})) is None and means_text(None) is None


def test_the_frontier_colours_each_run_by_who_ran_it_and_labels_the_frontier(captured, tmp_path):
    def run(recall, retention, **config):
        return RunRecord(config={"epochs": 4} | config, status="ok",
                         metrics={"heldout_recall": recall, "retention": retention})

    rows = [{"ablation": "a", "regime": "baseline", "key": "base", "arm": "x"},
            {"ablation": "b", "regime": "baseline", "key": "base", "arm": "x"},
            {"ablation": "b", "regime": "baseline", "key": "own", "arm": "lr_1"},
            {"ablation": "c", "regime": "r", "key": "fix", "arm": "on"},
            {"ablation": "b", "regime": "long", "key": "both", "arm": "y"},
            {"ablation": "d", "regime": "baseline", "key": "both", "arm": "z"}]
    runs = {"base": run(0.9, 0.5), "own": run(0.2, 0.5, lr=1.0), "fix": run(0.5, 0.95, debate=False),
            "both": run(0.95, 0.2, replay=160)}
    study_figures.frontier_figure(rows, runs, tmp_path / "f.png", roles={"b": "remedy", "c": "step", "d": "lever"},
                                  baseline=frozenset({"base"}))
    ax = captured[0].axes[0]
    labels = ax.get_legend_handles_labels()[1]
    # b's own run is a remedy's, c's a step's; the run a and b share is the baseline recipe's because it is one of
    # the recipe's runs (frontier.recipe_rows), not because it is shared; the run b (remedy) and d (lever) share
    # has no one role
    assert [lb for lb in labels if lb not in ("goal: both >= 0.9", "frontier")] == [
        "The original's steps", "Remedies the original never tried", "Shared by ablations of several roles",
        "The baseline recipe"]
    # the frontier (0.95 at 0.2, 0.9 at 0.5, 0.5 at 0.95) is labelled; the run it beats (own) is not
    assert sorted(t.get_text() for t in ax.texts) == ["b / long / y (+1)", "baseline recipe", "c / r / on"]


def _answers(run_answers: dict[tuple, str], seed: int) -> RunRecord:
    samples = [{"set": st, "id": i, "question": f"{st} {i}?", "expected": "x", "answer": a, "hit": a == "x",
                "kept": True} for (st, i), a in run_answers.items()]
    return RunRecord(config={"seed": seed}, status="ok", samples=samples)


def test_sample_answers_put_differing_rows_first_mark_identical_ones_and_cover_every_set():
    same = {("test", "f1"): "x", ("reverse", "r1"): "hiahia", ("identity", "i1"): "a person",
            ("retention", "p1"): "paris"}
    control = {**same, ("test", "f2"): "x", ("retention", "p2"): "tokyo"}
    treated = {**same, ("test", "f2"): "y", ("retention", "p2"): "osaka"}
    columns = [(seed, [("control", {"seed": seed, "key": f"c{seed}"}, _answers(control, seed)),
                       ("treated", {"seed": seed, "key": f"t{seed}"}, _answers(treated, seed))]) for seed in (0, 1)]
    tables = sample_tables(columns)["tables"]
    assert [t["seed"] for t in tables] == [0, 1]
    rows = tables[0]["rows"]
    assert [(r["set"], r["id"], r["same"]) for r in rows[:2]] == [("test", "f2", False), ("retention", "p2", False)]
    assert all(r["same"] for r in rows[2:]) and {r["set"] for r in rows} == {"test", "reverse", "identity", "retention"}
    assert tables[0]["hidden"] == 4 and tables[0]["hidden_sets"] == "1 test, 1 reverse, 1 identity, 1 retention"


def test_a_retention_probe_one_arm_s_reference_missed_says_per_arm_whether_it_counts():
    """Plain text and chat template have different untrained references: a probe only one of them answered counts
    for one arm's retention only, and each answer says so; where both agree the row says it once."""
    answers = {("retention", "p1"): "paris", ("retention", "p2"): "tokyo"}
    chat, plain = _answers(answers, 0), _answers(answers, 0)
    plain.samples[1]["kept"] = False  # the plain-text untrained model missed p2
    tables = sample_tables([(0, [("chat", {"seed": 0, "key": "c"}, chat), ("plain", {"seed": 0, "key": "p"}, plain)])],
                           sets=("retention",))["tables"]
    rows = {r["id"]: r for r in tables[0]["rows"]}
    assert rows["p1"]["kept"] is True and not rows["p1"]["kept_per_arm"]
    assert rows["p2"]["kept"] is None and rows["p2"]["kept_per_arm"]
    assert [c["kept"] for c in rows["p2"]["cells"]] == [True, False]


def test_every_link_and_image_on_every_page_resolves_and_nothing_is_written_outside_the_report(tmp_path):
    res = fixture_copy(tmp_path / "study" / "results")
    (res / "summary.csv").write_text("ablation,metric,value\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    index = render.render(res, tmp_path / "site" / "deep")
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and p.parts[0] != "site"] == []
    checked = 0
    for page in index.parent.glob("*.html"):
        for target in re.findall(r'(?:href|src)="([^"]+)"', page.read_text()):
            if target.startswith(("http://", "https://", "data:", "#")):
                continue
            path = (page.parent / unquote(target.split("#")[0])).resolve()
            assert path.exists(), f"{page.name} links to {target}, which does not exist"
            checked += 1
    assert checked > 50
    assert 'href="../../study/results/summary.csv"' in index.read_text()


def test_each_ablation_page_gives_the_command_that_reruns_it_into_its_own_folder(tmp_path):
    rows, metas, _, runs = load_results(FIXTURE)
    command = reproduce_command(metas["base_vs_chat"], [r for r in rows if r["ablation"] == "base_vs_chat"], runs)
    assert command == ("python run_all.py --only base_vs_chat --seeds 1 --pair tiny --set batch_size=32 --set epochs=2 "
                       "--set max_new_tokens=4 --set paraphrases=1 --precision fp32 --results results-base_vs_chat")
    bf16 = [RunRecord(config={}, status="ok", environment={"precision": "cpu-bfloat16-mixed"})] * 2
    assert precision_options(bf16) == ["--precision", "bf16"]
    assert precision_options([RunRecord(config={}, status="ok", environment={"precision": "cuda-bfloat16-mixed"})]) == \
        ["--device", "cuda", "--precision", "bf16"]
    assert precision_options(bf16 + [RunRecord(config={}, status="ok", environment={"precision": "cpu-fp32"})]) == []
    page = (render.render(FIXTURE, tmp_path / "report").parent / "base_vs_chat.html").read_text()
    shown = page[page.index('<pre class="command">'):]
    assert re.sub(r"<[^>]+>", "", shown[:shown.index("</pre>")]) == command


def test_the_arm_table_shows_the_signature_first_and_folds_the_secondary_metrics(tmp_path):
    page = (render.render(FIXTURE, tmp_path / "report").parent / "weight_decay.html").read_text()
    table = page[page.index('<table class="armtable">'):]
    assert table.index("identity_hallucination") < table.index('<details class="secondary">')
    folded = table[table.index('<details class="secondary">'):table.index("</details>")]
    assert all(m in folded for m in ("heldout_recall", "retention", "reverse_recall"))
    assert "wd_0.1" in table.split("</table>")[0] and "primary" in table.split("</table>")[0]


def test_findings_of_the_first_edition_results_cover_every_ablation():
    rows, metas, verdicts, runs = load_results(ROOT / "tests" / "fixtures" / "first_edition" / "results")
    found = findings(metas, verdicts, rows, runs)
    listed = [o["name"] for group in found["outcomes"].values() for o in group]
    assert sorted(listed) == sorted(metas) and [r["name"] for r in found["ranking"]].count("no_masking") == 1
    assert found["forgetting"]["recipe"]["mean"] is not None and found["forgetting"]["untrained"]
    assert found["goal"]["closest"] and not found["goal"]["reached"]


def test_an_ablation_with_nothing_measured_yet_has_no_verdict_rather_than_inconclusive(tmp_path):
    from core.report.data import NOT_YET

    results = fixture_copy(tmp_path / "results")
    rows, metas, verdicts, runs = load_results(results)
    name = "weight_decay"
    for key in {r["key"] for r in rows if r["ablation"] == name and r["arm"] != metas[name]["control"]}:
        runs[key] = None  # the treatment arms not run yet, as verdicts.json written mid-study would say
    stripped = read_verdicts(json.loads(json.dumps({k: v.to_json() for k, v in verdicts.items()}),
                                        object_hook=lambda d: dict(d, seeds=[]) if "seeds" in d else d))
    found = findings(metas, {**verdicts, name: stripped[name]}, rows, runs)
    pending = [o for o in found["outcomes"]["no verdict"] if o["name"] == name]
    assert pending and set(pending[0]["where"]) == {NOT_YET}
    assert all(r["verdict"] is None for r in found["forest"] if r["ablation"] == name)
    assert any(o["name"] != name for v in ("not reproduced", "inconclusive", "reproduced")
               for o in found["outcomes"][v])
    # an ablation verdicts.json does not cover (the study computes verdicts only when it completes) says so, rather
    # than "not measured yet" for seeds that are finished
    from core.report.findings import NOT_COMPUTED
    found = findings(metas, {k: v for k, v in verdicts.items() if k != name}, rows, runs)
    pending = [o for o in found["outcomes"]["no verdict"] if o["name"] == name]
    assert pending and set(pending[0]["where"]) == {NOT_COMPUTED}


def test_an_effect_on_other_items_than_the_arm_s_own_names_the_items_and_their_means():
    """Retention against each arm's own untrained reference: the arm's mean and the effect's paired means differ,
    and the page says on which items the effect was taken."""
    from core.report.sections import _cell

    ab = {"control": "chat", "signature": "heldout_recall"}
    cmp = {"diff": 0.12, "low": 0.04, "high": 0.21, "seeds": [0, 1], "items": 31,
           "per_seed": {"0": [0.3, 0.42], "1": [0.3, 0.44]}}
    verdict = AblationVerdict.from_json({"comparisons": {"baseline": {"plain": {"retention": cmp}}}})
    own = {"mean": 0.38, "low": 0.3, "high": 0.45, "n": 2}
    cell = _cell(ab, verdict, "baseline", "plain", "retention", own, [], {}, [])
    assert cell["paired"] == "on the 31 items both arms scored: 0.30 → 0.43"
    same = _cell(ab, verdict, "baseline", "plain", "retention", dict(own, mean=0.43), [], {}, [])
    assert same["paired"] is None
    more_seeds = _cell(ab, verdict, "baseline", "plain", "retention", dict(own, n=3), [], {}, [])  # a third seed
    assert more_seeds["paired"] == ("on seeds 0, 1 (both arms finished) and the 31 items both arms scored: "
                                    "0.30 → 0.43")


def test_the_first_screen_answers_with_the_steps_in_order_and_remedies_in_their_own_words(tmp_path):
    res = fixture_copy(tmp_path / "results")
    rows, metas, verdicts, runs = load_results(res)
    f = findings(metas, verdicts, rows, runs)
    parts = {p["role"]: p["rows"] for p in f["answer"]}
    steps = [a["name"] for a in parts.get("step", [])]
    order = {n: m.get("order", 100) for n, m in metas.items()}
    assert steps == sorted(steps, key=lambda n: order[n]) and "wrong_layer_path" in steps
    for a in (a for p in f["answer"] for a in p["rows"]):  # one sentence, from verdicts.json, per ablation
        assert a["sentence"] and a["verdict"] in ("reproduced", "not reproduced", "the other way",
                                                  "untestable here", "inconclusive", "not computed yet",
                                                  "not measured yet")
    from core.report.findings import shown_word
    assert shown_word("remedy", "reproduced") == "works" and shown_word("remedy", "not reproduced") == "does not help"
    assert shown_word("step", "reproduced") == "reproduced"
    html = render.render(res, tmp_path / "report").read_text()
    first = html[:html.index('<section class="intro">')]
    assert '<table class="answer-table">' in first and first.index("answer-table") < html.index('id="findings"')
    assert all(f'href="{n}.html"' in first for n in steps)
    assert 'title="the interval excludes 0 in the symptom' in first  # each verdict word defined on hover
    assert "Limitations" in first and "language-model agents" in first
