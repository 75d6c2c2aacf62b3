"""The benchmark's numbers put together: FLOP count, tables, targets, the terminal text and the markdown file."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from benchmarks.common import LAST_STEPS, last_mean

LOSS_TOLERANCE = 0.05
TARGET_TRAIN_SPEEDUP = 1.5
TARGET_FLOP_FRACTION = 0.5
TARGET_EVAL_SPEEDUP = 5.0


def training_flops(shape: dict, tokens: int, label_tokens: int) -> dict:
    fwd = 2 * shape["n_params_nonembedding"] * tokens + 2 * shape["hidden"] * shape["vocab"] * label_tokens
    return {"forward": fwd, "total": 2 * fwd}


FLOP_FORMULA = (
    "forward = 2 * N_nonemb * T + 2 * d * V * T_lab;  training = forward + backward = 2 * forward\n"
    "  N_nonemb = base-model parameters without the input embedding / LM head, T = non-pad tokens,\n"
    "  T_lab = labelled (loss) positions, d = hidden size, V = vocabulary; the LM head runs only where labels\n"
    "  exist, as the project's trainer does. Backward of a frozen base with LoRA ~ 1x forward: activation\n"
    "  gradients only (no weight gradients for frozen weights; LoRA's own FLOPs and attention scores ignored)."
)


def fmt_table(header: list[str], rows: list[list], markdown: bool = False) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def machine_info() -> dict:
    import peft
    import psutil
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "cpus_usable": usable,
            "ram_gb": psutil.virtual_memory().total / 2**30, "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "load_avg_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def report(args, command: str, date: str, mach: dict, ours: dict, ref: dict, ev: dict, mm: dict
           ) -> tuple[str, str, dict]:
    """(plain-text table for the terminal, markdown file, the ratios for results.json)."""
    m = _measures(ours, ref, ev, mm)
    tables = _tables(ours, ref, ev, mm, m)
    targets, notes = _targets(m), _notes(args, mach, ours, ref, ev, mm, m)
    return _text(tables, targets, notes), _markdown(args, command, date, mach, ours, ref, ev, tables, targets, notes), \
        {"train_vs_trainer_peft": m["speedup"], "ceiling_fraction": m["frac"], "eval_vs_one_at_a_time": m["ev_ratio"]}


def _measures(ours: dict, ref: dict, ev: dict, mm: dict) -> dict:
    """The ratios the benchmark reports, from the workers' raw figures."""
    st = ours["stats"]
    same_batches = ours["step_hashes"] == ref["step_hashes"] == st["batch_hashes"]
    shape = ours["shape"]
    flops = training_flops(shape, st["tokens"], st["label_tokens"])
    st_first_tokens = st["first_batch_tokens"]

    def arm(r):
        s = r["loop_s"]
        steady = None
        if r.get("steady_s"):  # steps 2..N: the first step's one-off costs left out
            first = st_first_tokens
            steady = (st["tokens"] - first) / r["steady_s"]
        return {"tok_s": st["tokens"] / s, "lab_s": st["label_tokens"] / s, "loss": last_mean(r["losses"]),
                "steady_tok_s": steady,
                "first": r["losses"][0] if r["losses"] else float("nan"), "flops_s": flops["total"] / s}

    a, b = arm(ours), arm(ref)
    speedup = b["lab_s"] and a["lab_s"] / b["lab_s"]
    loss_rel = abs(a["loss"] - b["loss"]) / abs(b["loss"]) if b["loss"] else float("inf")
    loss_ok = loss_rel <= LOSS_TOLERANCE
    ceiling = mm["ceiling_gflops"] * 1e9
    frac = a["flops_s"] / ceiling
    ev_rate_b = ev["questions"] / ev["batched_s"]
    ev_rate_s = ev["questions"] / ev["single_s"]
    ev_ratio = ev_rate_b / ev_rate_s

    return {"st": st, "same_batches": same_batches, "shape": shape, "flops": flops, "a": a, "b": b, "speedup": speedup,
            "loss_rel": loss_rel, "loss_ok": loss_ok, "ceiling": ceiling, "frac": frac, "ev_rate_b": ev_rate_b,
            "ev_rate_s": ev_rate_s, "ev_ratio": ev_ratio}


