"""tools/study_status.py: a study is publishable only when every planned run is stored, ok, and of this code and data."""
import json
import subprocess
import sys
from pathlib import Path

from core.paths import ROOT
from core.run.knowledge import load_knowledge
from core.run.version import code_version


def write_study(folder: Path, versions: list[str | None], data: str) -> None:
    """A plan of len(versions) trained rows sharing one untrained reference; None: that run is not stored."""
    rows = [{"ablation": "a", "regime": "baseline", "arm": f"arm{i}", "seed": 0, "key": f"k{i}", "untrained_key": "u",
             "config": {"epochs": 1, "lr": i}} for i in range(len(versions))]
    (folder / "runs").mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"rows": rows, "ablations": {}}))
    stored = [("u", versions[0], 0)] + [(f"k{i}", v, 1) for i, v in enumerate(versions)]
    for n, (key, version, epochs) in enumerate(stored):
        if version is not None:
            (folder / "runs" / f"{key}.json").write_text(json.dumps({
                "key": key, "status": "ok", "config": {"epochs": epochs, "lr": 1e-3 * (n + 1)}, "data_sha256": data,
                "environment": {"code_version": version},
                "timings": {"train": 3000.0 * epochs, "eval": 600.0, "total": 3000.0 * epochs + 600.0}}))


def check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/study_status.py", "--results", str(folder), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_a_complete_study_of_this_code_and_data_is_publishable_and_a_mixed_or_partial_one_is_not(tmp_path):
    here, data = code_version(), load_knowledge().sha256
    write_study(tmp_path / "complete", [here, here], data)
    done = check(tmp_path / "complete")
    assert done.returncode == 0, done.stderr
    assert "3 of 3 planned run records stored (2 trainings done, 0 left" in done.stdout

    write_study(tmp_path / "mixed", [here, "0123456789abcdef"], data)
    mixed = check(tmp_path / "mixed")
    assert mixed.returncode == 1 and "runs made by other code than this checkout's" in mixed.stderr

    write_study(tmp_path / "partial", [here, None], data)
    partial = check(tmp_path / "partial")
    assert partial.returncode == 1 and "1 planned run(s) not stored" in partial.stderr
    # time left: one training (3000 s, the median training) and one evaluation (600 s, the median evaluation)
    assert "1 left: about 1.0 h" in partial.stdout

    write_study(tmp_path / "olddata", [here, here], "7785002891605fd2")
    assert "runs made on other data" in check(tmp_path / "olddata").stderr


