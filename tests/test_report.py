"""The HTML report: renders a small tiny-model results set quickly, marks missing and failed runs as gaps, and loads
in headless Chromium at 1400 and 400 px with every figure shown, nothing wider than the screen and no console error.
(What the pages say, from the committed fixture, is specified in tests/test_report_content.py.)"""
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

from core.paths import ROOT
from core.report import render
from core.run.record import RunRecord
from core.study.cli import main

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
    index = render.render(results, out)
    return index, time.perf_counter() - start


def plan_of(results: Path) -> dict:
    return json.loads((results / "plan.json").read_text())


def summary_row(html: str, ablation: str) -> str:
    start = html.index(f'<tr data-ablation="{ablation}">')
    return html[start:html.index("</tr>", start)]


def copy_results(results: Path, dest: Path) -> Path:
    shutil.copytree(results, dest)
    return dest


def site(index: Path) -> str:
    """Every page of a rendered report, one after the other."""
    return "\n".join(p.read_text() for p in sorted(index.parent.glob("*.html")))


def with_three_seeds(results: Path, dest: Path) -> Path:
    """A copy of the results with seeds 1 and 2 added to every row: copies of seed 0 with jittered numbers."""
    res = copy_results(results, dest)
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
            rec["history"] = [dict(h, loss=h["loss"] + rng.uniform(-0.2, 0.2)) if "loss" in h else h
                              for h in src["history"]]
            for sample in rec["samples"][seed::3]:  # some answers differ between seeds
                sample["answer"] = f"{sample['answer']} (seed {seed})"
            (res / "runs" / f"{key}.json").write_text(json.dumps(rec))
            rows.append(dict(r, seed=seed, key=key, config=rec["config"]))
    plan["rows"] = rows
    (res / "plan.json").write_text(json.dumps(plan))
    return res


@pytest.fixture(scope="module")
def three_seeds(results, tmp_path_factory) -> Path:
    return with_three_seeds(results, tmp_path_factory.mktemp("three") / "results")


def test_render_writes_index_and_figures_in_under_30_s(results, rendered):
    index, seconds = rendered
    assert seconds < 30
    html = site(index)
    figures = sorted(p.name for p in (index.parent / "figures").glob("*.png"))
    assert "stale-from-an-old-run.png" not in figures
    assert figures and all(f'src="figures/{name}"' in html for name in figures)
    assert not [p for p in index.parent.iterdir() if p.name.startswith(".")]  # no temp file left behind
    for name in plan_of(results)["ablations"]:
        assert f'<tr data-ablation="{name}">' in index.read_text()
        assert f'id="{name}"' in (index.parent / f"{name}.html").read_text()
    assert render.QUESTION in index.read_text() and 'id="findings"' in index.read_text()
    assert "no module matches" in html  # wrong_layer_path: the strict injection error is shown
    assert "0 module(s) matched" in html
    assert "Dotted line: the epoch with the lowest validation loss" in html  # no_val_selection marks best_epoch
    assert "1 seed" in html
    assert "<script" not in html.lower()


def test_a_rerender_removes_the_pages_of_ablations_that_are_gone(results, tmp_path):
    out = tmp_path / "report"
    render.render(results, out)
    res = copy_results(results, tmp_path / "results")
    plan = plan_of(res)
    del plan["ablations"]["debate_augmentation"]
    plan["rows"] = [r for r in plan["rows"] if r["ablation"] != "debate_augmentation"]
    (res / "plan.json").write_text(json.dumps(plan))
    (out / "notes.html").write_text("<p>a page someone else wrote</p>")
    render.render(res, out)
    assert not (out / "debate_augmentation.html").exists() and (out / "wrong_layer_path.html").exists()
    assert (out / "notes.html").exists()


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

    index = render.render(res, tmp_path / "report")
    html = site(index)
    assert "TrainingError: non-finite &lt;loss&gt; &amp; co" in html and "<loss>" not in html
    assert f"run {missing['key']} is not on disk" in html
    assert f"run {missing['untrained_key']} is not on disk" in html
    for ablation, arm in (("wrong_layer_path", "wrong_path"), ("debate_augmentation", "without_debate")):
        row = summary_row(index.read_text(), ablation)
        arm_cell = row[row.index(f"<b>{arm}</b>"):]
        assert "no finished run" in arm_cell.split("</li>")[0], arm_cell[:300]
        assert "run(s) missing or failed" in row
        assert "stale: its runs are now missing or failed" in row  # verdicts.json predates the gap