def _tables(ours: dict, ref: dict, ev: dict, mm: dict, m: dict) -> dict:
    """(header, rows) of the training, evaluation and matmul tables."""
    a, b, ev_rate_b, ev_rate_s = m["a"], m["b"], m["ev_rate_b"], m["ev_rate_s"]
    train_header = ["trainer", "steps", "wall s", "loop s", "tokens/s", "labelled tok/s", "tok/s steps 2+",
                    "peak RSS +MB",
                    "peak RSS MB", "first loss", f"loss (last {LAST_STEPS})", "GFLOP/s"]
    train_rows = [[name, len(r["losses"]), f"{r['wall_s']:.2f}", f"{r['loop_s']:.2f}", f"{x['tok_s']:.0f}",
                   f"{x['lab_s']:.0f}", "-" if x["steady_tok_s"] is None else f"{x['steady_tok_s']:.0f}",
                   f"{r['memory']['rss_delta_mb']:.0f}", f"{r['memory']['rss_peak_mb']:.0f}",
                   f"{x['first']:.4f}", f"{x['loss']:.4f}", f"{x['flops_s'] / 1e9:.1f}"]
                  for name, r, x in (("ours (" + ours["path"] + ")", ours, a), (ref["path"], ref, b))]
    eval_header = ["generation", "answers", "seconds", "answers/s"]
    eval_rows = [["core.run.evaluate.generate (batched)", ev["questions"], f"{ev['batched_s']:.2f}",
                  f"{ev_rate_b:.2f}"],
                 ["model.generate, one at a time", ev["questions"], f"{ev['single_s']:.2f}", f"{ev_rate_s:.2f}"]]
    mm_header = ["matmul (fp32)", "M", "K", "N", "per fwd", "GFLOP/s"]
    mm_rows = [[r["name"], r["m"], r["k"], r["n"], r["count"], f"{r['gflops']:.1f}"] for r in mm["rows"]]

    return {"train": (train_header, train_rows), "eval": (eval_header, eval_rows), "matmul": (mm_header, mm_rows)}


def _targets(m: dict) -> list[tuple[str, bool, str]]:
    speedup, loss_ok, loss_rel, frac, a, ev_ratio = m["speedup"], m["loss_ok"], m["loss_rel"], m["frac"], m["a"], \
        m["ev_ratio"]
    targets = [
        ("training throughput >= 1.5x Trainer+peft at equal loss (within 5%)",
         speedup >= TARGET_TRAIN_SPEEDUP and loss_ok, f"{speedup:.2f}x, loss diff {loss_rel:.1%}"),
        ("achieved training FLOP/s >= 50% of the matmul ceiling", frac >= TARGET_FLOP_FRACTION,
         f"{a['flops_s'] / 1e9:.1f} / {m['ceiling'] / 1e9:.1f} GFLOP/s = {frac:.0%}"),
        ("evaluation >= 5x one-at-a-time generate", ev_ratio >= TARGET_EVAL_SPEEDUP, f"{ev_ratio:.2f}x"),
    ]
    return targets


def _notes(args, mach: dict, ours: dict, ref: dict, ev: dict, mm: dict, m: dict) -> list[str]:
    st, same_batches, shape, flops, a, b = m["st"], m["same_batches"], m["shape"], m["flops"], m["a"], m["b"]
    speedup, loss_ok, loss_rel, ceiling, frac, ev_ratio = m["speedup"], m["loss_ok"], m["loss_rel"], m["ceiling"], \
        m["frac"], m["ev_ratio"]
    notes = [
        f"same batches in both training arms: {'yes' if same_batches else 'NO'} "
        f"({st['batches']} batches, {st['tokens']} non-pad tokens, {st['label_tokens']} labelled, "
        f"{st['padded_tokens']} padded = {1 - st['tokens'] / st['padded_tokens']:.0%} padding)",
        f"training speedup (ours / Trainer+peft): {speedup:.2f}x",
        f"final losses agree within {LOSS_TOLERANCE:.0%}: {'yes' if loss_ok else 'NO'} "
        f"(ours {a['loss']:.4f}, Trainer+peft {b['loss']:.4f}, relative difference {loss_rel:.2%})",
        f"LoRA: r={ours_cfg_value('lora_r')}, alpha={ours_cfg_value('lora_alpha')}, "
        f"{ours['lora']['matched']} modules, {ours['lora']['trainable_params']} trainable (peft: "
        f"{ref['lora']['trainable_params']}, scaling {ref['lora']['scaling']})",
        f"evaluation speedup (batched / one at a time): {ev_ratio:.2f}x; identical answers: "
        f"{ev['questions'] - ev['mismatches']}/{ev['questions']} ({ev['mismatches']} mismatches)",
        f"matmul ceiling (forward mix, M={mm['m']}, LM head on {mm['m_label']} labelled rows): "
        f"{mm['ceiling_gflops']:.1f} GFLOP/s; best single shape {mm['best_shape_gflops']:.1f} GFLOP/s",
        f"achieved training FLOP/s: {a['flops_s'] / 1e9:.1f} GFLOP/s = {frac:.0%} of the ceiling "
        f"(Trainer+peft: {b['flops_s'] / 1e9:.1f} GFLOP/s = {b['flops_s'] / ceiling:.0%}); "
        f"training FLOPs {flops['total']:.3e} (N_nonemb={shape['n_params_nonembedding']}, d={shape['hidden']}, "
        f"V={shape['vocab']}); counting backward as 2x forward instead (total 3x forward, as for full fine-tuning) "
        f"would give {1.5 * frac:.0%}",
        "evaluation uses the untrained base model (no LoRA) in both arms, so both generate from identical weights",
    ]
    if "tokens_counted" in ours and (ours["tokens_counted"], ours["label_tokens_counted"]) != (st["tokens"],
                                                                                             st["label_tokens"]):
        notes.append(f"WARNING: core.run.train.train counted {ours['tokens_counted']} tokens / "
                     f"{ours['label_tokens_counted']} labelled, the benchmark {st['tokens']} / {st['label_tokens']}")
    load = mach.get("load_avg_start")
    if load and load[0] > 0.5 * (mach["cpus_usable"] or 1):
        notes.append(f"WARNING: the machine was busy (1-minute load average {load[0]:.2f} on {mach['cpus_usable']} "
                     f"CPUs at the start): with torch threads = {ours['torch_threads']} competing for cores, timings "
                     f"(small matmuls especially) are unreliable")
    if ev["first_mismatch"]:
        fm = ev["first_mismatch"]
        notes.append(f"first evaluation mismatch (#{fm['index']}) {fm['question']!r}: batched {fm['batched']!r} "
                     f"vs one-at-a-time {fm['single']!r}")
    if ev["questions"] < args.eval_questions:
        notes.append(f"only {ev['questions']} test questions exist (asked for {args.eval_questions})")

    return notes


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _text(tables: dict, targets: list, notes: list[str]) -> str:
    (train_header, train_rows), (eval_header, eval_rows), (mm_header, mm_rows) = \
        tables["train"], tables["eval"], tables["matmul"]
    return "\n".join([
        "", "== Training ==", fmt_table(train_header, train_rows), "",
        "== Evaluation ==", fmt_table(eval_header, eval_rows), "",
        "== CPU matmul ceiling ==", fmt_table(mm_header, mm_rows), "",
        "FLOP count: " + FLOP_FORMULA, "",
        *notes, "",
        "== Targets ==", *[f"{verdict(ok)}  {name}: {detail}" for name, ok, detail in targets], "",
    ])


