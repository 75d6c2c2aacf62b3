#!/usr/bin/env python
"""The two speed levers of #34 not measured before: a leaner / fused LoRA forward in training, and a compiled
decode step with a static KV cache. Measured side by side in one process on the embedded chat model (bf16 mixed),
arms alternating; prints ratios and whether the arms' numbers are identical.

    python benchmarks/levers.py [--threads 2] [--steps 8] [--rounds 3] [--decode-rows 32] [--skip-compile] [--freezing] [--out benchmarks/results.json]

Training: the same fixed batches of the baseline recipe (seed 0), each arm from the same LoRA weights, timing
forward + backward + AdamW per step. Arms:
  current  core.run.lora.LoRALinear.forward as the study runs it;
  lean     the same product without the fp32 round trip of the input (under bf16 autocast the matmul casts it
           back to bf16, so the numbers are those of `current`);
  fused    lean, plus one A matmul for the projections that read the same input (q/k/v, gate/up).
Decoding: one left-padded batch of evaluation prompts, greedy, every row carried to the end (no early stop, so
the shapes stay fixed): eager with the dynamic cache (as the study decodes) against torch.compile of the same
forward with a static cache; the compile time is reported apart.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run_speed import OUT, cpu_name  # noqa: E402
from core.run import recipe  # noqa: E402
from core.run.config import RunConfig  # noqa: E402
from core.run.evaluate import _left_padded, last_position, prepacked_linears  # noqa: E402
from core.run.examples import build_train_examples  # noqa: E402
from core.run.knowledge import load_knowledge  # noqa: E402
from core.run.lora import LoRALinear, load_trainable_state, lora_modules, trainable_state  # noqa: E402
from core.run.train import batch_loss, collate, length_grouped_batches, training_attention  # noqa: E402

CURRENT = LoRALinear.forward


def lean_forward(self, x):
    out = self.base(x)
    if self.merged:
        return out
    src = x if torch.is_autocast_enabled(x.device.type) else x.to(self.lora_A.dtype)
    lora = (self.dropout(src) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling
    return out + lora.to(out.dtype)


class Fused:
    """One A matmul for LoRA modules that read the same input tensor (q/k/v; gate/up): the first of a group
    computes x @ [A1; A2; ...]^T for the group and the others take their slice, keyed by the input's identity."""

    def __init__(self, model):
        self.groups: dict[int, list[LoRALinear]] = {}
        for layer in model.model.layers:
            for mods in ((layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj),
                         (layer.mlp.gate_proj, layer.mlp.up_proj)):
                for i, m in enumerate(mods):
                    m._group, m._slot = mods, i

    @staticmethod
    def forward(self, x):
        group = getattr(self, "_group", None)
        if group is None:  # o_proj, down_proj: nothing shares their input
            return lean_forward(self, x)
        out = self.base(x)
        cache = self._group[0].__dict__.setdefault("_fused_cache", {})
        if self._slot == 0 or cache.get("x") is not x:
            a = torch.cat([m.lora_A for m in group])
            src = x if torch.is_autocast_enabled(x.device.type) else x.to(a.dtype)
            cache["x"], cache["parts"] = x, (src @ a.t()).split([m.r for m in group], dim=-1)
        h = cache["parts"][self._slot]
        lora = (h @ self.lora_B.t()) * self.scaling
        if self._slot == len(group) - 1:
            cache.clear()
        return out + lora.to(out.dtype)


def train_steps(loaded, batches, pad_id, state, arm_forward, steps):
    model = loaded.model
    load_trainable_state(model, state)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    LoRALinear.forward = arm_forward
    losses, times = [], []
    model.train()
    with training_attention(model, "cpu"):
        for b in batches[:steps]:
            batch = collate(b, pad_id, "cpu")
            t0 = time.perf_counter()
            with loaded.precision.autocast():
                loss_sum, n = batch_loss(model, batch)
                loss = loss_sum / n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            times.append(time.perf_counter() - t0)
            losses.append(loss.item())
    LoRALinear.forward = CURRENT
    return times, losses


