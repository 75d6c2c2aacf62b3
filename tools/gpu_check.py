"""Check the --device cuda paths on a machine with a CUDA GPU (CI and the study's machines have none).

    python tools/gpu_check.py OUTDIR              # on the GPU machine
    python tools/gpu_check.py OUTDIR --device cpu # the same checks on CPU, to try the script itself

On the tiny random model (the real weights are too large to carry to a lent GPU machine):
  1. the own-facts recipe: `hiahia train` and `hiahia ask` on the device, in the precision it picks;
  2. the same seed trained twice on the device gives the same adapter weights and losses;
  3. in fp32, the untrained model's validation loss is the same on CPU and on the device (same maths);
  4. the study: run_all.py on the device, one ablation and one seed, to its report.
Prints one line per check (PASS or FAIL and the figures) and exits 1 if any fails. OUTDIR keeps the adapters,
the results folder and the report.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.facts.cli import main as hiahia  # noqa: E402
from core.run import models  # noqa: E402

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def train(facts: Path, out: Path, device: str, *extra: str) -> tuple[dict, dict, float]:
    """hiahia train on the tiny model; returns (hiahia.json, adapter tensors, seconds)."""
    start = time.perf_counter()
    code = hiahia(["train", "--data", str(facts), "--out", str(out), "--model", models.TINY, "--device", device,
                   "--set", "epochs=2", "--set", "lr=5e-3", "--quiet", *extra])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"FAIL hiahia train --device {device} {' '.join(extra)} exited {code}")
    return json.loads((out / "hiahia.json").read_text()), load_file(out / "adapter_model.safetensors"), seconds


def losses(meta: dict) -> list[float]:
    return [p["loss"] for p in meta["training"]["history"]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    out, device = args.out, args.device
    out.mkdir(parents=True, exist_ok=True)
    if device.startswith("cuda"):
        check("cuda visible", torch.cuda.is_available(),
              torch.cuda.get_device_name(0) if torch.cuda.is_available() else "torch sees no CUDA device")
        if FAILED:
            return 1
    tag = models.pick_precision(device).tag
    print(f"torch {torch.__version__}, device {device}, precision {tag}", flush=True)
    facts = out / "facts.yaml"
    assert hiahia(["init", str(facts), "--force"]) == 0
    adapter_checks(facts, out, device, tag)
    fp32_check(facts, out, device)
    study_check(out, device, tag)
    print("all checks passed" if not FAILED else f"failed: {', '.join(FAILED)}", flush=True)
    return 1 if FAILED else 0


def adapter_checks(facts: Path, out: Path, device: str, tag: str) -> None:
    """hiahia train in the device's precision, twice with one seed (the same adapter), then hiahia ask."""
    meta_a, weights_a, seconds = train(facts, out / "adapter-a", device, "--force")
    check("train", meta_a["precision"] == tag,
          f"{seconds:.1f} s, precision {meta_a['precision']}, losses {losses(meta_a)[:1]} -> "
          f"{losses(meta_a)[-1:]}")
    meta_b, weights_b, _ = train(facts, out / "adapter-b", device, "--force")
    diff = max((weights_a[k].float() - weights_b[k].float()).abs().max().item() for k in weights_a)
    check("same seed, same adapter", diff == 0.0 and losses(meta_a) == losses(meta_b),
          f"largest weight difference {diff:.3g}; losses equal: {losses(meta_a) == losses(meta_b)}")
    answers = out / "answers.txt"
    with answers.open("w") as f:
        done = subprocess.run([sys.executable, "-m", "core.facts.cli", "ask", str(out / "adapter-a"), "Who is Ada Quill?",
                               "--compare", "--device", device], cwd=ROOT, stdout=f, stderr=subprocess.PIPE, text=True)
    check("ask", done.returncode == 0 and answers.stat().st_size > 0,
          f"exit {done.returncode}, {answers.stat().st_size} bytes of answers"
          + (f"; stderr ends: {done.stderr.strip()[-200:]}" if done.returncode else ""))


def fp32_check(facts: Path, out: Path, device: str) -> None:
    """The same fp32 forward pass on the CPU and on the device."""
    fp32 = {}
    for dev in ("cpu", device):
        # no replay: its answers are greedy generations of the random tiny model, whose near-tied logits can turn on
        # the last bit, so the two devices would train on different text
        meta, _, _ = train(facts, out / f"fp32-{dev}", dev, "--force", "--precision", "fp32", "--set", "replay=0")
        fp32[dev] = losses(meta)
    # the untrained model's validation loss (epoch 0) is the same forward pass on the same weights and data; the
    # training after it differs by design: LoRA A is drawn from the device's random generator (core.run.lora), so a
    # seed gives the same numbers on one device, not across devices
    gap = abs(fp32["cpu"][0] - fp32[device][0])
    check(f"fp32 forward, cpu vs {device}", gap < 1e-4,
          f"untrained validation loss differs by {gap:.3g}; trained losses cpu {fp32['cpu'][1:]}, "
          f"{device} {fp32[device][1:]}")


def study_check(out: Path, device: str, tag: str) -> None:
    """One ablation of the study on the device: run records in its precision and a report."""
    start = time.perf_counter()
    results, report = out / "study-results", out / "study-report"
    done = subprocess.run([sys.executable, "run_all.py", "--device", device, "--model", models.TINY, "--only",
                           "no_masking", "--seeds", "1", "--results", str(results), "--report", str(report),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True)
    runs = [json.loads(f.read_text()) for f in (results / "runs").glob("*.json")] if results.exists() else []
    precisions = sorted({r.get("environment", {}).get("precision") for r in runs})
    html = report / "index.html"
    check("study", done.returncode == 0 and runs and precisions == [tag] and html.exists(),
          f"exit {done.returncode} in {time.perf_counter() - start:.0f} s, {len(runs)} run records, precisions "
          f"{precisions}, report {'written' if html.exists() else 'missing'}"
          + (f"; stderr ends: {done.stderr.strip()[-300:]}" if done.returncode else ""))


if __name__ == "__main__":
    sys.exit(main())
