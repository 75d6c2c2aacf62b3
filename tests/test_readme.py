"""The README's study numbers are generated from the committed results, so README and report agree."""
import json
import shutil
from pathlib import Path

from core.report import readme

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "report" / "results"


def test_the_readme_numbers_are_those_of_the_committed_results():
    assert readme.main(["--check"]) == 0, "run `python -m core.report.readme` after the results change"
    assert all(marker in readme.MEASURES.read_text() for marker in readme.AGREEMENT)  # so --check covers the labels


def test_a_changed_verdict_makes_the_check_fail_until_the_block_is_regenerated(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    page = tmp_path / "README.md"
    page.write_text(f"# t\n\nbefore\n\n{readme.BEGIN}\nstale numbers\n{readme.END}\n\nafter\n")
    args = ["--results", str(results), "--readme", str(page)]
    assert readme.main([*args, "--check"]) == 1
    assert readme.main(args) == 0 and readme.main([*args, "--check"]) == 0
    text = page.read_text()
    assert text.startswith("# t\n\nbefore\n\n") and text.endswith(f"{readme.END}\n\nafter\n")
    assert "stale numbers" not in text and "planned run records finished" in text
    verdicts = json.loads((results / "verdicts.json").read_text())
    name = next(iter(verdicts))
    verdicts[name]["verdict"] = "reproduced" if verdicts[name]["verdict"] != "reproduced" else "not reproduced"
    (results / "verdicts.json").write_text(json.dumps(verdicts))
    assert readme.main([*args, "--check"]) == 1
    assert "differ" in capsys.readouterr().err


def test_seeds_count_only_when_every_planned_run_of_them_is_finished(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    rows = json.loads((results / "plan.json").read_text())["rows"]
    name = rows[0]["ablation"]
    seeds = sorted({r["seed"] for r in rows if r["ablation"] == name})
    assert f"Seeds per ablation: {name} {len(seeds)}," in readme.block(results)
    (results / "runs" / f"{rows[0]['key']}.json").unlink()  # one arm of one seed gone: that seed is not finished
    assert f"Seeds per ablation (finished of planned): {name} {len(seeds) - 1} of {len(seeds)}," in readme.block(results)


def test_the_block_ranks_the_ablations_by_effect_and_names_the_arm_closest_to_the_goal():
    text = readme.block(Path(__file__).resolve().parent / "fixtures" / "first_edition" / "results")
    ranked = text[text.index("Ranked by effect"):text.index("Forgetting price")]
    assert ranked.index("1. no_masking: +0.01 (`prompt_echo` +0.01 [+0.01, +0.01], original_budget; not reproduced)") \
        < ranked.index("2. base_vs_chat") < ranked.index("3. no_val_selection: +0.01 (`heldout_recall` -0.01")
    assert "reached by 0 of 8 trained arms; closest (the smallest shortfall of the worse of the two): no_val_selection / overfit / best_by_validation" in text


def test_the_findings_carry_the_blind_scorer_check_with_the_baseline_rates_of_the_results_they_describe():
    from core.analysis import blind

    fixture = Path(__file__).resolve().parent / "fixtures" / "first_edition" / "results"
    text = readme.block(fixture)
    table = blind.check(results=fixture)
    assert blind.markdown(table) in text and text.count("| scorer | label 1 means |") == 1
    assert blind.misses(table) in text and "data/labels/blind/heldout/AGREEMENT.md" in text
    # the raw rates are the described results' baseline answers, not the published study's
    assert (table["recall"].baseline_raw, table["recall"].baseline_n) != \
        (blind.check()["recall"].baseline_raw, blind.check()["recall"].baseline_n)


def _published_means(ablation: str, metric_by_name: dict[str, tuple[str, str]]) -> dict[str, float]:
    """{name: (arm, metric)} -> {name: that arm's mean in the committed results, to 2 decimals}; skips the test
    until every planned run of those arms is stored (an edition being run)."""
    import pytest

    from core.report.data import arm_stat, load_results, status

    rows, _, _, runs = load_results(readme.RESULTS)
    arms = {arm: [r for r in rows if r["ablation"] == ablation and r["arm"] == arm]
            for arm, _ in metric_by_name.values()}
    if not all(arms.values()) or any(status(runs.get(r["key"])) != "ok" for a in arms.values() for r in a):
        pytest.skip(f"{ablation} is not complete in results/ yet (an edition is being run)")
    return {name: round(arm_stat(arms[arm], runs, metric)["mean"], 2) for name, (arm, metric) in metric_by_name.items()}


def test_the_numbers_hiahia_quotes_to_users_are_the_published_study_s_once_it_has_them():
    """core/userdata.RECALL_BY_WORDINGS (the init template, the few-wordings warning) against paraphrase_count's
    arms in the committed results."""
    from core.facts.userfile import RECALL_BY_WORDINGS

    measured = _published_means("paraphrase_count", {n: (f"p{n}", "heldout_recall") for n in RECALL_BY_WORDINGS})
    assert RECALL_BY_WORDINGS == measured, "update core/userdata.RECALL_BY_WORDINGS from the published study"


def test_the_recipe_figures_the_model_card_quotes_are_the_published_study():
    """core/card.RECIPE_MEASURED (every `hiahia train` model card quotes it) against self_replay's arms in the
    committed results."""
    from core.facts.card import RECIPE_MEASURED

    measured = _published_means("self_replay", {"heldout_recall": ("self_replay", "heldout_recall"),
                                                "retention": ("self_replay", "retention"),
                                                "retention_without_replay": ("no_replay", "retention")})
    assert RECIPE_MEASURED == measured, "update core/card.RECIPE_MEASURED from the published study"


def test_hiahia_train_uses_the_arm_the_published_study_puts_closest_to_the_goal():
    """#40's ship-it: once every planned run is stored, core/facts/train.RECIPE is the config of the arm
    frontier.recipe_choice picks from the committed results (the rule was fixed before the results)."""
    import pytest

    from core.facts.train import is_recipe
    from core.report.data import load_results, study_totals
    from core.report.findings import with_labels
    from core.report.frontier import arm_stats, recipe_choice

    rows, metas, _, runs = load_results(readme.RESULTS)
    totals = study_totals(rows, runs)
    if totals["missing"] or totals["failed"]:
        pytest.skip("the study in results/ is not complete yet (an edition is being run)")
    choice = recipe_choice(arm_stats(with_labels(metas), rows, runs))
    assert choice is not None and is_recipe(choice["config"]), \
        f"set core/facts/train.RECIPE to the config of {choice['label']} (the arm closest to the goal)"


def test_the_recipe_choice_is_the_closest_arm_hiahia_train_can_use():
    from core.report.frontier import recipe_choice
    from core.run.config import RunConfig

    def arm(label, recall, retention, **changes):
        config = RunConfig(**changes).to_dict()
        return {"label": label, "recall": {"mean": recall, "text": ""}, "retention": {"mean": retention, "text": ""},
                "config": {k: v for k, v in config.items() if k != "seed"}}
    # each closer to the goal than the arms hiahia can run, and each something `hiahia train` would not do as the
    # study did it
    unrunnable = [arm("full", 0.95, 0.95, full_finetune=True),           # not an adapter
                  arm("base", 0.95, 0.95, model="gemma-3-270m"),           # another model
                  arm("plain", 0.95, 0.95, format="plain"),                # another prompt format
                  arm("scaled", 0.95, 0.95, interpolate=0.75),             # hiahia keeps a checkpoint as it is
                  arm("probes", 0.95, 0.95, selection="best_recall_retention"),  # the study's validation probes
                  arm("varied", 0.95, 0.95, answers="varied"),             # a user's file has no answer variants
                  arm("entities", 0.95, 0.95, replay=40, replay_source="entities"),  # replay about the study's facts
                  arm("fixed", 0.95, 0.95, system_prompt="fixed"),         # hiahia asks under the model's prompt
                  arm("p1", 0.95, 0.95, paraphrases=1),                    # the user's file decides the wordings
                  arm("eval", 0.95, 0.95, eval_prompt="unseen")]          # measured otherwise than hiahia asks
    runnable = [arm("replay", 0.88, 0.80, replay=160, format="chat"),
                arm("lr", 0.95, 0.60, lr=2e-3, lr_schedule="constant", selection="best_recall")]
    assert recipe_choice(unrunnable + runnable)["label"] == "replay"  # shortfall 0.10 against lr's 0.30
    assert recipe_choice(unrunnable) is None


def test_the_agreement_block_is_regenerated_from_the_labelled_batches(tmp_path):
    from core.analysis.agreement import BATCHES, batches_markdown

    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    begin, end = readme.AGREEMENT
    page = tmp_path / "README.md"
    page.write_text(f"{readme.BEGIN}\n{readme.END}\n")
    measures = tmp_path / readme.MEASURES.relative_to(readme.ROOT)  # docs/terms-and-measures.md beside the README
    measures.parent.mkdir()
    measures.write_text(f"# m\n\n{begin}\n| recall | gives the fact | 1 | 100.0% |\n{end}\n")
    args = ["--results", str(results), "--readme", str(page)]
    assert readme.main([*args, "--check"]) == 1
    assert readme.main(args) == 0 and readme.main([*args, "--check"]) == 0
    block = measures.read_text().split(begin, 1)[1].split(end, 1)[0].strip("\n")
    assert block == readme.scorer_agreement() and "| 1 | 100.0% |" not in block
    assert block.startswith("The blind held-out check") and batches_markdown() in block
    assert block.count("| kind | label 1 means |") == sum((f / "labels.csv").exists() for f in BATCHES)
    assert block.count("| scorer | label 1 means |") == 1  # the blind table, once


def test_each_ablation_readme_gets_its_verdict_and_arm_table_and_the_check_covers_it(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    page = tmp_path / "README.md"
    page.write_text(f"# t\n\n{readme.BEGIN}\n{readme.END}\n")
    own = tmp_path / "ablations" / "wrong_layer_path" / "README.md"
    own.parent.mkdir(parents=True)
    own.write_text("# Wrong path\n\nHand-written text.\n")  # no markers yet: a Results section is appended
    stray = tmp_path / "ablations" / "not_in_the_plan" / "README.md"
    stray.parent.mkdir(parents=True)
    stray.write_text("# untouched\n")
    args = ["--results", str(results), "--readme", str(page)]
    assert readme.main([*args, "--check"]) == 1 and str(own) in capsys.readouterr().err
    assert readme.main(args) == 0 and readme.main([*args, "--check"]) == 0
    text = own.read_text()
    assert text.startswith("# Wrong path\n\nHand-written text.\n\n## Results\n\n" + readme.ABLATION_NUMBERS[0])
    assert "Verdict: **not reproduced** (" in text and "Deciding: `heldout_recall` expected to decrease by at least " \
        "0.1, wrong_path against correct_path." in text
    table = text[text.index("| arm |"):]
    assert table.startswith("| arm | `heldout_recall` ↑ | `identity_hallucination` ↓ | `retention` ↑ | "
                            "`reverse_recall` ↑ |")
    assert "| `correct_path` (control) | " in table and "| `wrong_path` | " in table
    wrong = next(line for line in table.splitlines() if line.startswith("| `wrong_path`"))
    assert "<br>" in wrong.split(" | ")[1] and "**not reproduced**" in wrong.split(" | ")[1]  # deciding: verdict
    assert "**" not in " | ".join(wrong.split(" | ")[2:])  # the other metrics: effects, no verdict
    assert stray.read_text() == "# untouched\n"

    verdicts = json.loads((results / "verdicts.json").read_text())
    verdicts["wrong_layer_path"]["verdict"] = "reproduced"
    cmp = verdicts["wrong_layer_path"]["comparisons"]["baseline"]["wrong_path"]["heldout_recall"]
    cmp.update(diff=0.3, low=0.2, high=0.4)  # the symptom is a decrease: a clear increase went the other way
    (results / "verdicts.json").write_text(json.dumps(verdicts))
    assert readme.main([*args, "--check"]) == 1 and str(own) in capsys.readouterr().err
    assert readme.main(args) == 0 and "Verdict: **reproduced** (" in own.read_text()
    assert "+0.30 [+0.20, +0.40] **" in own.read_text() and "(the other way)" in own.read_text()
    assert own.read_text().count(readme.ABLATION_NUMBERS[0]) == 1  # replaced, not appended again


def test_a_selection_ablation_s_page_says_per_regime_whether_validation_loss_turned_up():
    from core.report.data import load_results

    rows, metas, verdicts, runs = load_results(FIXTURE)
    text = readme.ablation_block(metas["no_val_selection"], [r for r in rows if r["ablation"] == "no_val_selection"],
                                 runs, verdicts["no_val_selection"])
    heads = [line for line in text.splitlines() if line.startswith(("Regime", "Seeds"))]
    assert heads and all("Validation loss turned up (lowest before the last epoch) in " in h for h in heads)
    assert "Validation loss" not in readme.ablation_block(
        metas["wrong_layer_path"], [r for r in rows if r["ablation"] == "wrong_layer_path"], runs,
        verdicts["wrong_layer_path"])


def test_what_changed_since_the_last_edition_names_each_changed_verdict_and_why():
    from core.report import editions

    def entry(verdict, signature="heldout_recall", seeds=5, arms=("a", "b"), effect="+0.20 [+0.10, +0.30]"):
        design = {k: None for k in editions.DESIGN_FIELDS} | {"arms": list(arms), "control": "a"}
        return {"verdict": verdict, "signature": signature, "seeds": seeds, "effect": effect, "means": "0.50 -> 0.70",
                "effect_where": None, "design": design}

    before = {"measured": entry("reproduced"), "designed": entry("reproduced"), "seeded": entry("inconclusive"),
              "stricter": entry("not reproduced"), "lucky": entry("inconclusive"), "kept": entry("reproduced"),
              "remeasured": entry("reproduced"), "training_schedule": entry("reproduced"),
              "dropped": entry("reproduced")}
    now = {"measured": entry("not reproduced", signature="recall_mc"),
           "designed": entry("the other way", arms=("a", "b", "c")), "seeded": entry("reproduced", seeds=15),
           "stricter": entry("inconclusive"), "lucky": entry("reproduced"), "kept": entry("reproduced"),
           "remeasured": entry("reproduced", signature="recall_mc"),
           "learning_rate": entry("inconclusive"), "training_schedule": entry("reproduced")}
    previous = {"edition": "second edition", "renamed": {"learning_rate": "training_schedule"}, "ablations": before}
    c = editions.changes(previous, now)
    why = {e["name"]: e["why"] for e in c["changed"]}
    assert why == {"measured": ["a new measure (`heldout_recall` -> `recall_mc`)"],
                   "designed": ["a new design (arms)"], "seeded": ["more seeds (5 -> 15)"],
                   "stricter": ["the stricter verdict rules"], "lucky": [editions.NONE_RECORDED],
                   "learning_rate": [editions.NONE_RECORDED]}
    # the rate sweep was called training_schedule; that name is now a new ablation
    assert c["new"] == ["training_schedule"] and c["gone"] == ["dropped"]
    assert [e["name"] for e in c["same"]] == ["kept", "remeasured"]
    text = "\n".join(editions.markdown(c, previous["edition"]))
    assert "| learning_rate (was training_schedule) | reproduced | inconclusive | `heldout_recall` 0.50 -> 0.70, +0.20" \
        in text
    # an unchanged verdict still says what changed under it
    assert "remeasured (reproduced; under a new measure (`heldout_recall` -> `recall_mc`))" in text
    assert "New in this edition: training_schedule." in text and "No longer run: dropped." in text
    # a new measure that runs the other way is a new measure, not also a new design
    flipped = dict(entry("reproduced", signature="identity_mc"))
    flipped["design"] = dict(flipped["design"], expected="decrease")
    assert editions.differences(entry("reproduced"), flipped) == ["a new measure (`heldout_recall` -> `identity_mc`)"]


def test_the_edition_comparison_reads_the_published_study_only_and_its_snapshot_records_each_ablation():
    from core.report import editions
    from core.report.data import load_results
    from core.report.findings import findings

    fixture = Path(__file__).resolve().parent / "fixtures" / "first_edition" / "results"
    assert "What changed since" not in readme.block(fixture)  # a fixture is no edition of the published study
    rows, metas, verdicts, runs = load_results(fixture)
    snap = editions.snapshot(metas, findings(metas, verdicts, rows, runs)["outcomes"])
    assert set(snap) == set(metas)
    for name, e in snap.items():
        assert e["signature"] == metas[name]["signature"] and set(e["design"]) == set(editions.DESIGN_FIELDS)
        assert e["verdict"] and isinstance(e["seeds"], int)
    stored = editions.previous()
    assert stored["edition"] == "second edition" and stored["renamed"] == {"learning_rate": "training_schedule"}
    assert stored["ablations"]["training_schedule"]["effect"] == "+0.86 [+0.79, +0.93]"  # the second edition's rate sweep
