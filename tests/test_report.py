"""The HTML report: renders a small tiny-model results set quickly, marks missing and failed runs as gaps,
and loads in headless Chromium with every figure shown and no console error."""
import difflib
import importlib.util
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from core import report
from core.record import RunRecord
from core.suite import main

ROOT = Path(__file__).resolve().parent.parent
# the three ablations with special report content (injection report, best-epoch marker) and a plain one
ONLY = "wrong_layer_path,no_val_selection,debate_augmentation"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    # batch_size=32 keeps the 16-epoch overfit regime of no_val_selection to about a minute on a 2-core CPU
    args = ["--results", str(out), "--only", ONLY, "--seeds", "1", "--pair", "tiny", "--set", "model=tiny-qwen2",
            "--set", "epochs=1", "--set", "batch_size=32", "--set", "max_new_tokens=4", "--set", "paraphrases=1",
            "--quiet", "--no-report"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def rendered(results, tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("report")
    (out / "figures").mkdir()
    (out / "figures" / "stale-from-an-old-run.png").write_bytes(b"not a figure")
    start = time.perf_counter()
    index = report.render(results, out)
    return index, time.perf_counter() - start


def plan_of(results: Path) -> dict:
    return json.loads((results / "plan.json").read_text())


def summary_row(html: str, ablation: str) -> str:
    start = html.index(f'<tr data-ablation="{ablation}">')
    return html[start:html.index("</tr>", start)]


def copy_results(results: Path, dest: Path) -> Path:
    shutil.copytree(results, dest)
    return dest


def test_render_writes_index_and_figures_in_under_30_s(results, rendered):
    index, seconds = rendered
    assert seconds < 30
    html = index.read_text()
    figures = sorted(p.name for p in (index.parent / "figures").glob("*.png"))
    assert "stale-from-an-old-run.png" not in figures
    assert figures and all(f'src="figures/{name}"' in html for name in figures)
    assert not [p for p in index.parent.iterdir() if p.name.startswith(".")]  # no temp file left behind
    for name in plan_of(results)["ablations"]:
        assert f'id="{name}"' in html
    assert report.QUESTION in html
    assert "no module matches" in html  # wrong_layer_path: the strict injection error is shown
    assert "0 module(s) matched" in html
    assert "Dotted line: the epoch with the lowest validation loss" in html  # no_val_selection marks best_epoch
    assert "1 seed" in html
    assert "<script" not in html.lower()


def test_missing_and_failed_runs_render_as_marked_gaps(results, tmp_path):
    res = copy_results(results, tmp_path / "results")
    rows = plan_of(res)["rows"]
    missing = next(r for r in rows if r["ablation"] == "wrong_layer_path" and r["arm"] == "wrong_path")
    failed = next(r for r in rows if r["ablation"] == "debate_augmentation" and r["arm"] == "without_debate")
    (res / "runs" / f"{missing['key']}.json").unlink()
    (res / "runs" / f"{missing['untrained_key']}.json").unlink()
    rec = json.loads((res / "runs" / f"{failed['key']}.json").read_text())
    # the shape run_group stores for a failed training: no metrics, no history, no samples
    rec = {k: rec[k] for k in ("key", "config", "environment", "model_identity", "data_sha256", "timings")}
    rec.update(status="failed", error="TrainingError: non-finite <loss> & co")
    (res / "runs" / f"{failed['key']}.json").write_text(json.dumps(rec))

    html = report.render(res, tmp_path / "report").read_text()
    assert "TrainingError: non-finite &lt;loss&gt; &amp; co" in html and "<loss>" not in html
    assert f"run {missing['key']} is not on disk" in html
    assert f"run {missing['untrained_key']} is not on disk" in html
    for ablation, arm in (("wrong_layer_path", "wrong_path"), ("debate_augmentation", "without_debate")):
        row = summary_row(html, ablation)
        arm_cell = row[row.index(f"<b>{arm}</b>"):]
        assert "no finished run" in arm_cell.split("</li>")[0], arm_cell[:300]
        assert "run(s) missing or failed" in row
        assert "stale: its runs are now missing or failed" in row  # verdicts.json predates the gap


def test_command_line_rerenders_and_explains_an_empty_results_folder(results, tmp_path, capsys):
    assert report.main(["--results", str(results), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "index.html").exists()
    assert report.main(["--results", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2
    assert "run_all.py" in capsys.readouterr().err


def test_sweep_ablation_plots_metrics_against_the_axis(results, tmp_path):
    res = copy_results(results, tmp_path / "results")
    plan = plan_of(res)
    plan["ablations"]["debate_augmentation"].update(kind="sweep", axis="lora_r")
    for r in plan["rows"]:
        if r["ablation"] == "debate_augmentation" and r["arm"] == "without_debate":
            r["config"]["lora_r"] = 64
    (res / "plan.json").write_text(json.dumps(plan))
    index = report.render(res, tmp_path / "report")
    assert (index.parent / "figures" / "debate_augmentation--baseline--sweep.png").stat().st_size > 0
    assert "debate_augmentation--baseline--metrics.png" not in index.read_text()


def test_several_seeds_show_confidence_intervals_and_render_fast(results, tmp_path):
    """Three seeds per arm (copies of seed 0 with jittered numbers): ~30 runs, CIs instead of '1 seed'."""
    res = copy_results(results, tmp_path / "results")
    plan = plan_of(res)
    rng = random.Random(0)
    rows = []
    for r in plan["rows"]:
        rows.append(r)
        src = json.loads((res / "runs" / f"{r['key']}.json").read_text())
        for seed in (1, 2):
            key = f"{r['key'][:12]}s{seed:03d}"
            rec = json.loads(json.dumps(src))
            rec.update(key=key, config=dict(src["config"], seed=seed))
            rec["metrics"] = {m: None if v is None else min(1.0, max(0.0, v + rng.uniform(-0.1, 0.1)))
                              for m, v in src["metrics"].items()}
            rec["history"] = [dict(h, loss=h["loss"] + rng.uniform(-0.2, 0.2)) for h in src["history"]]
            (res / "runs" / f"{key}.json").write_text(json.dumps(rec))
            rows.append(dict(r, seed=seed, key=key, config=rec["config"]))
    plan["rows"] = rows
    (res / "plan.json").write_text(json.dumps(plan))
    start = time.perf_counter()
    html = report.render(res, tmp_path / "report").read_text()
    assert time.perf_counter() - start < 30
    row = summary_row(html, "debate_augmentation")
    assert "(1 seed)" not in row and "[" in row.split("</ul>")[0]
    assert "seeds 0, 1, 2" in html


def _report_fixture():
    """tests/fixtures/report_fixture.py: the committed results folder and the page rendered from it."""
    spec = importlib.util.spec_from_file_location("report_fixture", ROOT / "tests" / "fixtures" / "report_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_results_fixture_renders_to_the_committed_page():
    fixture = _report_fixture()
    expected, got = fixture.EXPECTED.read_text(), fixture.render_page()
    diff = list(difflib.unified_diff(expected.splitlines(), got.splitlines(), "expected.html", "rendered", lineterm=""))
    assert not diff, "the rendered report changed (regenerate with python tests/fixtures/report_fixture.py --page " \
                     "only if that is intended):\n" + "\n".join(diff[:60])


def test_stored_runs_keep_their_format_through_the_typed_record():
    runs = sorted((_report_fixture().RESULTS / "runs").glob("*.json"))
    assert len(runs) >= 8
    for path in runs:
        stored = json.loads(path.read_text())
        record = RunRecord.from_json(stored)
        assert record.to_json() == stored and list(record.to_json()) == list(stored), path.name
        assert record.key == path.stem and record.model_card["kind"] == "chat template, untrained"


def test_first_edition_runs_without_the_newer_fields_still_load_and_render(tmp_path):
    # results/ holds the first edition's runs: no replay, replay_dropped, model_card, turn_overrun or identity groups
    paths = sorted((ROOT / "results" / "runs").glob("*.json"))
    assert paths
    for path in paths:
        stored = json.loads(path.read_text())
        record = RunRecord.from_json(stored)
        assert {k: v for k, v in record.to_json().items() if k in stored} == stored, path.name  # nothing lost
        assert record.replay_dropped == [] and record.model_card == {}
    html = report.render(ROOT / "results", tmp_path / "report").read_text()
    assert "not recorded (runs stored before records had a model card)" in html
    assert "Dotted line: the epoch with the lowest validation loss" in html and "Confound." in html


def _chrome(tmp: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp}", "--window-size=1366,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_page_loads_in_headless_chromium(results, rendered, tmp_path):
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if absent:
        reason = f"{', '.join(absent)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By

    index, _ = rendered
    driver = _chrome(Path(tempfile.mkdtemp(dir=tmp_path)))
    try:
        driver.get(index.as_uri())
        deadline = time.time() + 20
        while time.time() < deadline and not driver.execute_script(
                "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"):
            time.sleep(0.1)
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        assert images, "the page shows no figure"
        assert [src for src, width in images if not width] == []
        body_rows = driver.find_elements(By.CSS_SELECTOR, "#summary-table > tbody > tr")
        assert len(body_rows) == len(plan_of(results)["ablations"])
        page_width, view_width = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert page_width <= view_width, "something is wider than the page"
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []
        shot = ROOT / "report" / "screenshot-test.png"  # git-ignored; a look at the headline and summary
        shot.parent.mkdir(exist_ok=True)
        driver.set_window_size(1366, 1600)
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
