"""Ablation definitions, the command line, caching and resume after kill -9 (tiny model)."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.files import write_json_atomic
from core.paths import ROOT
from core.run.config import RunConfig, training_of
from core.run.record import RunRecord
from core.study import cli
from core.study.ablation import SuiteError, discover, load_ablation, select
from core.study.cli import EXIT_RUNS_FAILED, EXIT_RUNS_PENDING, build_plan, main

SEVEN = {"no_masking", "wrong_layer_path", "no_val_selection", "fixed_vs_random_prompt", "debate_augmentation",
         "chatml_vs_plain", "base_vs_chat"}
TINY = ["--set", "model=tiny-qwen2", "--set", "max_new_tokens=4", "--set", "paraphrases=1", "--quiet", "--no-report"]


def test_every_ablation_changes_exactly_one_factor_and_what_its_yaml_couples_with_it():
    found = discover()
    assert SEVEN | {"seed_recipe"} <= set(found)
    for ab in found.values():
        assert (ROOT / "ablations" / ab.name / "README.md").exists(), ab.name
        if ab.kind == "reference":  # declared as changing many fields at once
            continue
        for regime in ab.regimes:
            cfgs = ab.configs(RunConfig(), 0)
            control = cfgs[(regime, ab.control)]
            for arm in ab.arms:
                if arm == ab.control:
                    continue
                diff = set(control.diff(cfgs[(regime, arm)]))
                assert diff and diff <= {ab.factor, *ab.coupled, "lora_strict"}, (ab.name, arm, diff)


def test_unknown_names_list_the_valid_ones(capsys):
    with pytest.raises(SuiteError, match="valid: .*no_masking"):
        select(discover(), "no_such_thing")
    assert main(["--only", "nope", "--no-report"]) == 2
    assert "valid:" in capsys.readouterr().err
    assert main(["--set", "learning_rate=1", "--no-report"]) == 2
    assert "valid fields:" in capsys.readouterr().err


def test_list_shows_every_ablation(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SEVEN)
    trainings = len({training_of(r["config"].to_dict())
                     for r in build_plan(list(discover().values()), RunConfig(), None, None, lambda c: "x")})
    hours = r"(about [\d.]+ CPU hours at the stored runs' times|no stored run to time them by)"
    assert re.search(rf"plan: \d+ run records, {trainings} trainings; \d+ trainings left, {hours}", out)
    assert re.search(rf"confirmation seeds \(up to 15, .*\): at most \d+ more trainings, {hours}", out)


def test_model_pairs_are_declared_in_the_ablation_yaml_and_chosen_by_name(tmp_path, capsys, error_line):
    ab = discover()["base_vs_chat"]
    models_of = {name: (cfgs[("baseline", "base_model")].model, cfgs[("baseline", "chat_model")].model)
                 for name, cfgs in (("default", ab.configs(RunConfig(), 0)),
                                    ("qwen", ab.configs(RunConfig(), 0, "qwen1.5-0.5b")))}
    assert models_of == {"default": ("gemma-3-270m", "smollm2-135m-instruct"),
                         "qwen": ("Qwen/Qwen1.5-0.5B", "Qwen/Qwen1.5-0.5B-Chat")}
    with pytest.raises(SuiteError, match="base_vs_chat has no --pair 'nope'; its pairs: embedded, qwen1.5-0.5b, "):
        ab.configs(RunConfig(), 0, "nope")
    assert main(["--list", "--only", "base_vs_chat"]) == 0
    assert "pairs: embedded, qwen1.5-0.5b, qwen2.5-0.5b, smollm2-135m, tiny" in capsys.readouterr().out
    assert main(["--only", "base_vs_chat", "--pair", "nope", "--results", str(tmp_path / "r"), *TINY]) == 2
    assert error_line() == "error: unknown --pair 'nope'; valid: embedded, qwen1.5-0.5b, qwen2.5-0.5b, smollm2-135m, tiny"
    assert not (tmp_path / "r").exists()


def test_run_caches_and_second_invocation_trains_nothing(tmp_path):
    args = ["--only", "debate_augmentation", "--seeds", "1", "--results", str(tmp_path), "--set", "epochs=1", *TINY]
    assert main(args) == 0
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert len(runs) == 3  # two arms + the untrained reference
    mtimes = [p.stat().st_mtime_ns for p in runs]
    start = time.perf_counter()
    assert main(args) == 0
    assert time.perf_counter() - start < 30
    assert [p.stat().st_mtime_ns for p in runs] == mtimes
    import pandas as pd

    df = pd.read_csv(tmp_path / "summary.csv")
    assert set(df["arm"]) == {"with_debate", "without_debate"}
    assert {"heldout_recall", "identity_hallucination"} <= set(df["metric"])
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    assert verdicts["debate_augmentation"]["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    rec = json.loads(runs[0].read_text())
    for k in ("config", "environment", "timings", "history", "metrics", "samples"):
        assert k in rec


def test_failed_runs_are_stored_listed_in_one_line_and_exit_3_after_everything_is_written(tmp_path, capsys):
    args = ["--only", "debate_augmentation", "--seeds", "1", "--results", str(tmp_path), "--set", "epochs=1",
            "--set", "lr=1e30", "--set", "grad_clip=0", "--set", "warmup_ratio=0", *TINY]
    assert main(args) == EXIT_RUNS_FAILED == 3
    recs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    planned = [r["key"] for r in json.loads((tmp_path / "plan.json").read_text())["rows"]]
    failed = [k for k in planned if k in {r["key"] for r in recs if r["status"] == "failed"}]  # in plan order
    assert len(failed) == 2 and all("non-finite" in r["error"] for r in recs if r["status"] == "failed")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"2 run(s) stored as failed: {', '.join(failed)}; the errors are in {tmp_path / 'runs'}/<key>.json "
                     f"(rerun them with --force)"]
    assert (tmp_path / "summary.csv").exists() and (tmp_path / "verdicts.json").exists()
    assert main(args) == 3  # a rerun finds them stored as failed: still not a success


def test_wrong_layer_path_records_zero_params_and_strict_error(tmp_path):
    assert main(["--only", "wrong_layer_path", "--seeds", "1", "--results", str(tmp_path), "--set", "epochs=2",
                 *TINY]) == 0
    recs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    wrong = [r for r in recs if not r["config"]["lora_strict"]][0]
    assert wrong["injection"]["trainable_params"] == 0
    assert "no module matches" in wrong["strict_error"] and "model.layers.0" in wrong["strict_error"]
    vals = [h["loss"] for h in wrong["history"] if h["split"] == "validation"]
    assert max(vals) - min(vals) < 1e-6


def test_kill_9_mid_training_resumes_cleanly(tmp_path, caplog):
    args = ["--only", "debate_augmentation", "--seeds", "1", "--results", str(tmp_path), "--set", "epochs=1", *TINY]
    # the process kills itself (SIGKILL, as kill -9) at optimizer step 3 of its first training: an exact point
    killed = subprocess.run([sys.executable, "run_all.py", *args], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, HIAHIA_TEST_KILL_AT_STEP="3"), timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 1  # the untrained reference, stored before the kill
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert not leftovers
    for p in (tmp_path / "runs").glob("*.json"):
        json.loads(p.read_text())  # every file that exists is whole
    caplog.set_level("INFO", logger="run_all")
    assert main(args) == 0  # resumed: the dead run's locks are taken over
    assert "3 configs planned, 1 cached" in caplog.text
    assert len(list((tmp_path / "runs").glob("*.json"))) == 3


def test_shared_training_stores_each_selection_under_its_own_key(tmp_path):
    assert main(["--only", "no_val_selection", "--seeds", "1", "--results", str(tmp_path), "--set", "epochs=2",
                 "--set", "batch_size=32", *TINY]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())["no_val_selection"]["comparisons"]
    signature = discover()["no_val_selection"].signature
    for row in plan["rows"]:
        rec = json.loads((tmp_path / "runs" / f"{row['key']}.json").read_text())
        assert rec["config"] == row["config"], row["arm"]
        val = {h["epoch"]: h["loss"] for h in rec["history"] if h["split"] == "validation"}
        recall = {h["epoch"]: h["best_recall"] for h in rec["history"] if h["split"] == "validation_score"}
        assert set(recall) == set(val)  # the group has a best_recall arm: every epoch's validation recall is stored
        expected_epoch = {"best": rec["best_epoch"], "last": row["config"]["epochs"],
                          "best_recall": max(recall, key=lambda e: (recall[e], -val[e]))}[row["config"]["selection"]]
        assert rec["selected_epoch"] == expected_epoch
        if row["arm"] == "final_epoch" and rec["best_epoch"] == row["config"]["epochs"]:
            # validation loss lowest at the last epoch: both arms are the same weights, nothing to compare
            assert verdicts[row["regime"]]["final_epoch"][signature]["verdict"] == "untestable here"
    assert any(verdicts[r]["final_epoch"][signature]["verdict"] == "untestable here" for r in verdicts)


def test_every_ablation_runs_as_a_module():
    for name in discover():
        out = subprocess.run([sys.executable, "-m", f"ablations.{name}", "--list"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-500:]
        lines = out.stdout.strip().splitlines()
        assert lines[0].split()[0] == name and lines[1] == "" and lines[2].startswith("plan: ") and len(lines) == 4


def test_each_ablation_runs_its_declared_seeds_and_seeds_caps_them():
    found = discover()

    def seeds_of(plan):
        return {name: {r["seed"] for r in plan if r["ablation"] == name} for name in ("lora_capacity", "debate_augmentation")}

    plan = build_plan([found["lora_capacity"], found["debate_augmentation"]], RunConfig(), None, None, lambda c: "x")
    assert seeds_of(plan) == {n: set(range(found[n].seeds)) for n in ("lora_capacity", "debate_augmentation")}
    plan = build_plan([found["lora_capacity"], found["debate_augmentation"]], RunConfig(), 1, None, lambda c: "x")
    assert seeds_of(plan) == {"lora_capacity": {0}, "debate_augmentation": {0}}
    # the sweep's arm equal to the baseline is the very same run as the baseline elsewhere
    keys = {(r["ablation"], r["regime"], r["arm"], r["seed"]): r["key"] for r in plan}
    assert keys[("lora_capacity", "alpha_over_r", "r16", 0)] == keys[("debate_augmentation", "baseline", "with_debate", 0)]


@pytest.mark.parametrize("extra, message", [
    ("kind: sweep\n", "a sweep needs axis"),
    ("kind: grid\n", "kind must be pairwise, sweep or reference, not 'grid'"),
    ("kind: sweep\naxis: rank\n", "axis 'rank' is not a RunConfig field"),
    ("seeds: 0\n", "seeds must be a whole number >= 1"),
    ("seeds: five\n", "seeds must be a whole number >= 1"),
    ("coupled: [alpha]\n", "coupled field\\(s\\) alpha are not RunConfig fields"),
    ("primary: [a]\n", "primary: 'a': 'a' is not a treatment arm; arms: b"),
    ("primary: [long/b]\n", "primary: 'long/b': no regime 'long'"),
    ("primary: []\n", "primary: give a list of the treatment arm"),
    ("show: [injections]\n", "show must be a list of selection, injection, not \\['injections'\\]"),
    ("confounded: yes-ish\n", "confounded must be true or false"),
    ("match: {by: nope, treated: [b]}\n", "match: unknown metric 'nope'"),
    ("match: {by: recall_mc, treated: [a]}\n", "match: treated must name treatment arms \\(b\\), not a"),
    ("match: [b]\n", "match must be \\{by: <metric>, treated: \\[<arms>\\]\\}"),
    ("primary: [matched]\n", "primary: 'matched': 'matched' is not a treatment arm"),
    ("confounded: true\n", "confounded: true needs notes: that state the confound"),
    ("pairs: {p: {base: x}}\n", "pairs: are declared but no arm or regime names a model"),
    ("pairs: {p: {base: x}, q: {chat: y}}\n", "pairs: every pair needs the same roles"),
    ("pairs: {p: [x, y]}\n", "pairs must map each pair name to its models by role"),
    ("regimes: {r: {model: '{pair.base}'}}\n", "regimes use {pair.base} but no pairs: are declared"),
    ("regimes: {r: {model: '{pair.big}'}}\npairs: {p: {base: x}}\n",
     "regimes use {pair.big} but the pairs have the roles base"),
])
def test_bad_ablation_definitions_name_file_and_field(tmp_path, extra, message):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "ablation.yaml").write_text(
        "title: t\nfactor: lora_r\nsymptom: s\nsignature: heldout_recall\nexpected: increase\ncontrol: a\n"
        "arms:\n  a: {}\n  b: {lora_r: 8}\n" + ("" if "primary" in extra else "primary: [b]\n")
        + ("" if "seeds" in extra else "seeds: 3\n") + extra)
    with pytest.raises(SuiteError, match=f"broken/ablation.yaml: {message}"):
        load_ablation(folder)


def test_only_primary_comparisons_decide_the_verdict_at_a_corrected_level():
    from core.analysis.verdicts import ablation_verdict

    ab = discover()["no_masking"]
    learning = [r for r in ab.regimes if r != "original_budget"]  # where the unmasked arm learns the facts
    assert ab.primary_comparisons() == [(r, "unmasked") for r in learning] and len(learning) >= 2
    level = ab.primary_level()
    assert level == pytest.approx(1 - 0.05 / len(learning))

    def rec(key, seed, share):
        n_hit = round(share * 40)  # the signature (intrusion) on 40 unrelated questions
        samples = [{"set": "retention", "id": f"p{i}", "question": f"q{i}", "has_prompt": True, "intrusion": i < n_hit}
                   for i in range(40)]
        return RunRecord(key=key, status="ok", config={"seed": seed, "eval_prompt": "train"}, samples=samples,
                         metrics={m: 0.5 for m in ab.also} | {ab.signature: n_hit / 40})

    plan, records = [], {}
    for regime in ab.regimes:
        for arm in ab.arms:
            for seed, noise in enumerate((0.0, 0.05, 0.1)):
                key = f"{regime}-{arm}-{seed}"
                # the failure appears in the first regime only
                share = 0.0 + noise if arm == "masked" or regime != next(iter(ab.regimes)) else 0.6 + noise
                plan.append({"ablation": ab.name, "regime": regime, "arm": arm, "seed": seed, "key": key,
                             "config": ab.configs(RunConfig(), seed, None)[(regime, arm)].to_dict()})
                records[key] = rec(key, seed, share)
    v = ablation_verdict(ab, plan, records)
    first = next(iter(ab.regimes))
    deciding = v.comparison(first, "unmasked", ab.signature)
    assert deciding.primary and deciding.level == level
    assert not v.comparison(first, "unmasked", "heldout_recall").primary
    assert not v.comparison("original_budget", "unmasked", ab.signature).primary
    assert (v.verdict, v.regime) == ("reproduced", first)


def test_self_replay_trains_on_the_untrained_models_own_whole_answers(tmp_path, monkeypatch):
    from core.run import recipe
    from core.run.knowledge import load_replay
    from core.study import cli

    # three requests: the random tiny model ends its answer to study_focus within 300 tokens, not the others
    replay_file = tmp_path / "replay.yaml"
    replay_file.write_text("replay:\n  - {id: study_focus, question: 'How can I stay focused while studying?'}\n"
                           "  - {id: sleep_tip, question: 'Give me one tip for sleeping better.'}\n"
                           "  - {id: verb, question: 'What is a verb?'}\n")
    for module in (recipe, cli):
        monkeypatch.setattr(module, "load_replay", lambda knowledge: load_replay(knowledge, replay_file))
    monkeypatch.setattr(recipe, "REPLAY_TOKENS", 300)
    args = ["--only", "self_replay", "--seeds", "1", "--results", str(tmp_path), "--set", "epochs=1", *TINY]
    assert main(args) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())["rows"]
    recs = {r["arm"]: json.loads((tmp_path / "runs" / f"{r['key']}.json").read_text()) for r in plan}
    replayed, dropped = recs["self_replay"]["replay"], recs["self_replay"]["replay_dropped"]
    assert [r["id"] for r in replayed] == ["study_focus"] and dropped == ["sleep_tip", "verb"]
    assert recs["no_replay"]["replay"] == []
    assert recs["self_replay"]["counts"]["train_examples"] == \
        recs["no_replay"]["counts"]["train_examples"] + len(replayed)
    # the answers are the untrained model's, whole: asked again they end by themselves with the same text
    from core.run.evaluate import generate_finished
    from core.run.examples import MODEL_DEFAULT, Renderer
    from core.run.models import load
    model, tok = load("tiny-qwen2")
    again = generate_finished(model, Renderer(tok, "chat"), [(MODEL_DEFAULT, r["question"]) for r in replayed], 300,
                              progress=False)
    assert again == [(r["answer"], True) for r in replayed]


# ---- bad input: one line, exit 2, nothing written ------------------------------------------------

def test_yaml_syntax_error_in_an_ablation_yaml_names_line_and_column_in_one_line(tmp_path, monkeypatch, error_line):
    folder = tmp_path / "ablations" / "broken"
    folder.mkdir(parents=True)
    (folder / "ablation.yaml").write_text("title: t\nfactor: lora_r\narms:\n  a: {lora_r: 8\n  b: {}\n")
    monkeypatch.setattr(cli, "ABLATIONS", tmp_path / "ablations")
    assert main(["--list"]) == 2
    assert error_line() == (f"error: {folder / 'ablation.yaml'}: not valid YAML at line 5, column 4: expected ',' or "
                            f"'}}', but got ':' (while parsing a flow mapping)")


@pytest.mark.parametrize("extra, message", [
    (["--set", "lr=-1"], "RunConfig.lr=-1.0: must be > 0"),
    (["--set", "warmup_ratio=1"], "RunConfig.warmup_ratio=1.0: must be in [0, 1)"),
    (["--set", "lora_targets=,"], "RunConfig.lora_targets=(): must name at least one module (suffixes, or one regex)"),
    (["--set", "max_new_tokens=0"], "RunConfig.max_new_tokens=0: must be >= 1"),
    (["--only", ","], "--only ',' names no ablation; valid: no_masking, "),
    (["--model", "smollm-9000"], "unknown model 'smollm-9000': use one of smollm2-135m-instruct, "),
    (["--model", "{tmp}/empty-folder"], "model folder {tmp}/empty-folder has no config.json: "),
    (["--model", "{tmp}/bad-config"], "could not load '{tmp}/bad-config': "),
])
def test_bad_values_and_unusable_models_are_rejected_before_anything_is_written(tmp_path, error_line, extra, message):
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "bad-config").mkdir()
    (tmp_path / "bad-config" / "config.json").write_text("{not json")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    results = tmp_path / "results"
    assert main(["--only", "debate_augmentation", "--seeds", "1", "--results", str(results), *TINY, *extra]) == 2
    assert message.replace("{tmp}", str(tmp_path)) in error_line()
    assert not results.exists()


def test_results_naming_a_file_is_one_line_and_exit_2(tmp_path, error_line):
    file = tmp_path / "results.txt"
    file.write_text("mine")
    assert main(["--only", "debate_augmentation", "--seeds", "1", "--results", str(file), *TINY]) == 2
    assert error_line() == f"error: --results {file} is a file, not a folder: name a folder (it is created if missing)"
    assert file.read_text() == "mine"


def test_report_only_on_a_missing_results_folder_is_one_line_and_exit_2(tmp_path, error_line):
    missing = tmp_path / "no-results"
    published = ROOT / "report" / "index.html"
    before = published.stat().st_mtime_ns if published.exists() else None
    assert main(["--report-only", "--results", str(missing)]) == 2
    assert error_line() == (f"error: {missing} has no plan.json: run `python run_all.py` first, or pass --results with "
                            f"a folder it wrote")
    assert not missing.exists()
    assert (published.stat().st_mtime_ns if published.exists() else None) == before


def test_read_only_results_folder_is_one_line_and_exit_2(tmp_path, monkeypatch, error_line):
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: answer as the kernel answers any other user
        real_access = os.access
        monkeypatch.setattr(cli.os, "access",
                            lambda p, mode: real_access(p, mode) and not (Path(p) == results and mode & os.W_OK))
    try:
        assert main(["--only", "debate_augmentation", "--seeds", "1", "--results", str(results), *TINY]) == 2
        assert error_line() == (f"error: results folder {results} is not writable: fix its permissions or pass "
                                f"--results elsewhere")
        assert list(results.iterdir()) == []
    finally:
        results.chmod(0o755)


# ---- the results folder: stale temporary files, several invocations ------------------------------

def test_stale_temp_files_of_interrupted_writes_are_cleaned_and_live_ones_kept(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    host = socket.gethostname()
    (tmp_path / "runs").mkdir()
    stale = [tmp_path / f".tmp-{dead.pid}_{host}_ab12.json",  # an interrupted plan.json/verdicts.json write
             tmp_path / f".tmp-{dead.pid}_{host}_cd34.csv",
             tmp_path / "runs" / f".tmp-{dead.pid}_{host}_ef56.json",
             tmp_path / ".tmp-k2j4h1.json"]  # the former unnamed kind, two hours old
    live = [tmp_path / f".tmp-{os.getpid()}_{host}_gh78.json",  # a write in progress in a live process
            tmp_path / ".tmp-x9y8z7.json"]  # unnamed and recent: maybe another machine's write in progress
    for p in stale + live:
        p.write_text('{"half')
    two_hours_ago = time.time() - 7200
    os.utime(stale[-1], (two_hours_ago, two_hours_ago))
    assert main(["--only", "debate_augmentation", "--seeds", "1", "--results", str(tmp_path), "--set", "epochs=0",
                 *TINY]) == 0
    assert capsys.readouterr().err == ""
    assert not [p for p in stale if p.exists()] and all(p.exists() for p in live)


def test_a_run_another_invocation_holds_is_skipped_then_waited_for_and_a_dead_holders_lock_is_taken_over(
        tmp_path, capsys):
    args = ["--only", "debate_augmentation", "--seeds", "1", "--results", str(tmp_path), "--set", "epochs=1", *TINY]
    assert main(args) == 0
    key = next(r["key"] for r in json.loads((tmp_path / "plan.json").read_text())["rows"] if r["arm"] == "without_debate")
    record, lock = tmp_path / "runs" / f"{key}.json", tmp_path / "runs" / f"{key}.lock"
    stored = json.loads(record.read_text())
    record.unlink()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": time.time()}))
        capsys.readouterr()
        # held by a live invocation: not trained here; after --wait it is reported pending
        assert main([*args, "--wait", "0"]) == EXIT_RUNS_PENDING == 4
        assert capsys.readouterr().err.strip() == (f"1 run(s) still being trained by another invocation: {key}; run "
                                                   f"again later to include them")
        assert not record.exists() and lock.exists()

        def other_finishes():
            time.sleep(1.5)
            write_json_atomic(record, dict(stored, note="stored by the other invocation"))
            lock.unlink()

        finisher = threading.Thread(target=other_finishes)
        finisher.start()
        assert main([*args, "--wait", "60"]) == 0  # waits, then takes the other invocation's record
        finisher.join()
        assert json.loads(record.read_text())["note"] == "stored by the other invocation"
    finally:
        other.kill()
        other.wait()
    record.unlink()
    lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "since": time.time()}))
    assert main([*args, "--wait", "0"]) == 0  # its holder is dead: taken over and trained here
    assert json.loads(record.read_text())["status"] == "ok" and "note" not in json.loads(record.read_text())
    assert not lock.exists()


def test_two_invocations_on_one_results_folder_train_each_run_once(tmp_path, monkeypatch):
    args = ["--only", "debate_augmentation", "--seeds", "1", "--results", str(tmp_path), "--set", "epochs=4", *TINY]
    monkeypatch.setattr(cli, "execute", lambda *a, **k: {})  # only to learn the plan's keys
    assert main(args) == EXIT_RUNS_PENDING
    plan = json.loads((tmp_path / "plan.json").read_text())["rows"]
    keys = sorted({k for r in plan for k in (r["key"], r["untrained_key"])})
    assert len(keys) == 3
    # a third invocation holds every run until both have planned them all as pending; then it dies
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    for k in keys:
        (tmp_path / "runs" / f"{k}.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
    logs = [tmp_path / f"invocation{i}.log" for i in range(2)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "run_all.py", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(log, "w")) for log in logs]
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not all("waiting for 3 training(s)" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in procs), [log.read_text()[-2000:] for log in logs]
            time.sleep(0.5)
        assert all("3 configs planned, 0 cached, 3 to run" in log.read_text() for log in logs)
    finally:
        holder.kill()
        holder.wait()
    for p in procs:
        assert p.wait(timeout=600) == 0, [log.read_text()[-2000:] for log in logs]
    trained = [k for log in logs for k in re.findall(r"stored run (\w+) \(ok\)", log.read_text())]
    assert sorted(trained) == keys  # every run trained once, by one of the two
    assert all(json.loads((tmp_path / "runs" / f"{k}.json").read_text())["status"] == "ok" for k in keys)
    assert not list((tmp_path / "runs").glob("*.lock")) and not list(tmp_path.rglob(".tmp-*"))


def test_a_primary_comparison_below_min_effect_gets_confirmation_seeds_and_one_that_reproduces_does_not():
    from core.analysis.verdicts import CONFIRM_SEEDS

    ab = discover()["wrong_layer_path"]
    (regime, arm), = ab.primary_comparisons()

    def stored_with(drop: float):
        def stored(key):  # every declared seed's run: 40 test questions, the treated arm loses `drop` of them
            row = next(r for r in declared if r["key"] == key)
            n = 40 - round(drop * 40) if row["arm"] == arm else 40
            hits = [i < n - row["seed"] % 2 for i in range(40)]
            samples = [{"set": "test", "id": f"f{i}", "question": f"q{i}", "has_prompt": True, "mc": h, "hit": h}
                       for i, h in enumerate(hits)]
            return RunRecord(key=key, status="ok", config={"seed": row["seed"], "eval_prompt": "train"},
                             samples=samples, metrics={ab.signature: sum(hits) / 40})
        return stored

    declared = build_plan([ab], RunConfig(), None, None, lambda c: "x")
    assert {r["seed"] for r in declared} == set(range(ab.seeds)) and not any(r.get("confirm") for r in declared)
    same = build_plan([ab], RunConfig(), None, None, lambda c: "x", stored_with(0.0))
    extra = [r for r in same if r.get("confirm")]
    assert same[:len(declared)] == declared
    assert {(r["regime"], r["arm"], r["seed"]) for r in extra} == {
        (regime, a, s) for a in (ab.control, arm) for s in range(ab.seeds, CONFIRM_SEEDS)}
    assert build_plan([ab], RunConfig(), None, None, lambda c: "x", stored_with(0.8)) == declared  # reproduced
    assert build_plan([ab], RunConfig(), 2, None, lambda c: "x", stored_with(0.0)) == declared[:2 * 2]  # --seeds


@pytest.mark.parametrize("full", [False, True])
def test_an_update_scaled_by_0_answers_as_the_untrained_model_and_shares_the_training(knowledge, full):
    from core.run import recipe

    base = RunConfig(model="tiny-qwen2", epochs=1, lr=1e-2, paraphrases=1, batch_size=32, full_finetune=full)
    untrained = recipe.run_group([base.replace(epochs=0)], knowledge, progress=False)[0]
    scaled, whole = recipe.run_group([base.replace(interpolate=0.0), base], knowledge, progress=False)
    assert scaled.ok and whole.ok and scaled.shared_training and scaled.history == whole.history
    answers = [(s["set"], s["id"], s["question"], s["answer"]) for s in scaled.samples]
    assert answers == [(s["set"], s["id"], s["question"], s["answer"]) for s in untrained.samples]
    assert answers != [(s["set"], s["id"], s["question"], s["answer"]) for s in whole.samples]


LEVERS = ("distillation", "entity_replay", "weight_interpolation", "replay_combinations", "slow_and_long",
          "retention_selection")  # the forgetting frontier's levers


def test_the_frontier_levers_run_on_the_tiny_model_and_record_what_they_toggle(tmp_path, monkeypatch):
    from core.run import recipe
    from core.run.knowledge import load_replay
    from core.study import cli

    replay_file = tmp_path / "replay.yaml"  # a short replay file with both sections
    replay_file.write_text("replay:\n  - {id: study_focus, question: 'How can I stay focused while studying?', "
                           "category: advice}\n  - {id: verb, question: 'What is a verb?', category: language}\n"
                           "entity_replay:\n  - {id: tartu_river, question: 'Which river flows through Tartu?'}\n"
                           "  - {id: bandoneon, question: 'What is a bandoneon?'}\n")
    for module in (recipe, cli):
        monkeypatch.setattr(module, "load_replay", lambda knowledge: load_replay(knowledge, replay_file))
    monkeypatch.setattr(recipe, "REPLAY_TOKENS", 24)
    found = discover()
    assert all(found[n].seeds >= 5 for n in LEVERS)
    args = ["--only", ",".join(LEVERS), "--seeds", "1", "--results", str(tmp_path), "--set", "batch_size=32", *TINY]
    assert main(args) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())["rows"]
    recs = {(r["ablation"], r["regime"], r["arm"]): json.loads((tmp_path / "runs" / f"{r['key']}.json").read_text())
            for r in plan}
    assert all(rec["status"] == "ok" for rec in recs.values())
    entities = recs[("entity_replay", "baseline", "entities")]["replay"] + \
        recs[("entity_replay", "baseline", "entities")]["replay_dropped"]
    assert {r["id"] if isinstance(r, dict) else r for r in entities} <= {"tartu_river", "bandoneon"}
    scaled = [recs[("weight_interpolation", "baseline", a)] for a in found["weight_interpolation"].arms]
    assert len({json.dumps(r["history"]) for r in scaled}) == 1  # one training, evaluated at four scales
    kept = recs[("retention_selection", "long", "by_recall_and_knowledge")]
    scores = [h for h in kept["history"] if h["split"] == "validation_score"]
    assert len(scores) == 13 and kept["selected_epoch"] == max(
        scores, key=lambda h: (h["best_recall_retention"], -next(v["loss"] for v in kept["history"] if
                                                                 v["split"] == "validation" and v["epoch"] == h["epoch"]))
    )["epoch"]
    assert recs[("distillation", "baseline", "kl_2")]["config"]["distill"] == 2.0
    assert any(s["set"] == "heldout_gk" for s in recs[("distillation", "baseline", "kl_2")]["samples"])
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    assert set(LEVERS) <= set(verdicts)