def test_command_line_rerenders_and_explains_an_empty_results_folder(results, tmp_path, capsys):
    assert render.main(["--results", str(results), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "index.html").exists()
    assert render.main(["--results", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2
    assert "run_all.py" in capsys.readouterr().err


def test_sweep_ablation_plots_metrics_against_the_axis(results, tmp_path):
    res = copy_results(results, tmp_path / "results")
    plan = plan_of(res)
    plan["ablations"]["debate_augmentation"].update(kind="sweep", axis="lora_r")
    for r in plan["rows"]:
        if r["ablation"] == "debate_augmentation" and r["arm"] == "without_debate":
            r["config"]["lora_r"] = 64
    (res / "plan.json").write_text(json.dumps(plan))
    index = render.render(res, tmp_path / "report")
    assert (index.parent / "figures" / "debate_augmentation--baseline--sweep.png").stat().st_size > 0
    assert "debate_augmentation--baseline--sweep.png" in (index.parent / "debate_augmentation.html").read_text()
    assert "debate_augmentation--baseline--metrics.png" not in site(index)


def test_several_seeds_show_confidence_intervals_every_seed_and_render_fast(three_seeds, tmp_path):
    """Three seeds per arm (copies of seed 0 with jittered numbers): ~30 runs, CIs instead of '1 seed'."""
    start = time.perf_counter()
    index = render.render(three_seeds, tmp_path / "report")
    assert time.perf_counter() - start < 30
    row = summary_row(index.read_text(), "debate_augmentation")
    assert "(1 seed)" not in row and "[" in row.split("</ul>")[0]
    page = (index.parent / "debate_augmentation.html").read_text()
    assert "seeds 0, 1, 2" in page
    for seed in (0, 1, 2):  # each seed's value, linked to its run, and a sample-answer table per seed
        assert f">s{seed} " in page and f'<div class="seedtab" data-seed="{seed}">' in page
    assert page.count('<input type="radio"') == 3


def _report_fixture():
    """tests/fixtures/report_fixture.py: the committed results folder and the page rendered from it."""
    spec = importlib.util.spec_from_file_location("report_fixture", ROOT / "tests" / "fixtures" / "report_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_results_fixture_renders_to_the_committed_pages():
    fixture = _report_fixture()
    got = fixture.render_pages()
    assert sorted(got) == sorted(p.name for p in fixture.EXPECTED.glob("*.html"))
    for name, page in got.items():
        expected = (fixture.EXPECTED / name).read_text()
        diff = list(difflib.unified_diff(expected.splitlines(), page.splitlines(), name, "rendered", lineterm=""))
        assert not diff, f"the rendered page {name} changed (regenerate with python tests/fixtures/report_fixture.py " \
                         "--page only if that is intended):\n" + "\n".join(diff[:60])


def test_stored_runs_keep_their_format_through_the_typed_record():
    runs = sorted((_report_fixture().RESULTS / "runs").glob("*.json"))
    assert len(runs) >= 8
    for path in runs:
        stored = json.loads(path.read_text())
        record = RunRecord.from_json(stored)
        assert record.to_json() == stored and list(record.to_json()) == list(stored), path.name
        assert record.key == path.stem and record.model_card["kind"] == "chat template, untrained"


def test_first_edition_runs_without_the_newer_fields_still_load_and_render(tmp_path):
    # the first edition's runs: no replay, replay_dropped, model_card, turn_overrun or identity groups
    first = ROOT / "tests" / "fixtures" / "first_edition" / "results"
    paths = sorted((first / "runs").glob("*.json"))
    assert paths
    for path in paths:
        stored = json.loads(path.read_text())
        record = RunRecord.from_json(stored)
        assert {k: v for k, v in record.to_json().items() if k in stored} == stored, path.name  # nothing lost
        assert record.replay_dropped == [] and record.model_card == {}
    html = site(render.render(first, tmp_path / "report"))
    assert "not recorded (runs stored before records had a model card)" in html
    assert "Dotted line: the epoch with the lowest validation loss" in html and "Confound." in html
    assert ("The study's target, retention &ge; 0.9 at held-out recall &ge; 0.9 (learn the facts and keep what the "
            "model knew; arm means): reached by <b>0</b> of 8 "
            "trained arms.\nClosest (the smallest shortfall of the worse of the two): no_val_selection / overfit / best_by_validation, recall 0.99 [0.68, 1.00], "
            "retention 0.38 [0.24, 0.55].") in html


def test_the_selection_ablation_says_per_seed_whether_validation_loss_turned_up(tmp_path):
    from core.analysis.verdicts import validation_turns
    from core.report.data import load_results

    first = tmp_path / "results"
    shutil.copytree(ROOT / "tests" / "fixtures" / "first_edition" / "results", first)
    rows, _, verdicts, runs = load_results(first)
    verdicts["no_val_selection"].validation = validation_turns(
        [r for r in rows if r["ablation"] == "no_val_selection"], runs)
    (first / "verdicts.json").write_text(json.dumps({k: v.to_json() for k, v in verdicts.items()}))
    render.render(first, tmp_path / "report")
    page = (tmp_path / "report" / "no_val_selection.html").read_text()
    turns = verdicts["no_val_selection"].validation["overfit"]
    up = sum(t["turned_up"] for t in turns)
    assert f"Validation loss turned up (its minimum before the last epoch) in <b>{up} of {len(turns)}</b> seeds" in page
    assert all(f"seed {t['seed']} lowest at epoch {t['best_epoch']} of {t['last_epoch']}" in page for t in turns)
    assert "Validation loss turned up" not in (tmp_path / "report" / "no_masking.html").read_text()


def _chrome(tmp: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp}", "--window-size=1400,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _open(driver, page: Path) -> None:
    driver.get(page.as_uri())
    deadline = time.time() + 20
    while time.time() < deadline and not driver.execute_script(
            "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"):
        time.sleep(0.1)


# elements sticking out to the right of the window, outside the containers that scroll on their own
def svg_width(path: Path) -> float:
    """The width of an SVG's view box (the units its text sizes are in)."""
    import re
    return float(re.search(r'viewBox="[\d.]+ [\d.]+ ([\d.]+) [\d.]+"', path.read_text()).group(1))


def forest_text_sizes(path: Path) -> list[float]:
    """The font size of every text in an SVG that keeps its text as text (matplotlib's svg.fonttype none)."""
    import re
    sizes = [float(s) for s in re.findall(r"font[^;\"]*?(\d+(?:\.\d+)?)px", path.read_text())]
    assert sizes, "no text in the SVG"
    return sizes


SCROLL_CUE = """
return Array.from(document.querySelectorAll('.scroll'))
  .filter(e => e.scrollWidth > e.clientWidth + 1 && !getComputedStyle(e).backgroundImage.includes('gradient'))
  .map(e => e.className + ': ' + (e.textContent || '').trim().slice(0, 40));
"""

OVERFLOW = """
const limit = window.innerWidth + 1;
return Array.from(document.body.querySelectorAll('*'))
  .filter(e => !e.closest('.scroll') && e.getClientRects().length && e.getBoundingClientRect().right > limit)
  .map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').trim().slice(0, 40));
"""


def test_pages_load_in_headless_chromium_at_1400_and_400_px(three_seeds, tmp_path):
    absent = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if absent:
        reason = f"{', '.join(absent)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By

    index = render.render(three_seeds, tmp_path / "report")
    pages = sorted(index.parent.glob("*.html"))
    ablation = index.parent / "debate_augmentation.html"
    driver = _chrome(Path(tempfile.mkdtemp(dir=tmp_path)))
    try:
        for width in (1400, 400):
            driver.set_window_size(width, 900)
            for page in pages:
                _open(driver, page)
                images = driver.execute_script(
                    "return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
                assert [src for src, w in images if not w] == [], page.name
                inner, scroll = driver.execute_script(
                    "return [window.innerWidth, document.documentElement.scrollWidth]")
                assert scroll <= inner, f"{page.name} at {width} px is {scroll} px wide"
                assert driver.execute_script(OVERFLOW) == [], f"{page.name} at {width} px"
                # a box wider than the screen shows that it scrolls (its shadow cue)
                assert driver.execute_script(SCROLL_CUE) == [], f"{page.name} at {width} px"
                # and so with every folded section open
                driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
                assert driver.execute_script(
                    "return document.documentElement.scrollWidth") <= inner, f"{page.name} at {width} px, open"
                assert driver.execute_script(OVERFLOW) == [], f"{page.name} at {width} px, open"
                assert driver.execute_script(SCROLL_CUE) == [], f"{page.name} at {width} px, open"
            _open(driver, index)
            assert driver.find_element(By.ID, "findings").is_displayed()
            # the first screen is the answer: the original's steps begin inside the first viewport
            steps = driver.find_element(By.CSS_SELECTOR, "table.answer-table")
            assert driver.execute_script("return arguments[0].getBoundingClientRect().top", steps) < 900 * 0.8
            assert driver.find_elements(By.CSS_SELECTOR, "p.legend span.verdict[title]")  # the words, defined
            forest = driver.find_element(By.CSS_SELECTOR, "img[src='figures/forest.svg']")
            assert forest.is_displayed()
            smallest = min(forest_text_sizes(index.parent / "figures" / "forest.svg")) * forest.size["width"] / \
                svg_width(index.parent / "figures" / "forest.svg")
            assert smallest >= (11 if width == 1400 else 9), f"forest text {smallest:.1f} px at {width} px"
            assert len(driver.find_elements(By.CSS_SELECTOR, "#summary-table > tbody > tr")) == \
                len(plan_of(three_seeds)["ablations"])
            _screenshot(driver, width, "index")
            _open(driver, ablation)
            # an ablation page opens on its summary: the verdict sentence and the deciding comparisons' figure in
            # the first screen, every regime folded, so the page is short until a reader opens one
            summary = driver.find_element(By.CSS_SELECTOR, "#summary img[src$='--forest.svg']")
            assert summary.is_displayed()
            assert driver.execute_script("return arguments[0].getBoundingClientRect().top", summary) < 900
            assert not driver.find_element(By.CSS_SELECTOR, "img[src$='--metrics.png']").is_displayed()
            assert driver.execute_script("return document.documentElement.scrollHeight") < (
                2500 if width == 1400 else 4000)
            driver.execute_script("document.querySelectorAll('details.regime').forEach(d => d.open = true)")
            assert driver.find_element(By.CSS_SELECTOR, "img[src$='--metrics.png']").is_displayed()
            assert len(driver.find_elements(By.CSS_SELECTOR, "table.armtable span.seed a.run")) >= 3 * 2
            assert driver.find_elements(By.CSS_SELECTOR, "tr[data-set='retention']")
            assert driver.find_elements(By.CSS_SELECTOR, "tr[data-set='reverse']")
            _screenshot(driver, width, "ablation")
        # the seed selector shows one seed's answers at a time
        pick = driver.find_element(By.CSS_SELECTOR, ".seedpick")
        tabs = pick.find_elements(By.CSS_SELECTOR, ":scope > div.seedtab")
        assert [t.is_displayed() for t in tabs] == [True, False, False]
        pick.find_element(By.CSS_SELECTOR, ":scope > label:nth-of-type(2)").click()
        assert [t.is_displayed() for t in tabs] == [False, True, False]
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []
    finally:
        driver.quit()


def _screenshot(driver, width: int, name: str) -> None:
    """The whole page, into the temp folder (not the project): hiahia-report-<name>-<width>.png, to look at."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(height + 120, 8000))
    driver.save_screenshot(str(Path(tempfile.gettempdir()) / f"hiahia-report-{name}-{width}.png"))
    driver.set_window_size(width, 900)
