"""Benchmark worker "matmul": the CPU's fp32 matmul ceiling on the model's own layer shapes."""
from __future__ import annotations

import math
import time

from benchmarks.common import batch_stats, info, say, setup


def best_matmul_seconds(torch, m: int, k: int, n: int, repeats: int = 200, chunk_time: float = 0.001,
                        budget: float = 1.0) -> float:
    """Best (lowest) mean time per call over up to `repeats` short chunks of calls (at least 5, then until
    `budget` seconds are spent): the ceiling, not the typical time."""
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    out = torch.empty(m, n)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    t0 = time.perf_counter()
    torch.matmul(a, b, out=out)
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(chunk_time / one))
    best = math.inf
    start = time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - t0) / inner)
        if i >= 4 and time.perf_counter() - start > budget:
            break
    return best


def worker_matmul(args) -> dict:
    env = setup(args)
    torch, model, batches = env["torch"], env["model"], env["batches"]
    from torch import nn

    from core.run.config import ALL_LINEAR

    stats = batch_stats(batches)
    width = stats["padded_tokens"] / len(batches) / args.batch_size
    m = args.batch_size * round(width)  # tokens in one (padded) training batch
    m_label = max(1, round(stats["label_tokens"] / len(batches)))  # LM-head rows per batch (labelled positions)
    shapes, counts = {}, {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            suffix = name.rsplit(".", 1)[-1]
            if suffix in ALL_LINEAR:
                shapes.setdefault(suffix, (mod.in_features, mod.out_features))
                counts[suffix] = counts.get(suffix, 0) + 1
    head = model.get_output_embeddings().weight  # [vocab, hidden]
    rows = []
    say(f"matmul: fp32 ceiling on {len(shapes) + 2} shapes, M={m} tokens per batch, "
        f"{torch.get_num_threads()} torch threads")
    for suffix in ALL_LINEAR:
        if suffix in shapes:
            k, n = shapes[suffix]
            rows.append({"name": suffix, "m": m, "k": k, "n": n, "count": counts[suffix]})
    rows.append({"name": "lm_head", "m": m, "k": int(head.shape[1]), "n": int(head.shape[0]), "count": 0})
    rows.append({"name": "lm_head (labelled rows)", "m": m_label, "k": int(head.shape[1]), "n": int(head.shape[0]),
                 "count": 1})
    with torch.no_grad():
        for r in rows:
            r["seconds"] = best_matmul_seconds(torch, r["m"], r["k"], r["n"])
            r["flops"] = 2.0 * r["m"] * r["k"] * r["n"]
            r["gflops"] = r["flops"] / r["seconds"] / 1e9
            say(f"  {r['name']:<24} [{r['m']}x{r['k']}] x [{r['k']}x{r['n']}]  {r['gflops']:8.1f} GFLOP/s")
    # one forward pass's mix: every layer shape as often as the model has it, the LM head on labelled rows only
    total_flops = sum(r["flops"] * r["count"] for r in rows)
    total_s = sum(r["seconds"] * r["count"] for r in rows)
    return dict(rows=rows, m=m, m_label=m_label, ceiling_gflops=total_flops / total_s / 1e9,
                best_shape_gflops=max(r["gflops"] for r in rows), **info(torch))