def _markdown(args, command: str, date: str, mach: dict, ours: dict, ref: dict, ev: dict, tables: dict,
              targets: list, notes: list[str]) -> str:
    (train_header, train_rows), (eval_header, eval_rows), (mm_header, mm_rows) = \
        tables["train"], tables["eval"], tables["matmul"]
    return "\n".join([
        f"# Benchmark: {args.model}", "",
        f"- command: `{command}`",
        f"- date: {date}",
        f"- machine: {mach['cpu']}; cpu_count {mach['cpu_count']} ({mach['cpus_usable']} usable), "
        f"{mach['ram_gb']:.0f} GiB RAM; load average at start {fmt_load(mach['load_avg_start'])}, "
        f"at end {fmt_load(mach.get('load_avg_end'))}",
        f"- torch {mach['torch']} (torch threads: {ours['torch_threads']}), transformers {mach['transformers']}, "
        f"peft {mach['peft']}, Python {mach['python']}, {mach['platform']}",
        f"- settings: {args.steps} steps, batch size {args.batch_size}, seed {args.seed}, "
        f"{ev['questions']} evaluation questions, max_new_tokens {ev['max_new_tokens']}, fp32 on CPU",
        "",
        "## Targets", "",
        fmt_table(["target", "result", "measured"], [[n, verdict(ok), d] for n, ok, d in targets], markdown=True), "",
        "## Training", "",
        "Both arms train on the same fixed list of batches (the project's length-grouped batcher over the baseline's",
        "training examples, full batches only), from the same LoRA initialisation, with AdamW at the baseline's",
        "lr / weight decay / grad clip and a constant LR without warmup. Each arm runs in a fresh process;",
        "`loop s` is the training loop (first step to last step), `wall s` includes set-up; throughput uses",
        "`loop s`. Peak RSS is sampled every 5 ms; `+MB` is above the RSS just before training.", "",
        fmt_table(train_header, train_rows, markdown=True), "",
        "## Evaluation", "",
        fmt_table(eval_header, eval_rows, markdown=True), "",
        "## CPU matmul ceiling", "",
        "`per fwd`: how often the shape occurs in one forward pass (the ceiling weights shapes by it).", "",
        fmt_table(mm_header, mm_rows, markdown=True), "",
        "FLOP count:", "", "```", FLOP_FORMULA, "```", "",
        "## Notes", "", *[f"- {n}" for n in notes], "",
        "Per-step training losses:", "",
        f"- ours: {', '.join(f'{x:.4f}' for x in ours['losses'])}",
        f"- Trainer+peft: {', '.join(f'{x:.4f}' for x in ref['losses'])}", "",
    ])


_CFG_VALUES: dict = {}


def ours_cfg_value(name: str):
    if not _CFG_VALUES:
        from core.run.config import RunConfig

        _CFG_VALUES.update(RunConfig().to_dict())
    return _CFG_VALUES[name]


def fmt_load(load) -> str:
    return "n/a" if not load else " / ".join(f"{x:.2f}" for x in load)
