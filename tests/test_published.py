"""The published study (results/, report/) changes only when the whole published plan runs into it (tiny study)."""
import csv
import json
from pathlib import Path

import pytest

from core.report import render
from core.study import cli, summary
from core.study.cli import main

# a published study small enough for a test: two ablations of the tiny random model, one seed each
ABLATION = """title: {name}
order: {order}
factor: lora_r
symptom: a test study
signature: heldout_recall
expected: decrease
min_effect: 0.1
control: a
primary: [b]
seeds: 1
regimes:
  tiny: {{model: tiny-qwen2, epochs: 1, max_new_tokens: 4, paraphrases: 1}}
arms:
  a: {{}}
  b: {{lora_r: 4}}
"""


@pytest.fixture()
def study(tmp_path, monkeypatch):
    """A repository-like folder: ablations/, and the published results/ and report/ the suite writes."""
    root = tmp_path / "repo"
    for order, name in enumerate(("beta", "alpha"), start=1):  # listed in `order`, not by name
        (root / "ablations" / name).mkdir(parents=True)
        (root / "ablations" / name / "ablation.yaml").write_text(ABLATION.format(name=name, order=order))
    monkeypatch.setattr(cli, "ABLATIONS", root / "ablations")
    monkeypatch.setattr(summary, "RESULTS", root / "results")
    monkeypatch.setattr(render, "REPORT", root / "report")
    monkeypatch.setattr(cli, "RESULTS", root / "results")
    parser = cli.parser

    def default_results():  # --results defaults to the published folder, as it does for results/
        p = parser()
        p.set_defaults(results=str(root / "results"))
        return p

    monkeypatch.setattr(cli, "parser", default_results)
    return root


def published_files(root: Path) -> dict[str, bytes]:
    """Every file of the published study except the shared run store, which partial runs may add to."""
    files = [p for folder in ("results", "report") for p in (root / folder).rglob("*") if p.is_file()]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files
            if "partial" not in p.parts and "runs" not in p.parts and not p.name.endswith(".lock")}


def test_partial_runs_and_other_results_folders_leave_the_published_files_byte_identical(study, tmp_path):
    assert main(["--quiet"]) == 0
    before = published_files(study)
    assert {"results/plan.json", "results/verdicts.json", "results/summary.csv", "report/index.html"} <= set(before)
    stored = {p.name: p.read_bytes() for p in (study / "results" / "runs").glob("*.json")}

    assert main(["--only", "alpha", "--quiet"]) == 0  # a partial run of cached runs
    assert main(["--set", "lora_alpha=8", "--quiet"]) == 0  # a partial run that trains new runs
    elsewhere = tmp_path / "elsewhere"
    assert main(["--only", "beta", "--results", str(elsewhere), "--quiet"]) == 0
    assert main(["--report-only", "--results", str(elsewhere)]) == 0

    assert published_files(study) == before
    assert {p.name: p.read_bytes() for p in (study / "results" / "runs").glob("*.json") if p.name in stored} == stored
    alpha = study / "results" / "partial" / "alpha"
    assert [r["ablation"] for r in json.loads((alpha / "plan.json").read_text())["rows"]] == ["alpha", "alpha"]
    assert (alpha / "report" / "index.html").is_file() and (alpha / "verdicts.json").is_file()
    assert len(list((alpha / "runs").glob("*.json"))) == 3  # its two arms and the untrained reference, readable
    assert (study / "results" / "partial" / "all-set-lora_alpha=8" / "summary.csv").is_file()
    assert (elsewhere / "report" / "index.html").is_file() and (elsewhere / "plan.json").is_file()
    assert not (elsewhere / "partial").exists()


def test_report_goes_where_report_says(study, tmp_path):
    assert main(["--only", "alpha", "--quiet", "--report", str(tmp_path / "pages")]) == 0
    assert (tmp_path / "pages" / "index.html").is_file()
    assert not (study / "report").exists() and not (study / "results" / "partial" / "alpha" / "report").exists()


def test_regenerating_the_published_study_changes_no_byte(study):
    assert main(["--quiet"]) == 0
    first = published_files(study)
    rows = json.loads((study / "results" / "plan.json").read_text())["rows"]
    assert [r["ablation"] for r in rows] == ["beta", "beta", "alpha", "alpha"]  # the ablations' own order
    assert main(["--quiet"]) == 0  # everything cached
    assert main(["--report-only"]) == 0
    again = published_files(study)
    assert set(again) == set(first)
    assert sorted(name for name in first if first[name] != again[name]) == []  # no time, commit or renderer inside


def test_the_whole_plan_in_another_precision_is_a_partial_run_that_says_how_to_reuse_the_published_runs(study, caplog):
    assert main(["--quiet"]) == 0  # published in fp32 (the tests pin it)
    before = published_files(study)
    assert main(["--precision", "bf16", "--quiet"]) == 0  # every ablation and seed, but other run keys
    assert published_files(study) == before
    other = study / "results" / "partial" / "all-precision-bf16"
    assert (other / "plan.json").is_file() and (other / "report" / "index.html").is_file()
    assert "they computed in cpu-fp32: add --precision fp32" in caplog.text
    assert "remove" in caplog.text and "to start a new edition" in caplog.text


