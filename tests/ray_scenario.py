"""Ray scenarios for tests/test_ray.py, run only inside a loopback-only network namespace that the test made.

python tests/ray_scenario.py SCENARIO WORKDIR: runs the scenario against real Ray processes on 127.0.0.1,
writes what it observed to WORKDIR/facts.json (the test asserts on it), and stops every Ray process it
started. It refuses to run where any network interface other than loopback exists.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "model=tiny-qwen2", "--set", "max_new_tokens=4", "--set", "paraphrases=1", "--quiet", "--no-report"]
RAY = str(Path(sys.executable).with_name("ray")) if Path(sys.executable).with_name("ray").exists() else "ray"


def only_loopback() -> bool:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip() for line in links.splitlines() if line.strip()] == ["lo"]


def listening_addresses() -> list[str]:
    """The addresses of every listening TCP socket in this network namespace (from /proc/net/tcp, tcp6)."""
    import ipaddress

    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            raw = bytes.fromhex(local.split(":")[0])
            # the kernel prints each 32-bit word in host (little-endian) order
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(packed)
            found.add(str(address.ipv4_mapped or address) if address.version == 6 else str(address))
    return sorted(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(work: Path) -> dict:
    """Token authentication as the README asks of clusters; Ray's files under WORKDIR, not /tmp/ray."""
    tmp = Path(tempfile.mkdtemp(prefix="hhray-", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    (work / "tmp").mkdir()  # the drivers' own temporary files (the staged working_dir)
    return dict(os.environ, RAY_TMPDIR=str(tmp), TMPDIR=str(work / "tmp"), RAY_AUTH_MODE="token",
                RAY_AUTH_TOKEN=os.urandom(16).hex(),
                RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def ray_processes(title: str) -> list[int]:
    """Pids (in this namespace's own /proc) whose process title starts with `title`, e.g. ray::train_group."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(title):
                found.append(int(proc.name))
    return found


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise TimeoutError(f"no {what} within {timeout:.0f} s")


def stored(results: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))}


def leftovers(results: Path) -> list[str]:
    return sorted(p.name for p in results.rglob("*") if p.name.startswith(".tmp-") or p.suffix == ".lock")


def staged_left(work: Path) -> list[str]:
    """Working_dir copies a driver staged for Ray and did not delete."""
    return sorted(n for n in os.listdir(work / "tmp") if n.startswith("hiahia-ray-"))


def run_all(args: list[str], env: dict, log: Path, timeout: float = 240) -> int:
    with open(log, "w") as err:
        return subprocess.run([sys.executable, "run_all.py", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=err, timeout=timeout).returncode


def start_driver(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run_all.py", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"))


# ---- scenarios -------------------------------------------------------------------------------------

def two_node(work: Path, env: dict) -> dict:
    """A head and a second node (1 CPU each); the same tiny ablations with the local executor and with
    --address; then a driver whose workers get another copy of the project."""
    port = free_port()
    base = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000",
            "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *base], env=env,
                   check=True, timeout=90, capture_output=True)
    subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", *base], env=env, check=True, timeout=90,
                   capture_output=True)
    facts = {"listening": listening_addresses()}
    args = ["--only", "debate_augmentation,wrong_layer_path", "--seeds", "1", "--set", "epochs=2", *TINY]
    facts["local_rc"] = run_all([*args, "--results", str(work / "local")], env, work / "local.log")
    facts["ray_rc"] = run_all([*args, "--results", str(work / "ray"), "--address", f"127.0.0.1:{port}"], env,
                              work / "ray.log")
    facts["ray_log"] = (work / "ray.log").read_text()[-5000:]
    facts["local"] = {k: {"status": r["status"], "metrics": r.get("metrics"), "history": r.get("history")}
                      for k, r in stored(work / "local").items()}
    facts["ray"] = {k: {"status": r["status"], "metrics": r.get("metrics"), "history": r.get("history"),
                        "environment": r.get("environment")} for k, r in stored(work / "ray").items()}
    facts["trained"] = re.findall(r"stored run (\w+) \(", facts["ray_log"])
    facts["plan_keys"] = sorted({k for row in json.loads((work / "ray" / "plan.json").read_text())["rows"]
                                 for k in (row["key"], row["untrained_key"])})
    facts["leftovers"] = leftovers(work / "ray")
    # another copy of the project whose data differ by one comment line is what Ray ships to the workers
    other = work / "other-copy"
    for folder in ("core", "ablations", "data"):
        shutil.copytree(ROOT / folder, other / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with open(other / "data" / "hiahia.yaml", "a") as f:
        f.write("# edited on the worker's copy\n")
    driver = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import core.study.ray_executor as r; "
              f"r.SOURCE = __import__('pathlib').Path({str(other)!r}); from core.study.cli import main; "
              f"sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", driver, *args, "--results", str(work / "mismatch"),
                           "--address", f"127.0.0.1:{port}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    facts["mismatch_rc"], facts["mismatch_stderr"] = done.returncode, done.stderr
    facts["mismatch_stored"] = sorted(stored(work / "mismatch"))
    subprocess.run([RAY, "stop", "--force"], env=env, timeout=60, capture_output=True)
    return facts


def kill_worker(work: Path, env: dict) -> dict:
    """--jobs 1: each training's worker kills itself (SIGKILL) at optimizer step 2 while kill tokens last (2 of them,
    core/run/train.py): the first training dies on both of Ray's tries and is stored as failed, and the driver goes
    on to finish the second."""
    results, tokens = work / "results", work / "kill-tokens"
    tokens.mkdir()
    for i in range(2):
        (tokens / str(i)).touch()
    args = ["--only", "debate_augmentation", "--seeds", "1", "--set", "epochs=2", *TINY, "--results", str(results),
            "--jobs", "1"]
    env = dict(env, HIAHIA_TEST_KILL_AT_STEP="2", HIAHIA_TEST_KILL_TOKENS=str(tokens))
    rc = run_all(args, env, work / "driver.log", timeout=300)
    log = (work / "driver.log").read_text()
    records = stored(results)
    plan = json.loads((results / "plan.json").read_text())["rows"]
    order = [m.group(1) for m in re.finditer(r"stored run (\w+) \(", log)]  # the reference, then the trainings
    arm_of = {row["key"]: row["arm"] for row in plan}
    return {"rc": rc, "tokens_left": len(list(tokens.iterdir())), "log": log[-5000:],
            "stored_order": [arm_of.get(k, "untrained") for k in order],
            "status": {row["arm"]: records.get(row["key"], {}).get("status") for row in plan},
            "errors": {row["arm"]: records.get(row["key"], {}).get("error") for row in plan},
            "stored": len(records), "leftovers": leftovers(results), "temporary": staged_left(work)}


def kill_driver(work: Path, env: dict) -> dict:
    """--jobs 2: the driver kills itself (SIGKILL) once both trainings are handed to Ray (core/study/execute.py),
    then is started again."""
    results = work / "results"
    args = ["--only", "debate_augmentation", "--seeds", "1", "--set", "epochs=2", *TINY, "--results", str(results),
            "--jobs", "2"]
    first = run_all(args, dict(env, HIAHIA_TEST_KILL_DRIVER_AT_RUNNING="2"), work / "first.log", timeout=300)
    facts = {"first_rc": first, "first_log": (work / "first.log").read_text()[-3000:]}
    before = {p.name: p.stat().st_mtime_ns for p in (results / "runs").glob("*.json")}
    facts["after_kill"] = {"stored": sorted(before), "whole": all(json.loads(p.read_text()) for p in
                                                                  (results / "runs").glob("*.json"))}
    try:  # the killed driver's Ray instance shares its fate
        wait_for(lambda: not ray_processes("ray::train_group"), 60, "end of the killed driver's trainings")
    except TimeoutError:
        pass
    facts["trainings_left_running"] = len(ray_processes("ray::train_group"))
    driver = start_driver(args, env, work / "second.log")
    facts["listening"] = wait_for(lambda: driver.poll() is None and listening_addresses(), 150,
                                  "second driver's Ray instance listening")
    facts["second_rc"] = driver.wait(timeout=300)
    facts["second_log"] = (work / "second.log").read_text()[-5000:]
    records = stored(results)
    facts["reused"] = {name: (results / "runs" / name).stat().st_mtime_ns == t for name, t in before.items()}
    facts["status"] = sorted(r["status"] for r in records.values())
    facts["threads"] = sorted({r["environment"]["torch_threads"] for r in records.values()})
    facts["cores"] = len(os.sched_getaffinity(0))
    facts["leftovers"] = leftovers(results)
    facts["temporary"] = staged_left(work)
    return facts


SCENARIOS = {"two_node": two_node, "kill_worker": kill_worker, "kill_driver": kill_driver}


def main() -> int:
    name, work = sys.argv[1], Path(sys.argv[2])
    if not only_loopback():
        print("refusing to start Ray: this network namespace has interfaces besides loopback", file=sys.stderr)
        return 2
    env = ray_env(work)
    try:
        facts = SCENARIOS[name](work, env)
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, timeout=60, capture_output=True)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    (work / "facts.json").write_text(json.dumps(facts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