def training(args, loaded, ks, found):
    cfg = RunConfig(seed=0)
    recipe.attach_adapter(loaded.model, cfg)
    examples = build_train_examples(ks, cfg, loaded.renderer, [])
    import random
    batches = length_grouped_batches(examples, cfg.batch_size, random.Random(0))
    state = trainable_state(loaded.model)
    pad = loaded.tokenizer.pad_token_id
    Fused(loaded.model)
    arms = {"current": CURRENT, "lean": lean_forward, "fused": Fused.forward}
    train_steps(loaded, batches, pad, state, CURRENT, 2)  # warm-up
    per = {a: [] for a in arms}
    losses = {}
    names = list(arms)
    for r in range(args.rounds):  # the arms' order rotates each round, so no arm always runs first
        for name in names[r % len(names):] + names[:r % len(names)]:
            fwd = arms[name]
            t, lo = train_steps(loaded, batches, pad, state, fwd, args.steps)
            per[name].append(sum(t[1:]) / (len(t) - 1))  # first step of each arm: allocator warm-up
            losses[name] = lo
    base = statistics.median(per["current"])
    found["training_step"] = {"steps": args.steps, "rounds": args.rounds, "arms": {}}
    print(f"training step, {args.steps} steps x {args.rounds} rounds (median s/step, steps 2+):")
    for name in arms:
        med = statistics.median(per[name])
        same = "identical" if losses[name] == losses["current"] else (
            f"max |loss diff| {max(abs(a - b) for a, b in zip(losses[name], losses['current'])):.2e}")
        print(f"  {name:8s} {med:.3f} s/step  {base / med:.2f}x  losses {same}  (all: {[round(v, 3) for v in per[name]]})")
        found["training_step"]["arms"][name] = {"s_per_step": med, "ratio": base / med, "rounds": per[name],
                                                "losses_identical": losses[name] == losses["current"]}
    for m in lora_modules(loaded.model).values():
        for k in ("_group", "_slot", "_fused_cache"):
            m.__dict__.pop(k, None)


def decode_eager(model, ids, mask, new):
    from transformers import DynamicCache
    cache = DynamicCache(config=model.config)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                   logits_to_keep=last_position(ids)).logits
    tok = logits[:, -1].argmax(-1)
    out, t0 = [tok], time.perf_counter()
    for _ in range(new - 1):
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                       cache=cache, use_cache=True).logits
        tok = logits[:, -1].argmax(-1)
        out.append(tok)
    return torch.stack(out, 1), (time.perf_counter() - t0) / (new - 1)


def decode_static(model, step, ids, mask, new):
    from transformers import StaticCache
    width = ids.shape[1] + new
    cache = StaticCache(config=model.config, max_cache_len=width)
    full = torch.cat([mask, mask.new_zeros((mask.shape[0], new))], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=full[:, :ids.shape[1]], position_ids=pos, cache=cache,
                   use_cache=True, logits_to_keep=last_position(ids)).logits
    tok = logits[:, -1].argmax(-1)
    out, times = [tok], []
    for i in range(new - 1):
        full[:, ids.shape[1] + i] = 1
        t0 = time.perf_counter()
        # the whole cache width every step (positions not yet written masked), so the shapes never change
        logits = step(input_ids=tok[:, None], attention_mask=full, position_ids=full.sum(-1, keepdim=True) - 1,
                      cache=cache, use_cache=True).logits
        tok = logits[:, -1].argmax(-1)
        times.append(time.perf_counter() - t0)
        out.append(tok)
    return torch.stack(out, 1), times