def test_a_plan_that_only_renames_a_regime_says_so_and_adopts_the_names_once_the_plan_is_removed(study, caplog):
    assert main(["--quiet"]) == 0
    before = published_files(study)
    stored = sorted(p.name for p in (study / "results" / "runs").glob("*.json"))
    definition = study / "ablations" / "alpha" / "ablation.yaml"
    definition.write_text(definition.read_text().replace("  tiny: {", "  small: {"))
    assert main(["--quiet"]) == 0  # the same run keys under another regime name: a partial run, nothing trained
    assert published_files(study) == before
    assert "the whole plan with the published run keys, but other names" in caplog.text
    assert "alpha / tiny / a / seed 0 is now alpha / small / a / seed 0, and 1 more" in caplog.text
    assert "Remove" in caplog.text and "to adopt the new names" in caplog.text and "they computed in" not in caplog.text
    (study / "results" / "plan.json").unlink()  # as the warning says
    caplog.clear()
    caplog.set_level("INFO", logger="run_all")
    assert main(["--quiet"]) == 0
    rows = json.loads((study / "results" / "plan.json").read_text())["rows"]
    assert {r["regime"] for r in rows if r["ablation"] == "alpha"} == {"small"}
    assert f"{len(stored)} configs planned, {len(stored)} cached, 0 to run" in caplog.text
    assert sorted(p.name for p in (study / "results" / "runs").glob("*.json")) == stored


def test_without_a_precision_the_published_study_is_regenerated_in_its_own_on_a_cpu_without_bf16(study, caplog,
                                                                                                monkeypatch):
    """A study published in bf16 mixed precision, then `python run_all.py` with no flag on a CPU without bf16
    hardware (HIAHIA_TEST_CPU_BF16=0, where auto means fp32): the plan takes the published precision, so its keys are
    the published ones, nothing trains and no published file changes."""
    assert main(["--precision", "bf16", "--quiet"]) == 0
    published_keys = [r["key"] for r in json.loads((study / "results" / "plan.json").read_text())["rows"]]
    before = published_files(study)
    stored = sorted(p.name for p in (study / "results" / "runs").glob("*.json"))
    monkeypatch.setenv("HIAHIA_TEST_CPU_BF16", "0")
    caplog.clear()
    caplog.set_level("INFO", logger="run_all")
    assert main(["--quiet"]) == 0
    assert "precision bf16: the published study's, as its stored runs record" in caplog.text
    assert f"{len(stored)} configs planned, {len(stored)} cached, 0 to run" in caplog.text
    assert [r["key"] for r in json.loads((study / "results" / "plan.json").read_text())["rows"]] == published_keys
    assert published_files(study) == before
    assert sorted(p.name for p in (study / "results" / "runs").glob("*.json")) == stored


def test_report_only_on_the_unfinished_published_study_writes_provisional_verdicts_beside_it(study, caplog):
    assert main(["--quiet"]) == 0
    runs = sorted((study / "results" / "runs").glob("*.json"))
    plan = json.loads((study / "results" / "plan.json").read_text())
    removed = next(p for p in runs if p.stem == plan["rows"][0]["key"])
    removed.unlink()  # one planned run not stored yet, as while an edition is being run
    (study / "results" / "verdicts.json").unlink()
    before = published_files(study)
    assert main(["--report-only"]) == 0
    assert published_files(study) == before and not (study / "results" / "verdicts.json").exists()
    assert "unfinished (1 planned runs not finished yet)" in caplog.text
    provisional = study / "results" / "partial" / "in-progress"
    assert (provisional / "verdicts.json").is_file() and (provisional / "report" / "index.html").is_file()
    assert len(list((provisional / "runs").glob("*.json"))) == len(runs) - 1
    page = (provisional / "report" / "index.html").read_text()
    assert f"<b>Provisional.</b> {len(runs) - 1} of {len(runs)} planned run records are finished, 1 not run yet" in page
    assert main(["--quiet"]) == 0 and main(["--report-only"]) == 0  # finished again: the published files
    assert (study / "results" / "verdicts.json").is_file()
    assert "Provisional." not in (study / "report" / "index.html").read_text()


def test_a_run_of_the_whole_study_that_leaves_runs_unfinished_writes_its_verdicts_beside_the_published_ones(
        study, monkeypatch, capsys):
    assert main(["--quiet"]) == 0
    before = published_files(study)
    skipped = json.loads((study / "results" / "plan.json").read_text())["rows"][0]["key"]
    (study / "results" / "runs" / f"{skipped}.json").unlink()  # a new run to train, which this invocation won't
    train = cli.execute
    monkeypatch.setattr(cli, "execute", lambda plan, *rest: train([r for r in plan if r["key"] != skipped], *rest))
    assert main(["--quiet"]) == cli.EXIT_RUNS_PENDING
    assert published_files(study) == before  # verdicts, CSV and report of the finished study, byte for byte
    provisional = study / "results" / "partial" / "in-progress"
    assert "provisional verdicts, summary and report are in" in capsys.readouterr().out
    assert "<b>Provisional.</b>" in (provisional / "report" / "index.html").read_text()
    rows = [r for r in csv.DictReader((provisional / "summary.csv").open()) if r["key"] == skipped]
    assert rows and {r["status"] for r in rows} == {"missing"}

    monkeypatch.setattr(cli, "execute", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))  # killed at once
    for name in ("verdicts.json", "summary.csv"):
        (study / "results" / name).unlink()  # a new edition: nothing published yet
    with pytest.raises(KeyboardInterrupt):
        main(["--quiet"])
    assert not (study / "results" / "verdicts.json").exists() and not (study / "results" / "summary.csv").exists()
    assert (study / "results" / "plan.json").is_file() and (provisional / "verdicts.json").is_file()
