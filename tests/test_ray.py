"""Scale-out on Ray: the executor options, and real Ray clusters in a loopback-only network namespace.

Each Ray test re-executes tests/ray_scenario.py under `unshare` (new network, PID and mount namespaces,
only `lo` up), so every Ray process binds to 127.0.0.1 and dies with the namespace at the latest."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.paths import ROOT
from core.study.cli import main, parser

NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
LOOPBACK = {"127.0.0.1"}  # IPv4-mapped IPv6 listeners count as their IPv4 address


def isolated(scenario: str, work: Path, timeout: float = 300) -> dict:
    """Run one scenario inside a fresh loopback-only namespace; the facts it observed."""
    pytest.importorskip("ray", reason='Ray is the optional extra: pip install -e ".[ray]"')
    if os.geteuid() != 0:
        pytest.skip("needs root to create a loopback-only network namespace (unshare --net)")
    probe = subprocess.run([*NAMESPACE, "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a loopback-only network namespace: {probe.stderr.strip()}")
    script = f"ip link set lo up && {sys.executable} tests/ray_scenario.py {scenario} {work}; exit $?"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([*NAMESPACE, "bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return json.loads((work / "facts.json").read_text())


# ---- options, without Ray ------------------------------------------------------------------------

def test_help_documents_the_executor_options_and_local_stays_the_default():
    text = parser().format_help()
    for option in ("--executor {local,ray}", "--jobs N", "--address ADDR", "--gpus-per-run F", "--cpus-per-run N"):
        assert option in text
    args = parser().parse_args([])
    from core.study.executors import LocalExecutor, from_args

    assert isinstance(from_args(args), LocalExecutor)


@pytest.mark.parametrize("extra, message", [
    (["--executor", "local", "--jobs", "2"], "error: --jobs: only with --executor ray"),
    (["--jobs", "2", "--device", "cuda:1"], "error: --device cuda:1 with --executor ray: use cpu, cuda or auto"),
    (["--jobs", "2", "--address", "auto"], "error: --jobs starts a local Ray instance and --address joins a cluster"),
    (["--jobs", "0"], "error: --jobs must be >= 1"),
    (["--executor", "ray", "--device", "cuda", "--gpus-per-run", "0"], "error: --device cuda with --executor ray "
                                                                         "needs --gpus-per-run > 0"),
])
def test_bad_executor_options_are_one_line_before_anything_is_written(tmp_path, error_line, extra, message):
    results = tmp_path / "results"
    assert main(["--only", "debate_augmentation", "--seeds", "1", "--results", str(results), "--set",
                 "model=tiny-qwen2", "--quiet", "--no-report", *extra]) == 2
    assert error_line().startswith(message)
    assert not results.exists()


def test_executor_ray_without_ray_installed_is_one_line_naming_the_extra(tmp_path):
    hide_ray = "import sys; sys.modules['ray'] = None; from core.study.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", hide_ray, "--only", "debate_augmentation", "--seeds", "1",
                           "--results", str(tmp_path / "r"), "--executor", "ray", "--no-report"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ['error: --executor ray needs Ray, an optional extra: '
                                                'pip install -e ".[ray]"']
    assert not (tmp_path / "r").exists()


def test_workers_check_the_code_version_and_the_data_but_not_caches(tmp_path):
    pytest.importorskip("ray")
    import shutil

    from core.run.version import code_version
    from core.study.ray_executor import SHIPPED, shipped_versions, stage_working_dir

    stage = stage_working_dir(ROOT)
    try:
        assert sorted(p.name for p in stage.iterdir()) == sorted(SHIPPED)
        assert shipped_versions(stage) == shipped_versions(ROOT) and shipped_versions(ROOT)["code"] == code_version()
        (stage / "core" / "run" / "__pycache__").mkdir(exist_ok=True)
        (stage / "core" / "run" / "__pycache__" / "x.pyc").write_bytes(b"cache")
        (stage / "data" / ".tmp-1_host_x.json").write_text("{")
        assert shipped_versions(stage) == shipped_versions(ROOT)
        with open(stage / "data" / "hiahia.yaml", "a") as f:
            f.write("# changed\n")
        changed = shipped_versions(stage)
        assert changed["data"] != shipped_versions(ROOT)["data"] and changed["code"] == code_version()
        with open(stage / "core" / "run" / "train.py", "a") as f:
            f.write("# changed\n")
        assert shipped_versions(stage)["code"] != code_version()
    finally:
        shutil.rmtree(stage)


# ---- real Ray, inside a loopback-only namespace ----------------------------------------------------

def test_two_node_cluster_on_loopback_stores_the_same_metrics_per_key_as_the_local_executor(tmp_path):
    facts = isolated("two_node", tmp_path)
    assert set(facts["listening"]) <= LOOPBACK, facts["listening"]
    assert facts["local_rc"] == 0 and facts["ray_rc"] == 0, facts["ray_log"]
    assert sorted(facts["ray"]) == sorted(facts["local"]) == facts["plan_keys"]
    for key, local in facts["local"].items():
        remote = facts["ray"][key]
        assert remote["status"] == local["status"] == "ok"
        assert remote["metrics"] == local["metrics"], key
        assert [h["loss"] for h in remote["history"]] == pytest.approx([h["loss"] for h in local["history"]])
        assert remote["environment"]["executor"] == "ray"
    # both nodes trained, and the baseline shared by the two ablations was trained once
    assert len({r["environment"]["ray_node"] for r in facts["ray"].values()}) == 2
    assert sorted(facts["trained"]) == facts["plan_keys"]
    assert facts["leftovers"] == []
    # workers given another copy of the project refuse to run: one line, exit 2, nothing stored
    assert facts["mismatch_rc"] == 2
    last = facts["mismatch_stderr"].strip().splitlines()[-1]
    assert last.startswith("error: refused: the worker on ") and "has a different data/ than the driver" in last
    assert facts["mismatch_stored"] == []


def test_a_worker_killed_mid_run_is_retried_then_stored_as_failed_and_the_driver_finishes(tmp_path):
    facts = isolated("kill_worker", tmp_path)
    assert facts["tokens_left"] == 0  # two workers killed themselves mid-training: the first training's two tries
    assert facts["rc"] == 3, facts["log"]  # finished; one run stored as failed
    first, second = facts["stored_order"][1:]
    assert facts["status"] == {first: "failed", second: "ok"}, facts["log"]
    assert "WorkerCrashedError" in facts["errors"][first], facts["errors"]
    assert "tried 2 times" in facts["errors"][first]
    assert facts["stored"] == 3 and facts["leftovers"] == [] and facts["temporary"] == []


def test_a_killed_driver_leaves_whole_files_and_its_restart_reuses_finished_runs(tmp_path):
    facts = isolated("kill_driver", tmp_path)
    assert facts["first_rc"] == -9, facts["first_log"]
    assert set(facts["listening"]) <= LOOPBACK, facts["listening"]  # --jobs: loopback only
    assert facts["after_kill"]["whole"] and len(facts["after_kill"]["stored"]) == 1  # the untrained reference
    assert facts["trainings_left_running"] == 0
    assert facts["second_rc"] == 0, facts["second_log"]
    assert all(facts["reused"].values())
    assert "3 configs planned, 1 cached" in facts["second_log"]
    assert facts["status"] == ["ok", "ok", "ok"]
    assert facts["threads"] == [max(1, facts["cores"] // 2)]  # --jobs 2: cores // 2 torch threads each
    assert facts["leftovers"] == [] and facts["temporary"] == []