def test_compare_runs_finds_a_changed_answer_between_two_stores(tmp_path):
    def store(folder: Path, answer: str) -> Path:
        folder.mkdir()
        for key, a in (("same", "Paris."), ("moved", answer)):
            (folder / f"{key}.json").write_text(json.dumps({
                "status": "ok", "metrics": {"heldout_recall": 1.0}, "environment": {"code_version": folder.name},
                "samples": [{"set": "test", "id": "f", "question": "q", "answer": a}]}))
        return folder

    old, new = store(tmp_path / "old", "Tartu."), store(tmp_path / "new", "Tallinn.")
    cmd = [sys.executable, "tools/compare_runs.py", str(old), str(new)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "1 of 2 shared finished runs identical" in out.stdout
    assert "moved  DIFFERENT  metrics equal, 1 of 1 answers differ  (code old -> new)" in out.stdout


def test_compare_runs_that_compares_nothing_fails_rather_than_passing(tmp_path):
    """A determinism check with no run in both folders has shown nothing: exit 2 and one line, never exit 0."""
    empty, other = tmp_path / "empty", tmp_path / "other"
    empty.mkdir()
    other.mkdir()
    (other / "k.json").write_text(json.dumps({"status": "ok", "metrics": {}, "samples": []}))
    for new in (empty, other):
        out = subprocess.run([sys.executable, "tools/compare_runs.py", str(empty), str(new)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.strip().splitlines() == [
            f"error: no finished run is in both {empty} (0 runs) and {new} ({len(list(new.glob('*.json')))} runs): "
            f"nothing was compared. Fix: name two folders of runs of the same plan"]
    missing = subprocess.run([sys.executable, "tools/compare_runs.py", str(tmp_path / "nowhere")], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nowhere: no such folder" in missing.stderr


def _timed(key: str, timings: dict, **changes):
    """A stored ok record of the baseline config with `changes`, and these timings."""
    from core.run.config import RunConfig
    from core.run.record import RunRecord

    return RunRecord.from_json({"key": key, "status": "ok", "config": RunConfig().to_dict() | changes,
                                "timings": timings})


def test_time_left_counts_a_shared_training_once_and_an_evaluation_per_record():
    from core.run.config import RunConfig
    from core.study.plan import estimated_seconds

    base = RunConfig().to_dict()
    # one training (60 s) evaluated by three selection records (30 s each; each record's total counts the group's
    # time so far), another training (200 s) with one record, and an untrained reference (30 s)
    stored = [_timed("best", {"train": 60.0, "eval": 30.0, "total": 90.0}),
              _timed("last", {"train": 60.0, "eval": 30.0, "total": 120.0}, selection="last"),
              _timed("half", {"train": 60.0, "eval": 30.0, "total": 150.0}, interpolate=0.5),
              _timed("wd", {"train": 190.0, "eval": 30.0, "total": 230.0}, weight_decay=0.1),
              _timed("ref", {"train": 0.0, "eval": 30.0, "total": 30.0}, epochs=0)]
    # per epoch: the median over the two trainings (60 s and 200 s, including the 10 s of loading), not over the
    # four records (three of which are one training)
    per_epoch = (60.0 + 200.0) / 2 / base["epochs"]
    rows = [{"key": "a", "untrained_key": "ref", "config": base | {"lr": 5e-4}},
            {"key": "b", "untrained_key": "ref", "config": base | {"lr": 5e-4, "selection": "last"}},
            {"key": "c", "untrained_key": "ref2", "config": base | {"lr": 2e-3, "epochs": 8}},
            {"key": "d", "untrained_key": "best", "config": base | {"selection": "best_recall"}}]
    # trainings: lr 5e-4 (shared by a and b) at the per-epoch median, lr 2e-3 for 8 epochs, the stored training
    # again for d (60 s); evaluations: a, b, c, ref2, d (ref and best are stored)
    expected = per_epoch * base["epochs"] + per_epoch * 8 + 60.0 + 5 * 30.0
    assert estimated_seconds(rows, stored) == expected
    assert estimated_seconds(rows, [stored[-1]]) is None  # no trained run to time trainings by


def test_time_left_times_a_new_seed_by_its_config_s_stored_seeds_before_the_per_epoch_median():
    from core.run.config import RunConfig
    from core.study.plan import estimated_seconds

    base = RunConfig().to_dict()
    def record(key, took, **changes):  # took s of training, evaluated in 30 s
        return _timed(key, {"train": took, "eval": 30.0, "total": took + 30.0}, **changes)
    # the baseline trains in 100 s at seeds 0-2; self-replay (more examples per epoch, and answers to make first)
    # took 400 s at seed 0
    stored = [record(f"b{sd}", 100.0, seed=sd) for sd in range(3)] + [record("r0", 400.0, replay=160, seed=0)]
    rows = [{"key": "r1", "untrained_key": "b0", "config": base | {"replay": 160, "seed": 1}},
            {"key": "w1", "untrained_key": "b0", "config": base | {"weight_decay": 0.1, "seed": 1}}]
    per_epoch = 100.0 / base["epochs"]  # the median over the four trainings' times per epoch
    # replay at seed 1 as at seed 0 (not the per-epoch median's 100 s); weight decay, never stored, per epoch
    assert estimated_seconds(rows, stored) == 400.0 + per_epoch * base["epochs"] + 2 * 30.0