def decoding(args, loaded, ks, found):
    model = loaded.model
    model.eval()
    qs = [q for f in ks.facts for q in f.test][: args.decode_rows]  # held-out questions, as evaluation asks
    prompts = [tuple(loaded.renderer.prompt_ids(None, q)) for q in qs]
    ids, mask = _left_padded(prompts, loaded.tokenizer.pad_token_id)
    new = 32
    with torch.inference_mode(), prepacked_linears(model, args.decode_rows):
        eager = []
        for _ in range(args.rounds):
            toks_e, s = decode_eager(model, ids, mask, new)
            eager.append(s)
        print(f"decode step, {ids.shape[0]} rows, prompt width {ids.shape[1]}, {new} new tokens:")
        print(f"  eager + dynamic cache   {statistics.median(eager) * 1e3:.1f} ms/step  (all {[round(v * 1e3, 1) for v in eager]})"
              "  [inference_mode]")
        with torch.no_grad(), torch.inference_mode(False):
            graded = [decode_eager(model, ids, mask, new) for _ in range(args.rounds)]
        same = all(torch.equal(t, toks_e) for t, _ in graded)
        found["decode_step"] = {"rows": ids.shape[0], "prompt_width": ids.shape[1], "new_tokens": new,
                                "eager_inference_mode_ms": statistics.median(eager) * 1e3,
                                "eager_no_grad_ms": statistics.median(s for _, s in graded) * 1e3,
                                "no_grad_tokens_identical": same}
        print(f"  the same under no_grad  {statistics.median(s for _, s in graded) * 1e3:.1f} ms/step  (as the study "
              f"decodes; tokens {'identical' if same else 'differ'})")
        try:
            toks_s, times = decode_static(model, model, ids, mask, new)
            found["decode_step"] |= {"eager_static_ms": statistics.median(times) * 1e3,
                                     "static_tokens_differ": int((toks_s != toks_e).sum())}
            print(f"  eager + static cache    {statistics.median(times) * 1e3:.1f} ms/step  tokens "
                  f"{'identical' if torch.equal(toks_s, toks_e) else f'{(toks_s != toks_e).sum().item()} differ'}")
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"  eager + static cache    failed: {type(e).__name__}: {str(e)[:200]}")
            return
    if args.skip_compile:
        return
    with torch.inference_mode():  # oneDNN's pre-packed linear has no Inductor lowering: compile the plain model
        unpacked = statistics.median([decode_eager(model, ids, mask, new)[1] for _ in range(args.rounds)])
        print(f"  eager, not pre-packed   {unpacked * 1e3:.1f} ms/step")
        found["decode_step"]["eager_not_prepacked_ms"] = unpacked * 1e3
        if args.freezing:  # Inductor folds the frozen weights and pre-packs them for oneDNN itself
            import torch._inductor.config as inductor_config
            inductor_config.freezing = True
        step = torch.compile(model, dynamic=False)
        t0 = time.perf_counter()
        try:
            toks_c, times = decode_static(model, step, ids, mask, new)
        except Exception as e:  # noqa: BLE001
            print(f"  compiled + static cache failed: {type(e).__name__}: {str(e)[:300]}")
            return
        total = time.perf_counter() - t0
        first = times[0]
        steady = statistics.median(times[3:])
        found["decode_step"] |= {"compiled_static_ms": steady * 1e3, "compile_s": first, "freezing": args.freezing,
                                 "compiled_tokens_differ": int((toks_c != toks_e).sum())}
        print(f"  compiled + static cache {steady * 1e3:.1f} ms/step after compiling (first steps "
              f"{[round(v, 1) for v in times[:3]]} s; whole first batch {total:.0f} s); tokens "
              f"{'identical' if torch.equal(toks_c, toks_e) else f'{(toks_c != toks_e).sum().item()} of {toks_e.numel()} differ'}")
        if args.freezing:  # a second batch aborts in the generated kernel (index out of bounds): the frozen graph
            return         # keeps the first batch's cache tensors
        rerun = []
        for _ in range(args.rounds):
            _, times = decode_static(model, step, ids, mask, new)
            rerun.append(statistics.median(times))
        found["decode_step"]["compiled_static_second_batch_ms"] = statistics.median(rerun) * 1e3
        print(f"  compiled, second batch  {statistics.median(rerun) * 1e3:.1f} ms/step; "
              f"{statistics.median(eager) / statistics.median(rerun):.2f}x the study's eager step (first compile {first:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--decode-rows", type=int, default=32)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--freezing", action="store_true", help="compile with Inductor's weight freezing")
    ap.add_argument("--only", choices=["train", "decode"])
    ap.add_argument("--out", type=Path, default=OUT, help="merge the figures into this JSON file (key: levers)")
    args = ap.parse_args()
    if args.steps < 2:
        ap.error("--steps must be >= 2 (each arm's first step is an allocator warm-up and is not timed)")
    torch.set_num_threads(args.threads)
    ks = load_knowledge()
    found: dict = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "threads": args.threads}
    loaded = recipe.load(RunConfig(seed=0), mixed=True)
    if args.only != "decode":
        training(args, loaded, ks, found)
    if args.only != "train":
        loaded = recipe.load(RunConfig(seed=0), mixed=True)
        decoding(args, loaded, ks, found)
    merged = json.loads(args.out.read_text()) if args.out.exists() else {}
    merged["levers"] = merged.get("levers", {}) | found if args.only else found  # --only: keep the other part
    args.out.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"wrote {args.out} (levers)")


if __name__ == "__main__":
    main()
