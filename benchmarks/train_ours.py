"""Benchmark worker "ours": core.run.train.train itself on the fixed batches (its `batches` parameter), one epoch."""
from __future__ import annotations

import time

from benchmarks.common import PeakRSS, batch_hash, batch_stats, info, model_shape, say, setup


def attach_ours(env: dict, seed: int) -> dict:
    from core.run.lora import inject_lora

    cfg, torch = env["cfg"], env["torch"]
    torch.manual_seed(seed)  # as core.run.recipe: the LoRA A initialisation depends only on the seed
    rep = inject_lora(env["model"], cfg.lora_targets, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.use_rslora,
                      strict=True)
    return {"matched": len(rep.matched), "trainable_params": rep.trainable_params}


def worker_ours(args) -> dict:
    """core.run.train.train on the fixed batches, one epoch, no validation examples; every step's loss, the hash of
    the batch it trained on, and when it ended are reported through on_step."""
    env = setup(args)
    torch, model, cfg, batches = env["torch"], env["model"], env["cfg"], env["batches"]
    shape = model_shape(model)
    lora = attach_ours(env, args.seed)
    from core.run.train import train

    seen = {"losses": [], "hashes": [], "ends": []}

    def on_step(step, loss, batch):
        seen["ends"].append(time.perf_counter())
        seen["losses"].append(loss)
        mask = batch["attention_mask"].bool()
        seen["hashes"].append(batch_hash([row[keep].tolist() for row, keep in zip(batch["input_ids"], mask)]))

    say(f"ours: core.run.train.train, {len(batches)} steps of batch {args.batch_size}, "
        f"{torch.get_num_threads()} torch threads")
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        result = train(model, [e for b in batches for e in b], [], cfg.replace(epochs=1), env["tok"].pad_token_id,
                       progress=not args.no_progress, desc="ours", batches=batches, on_step=on_step)
    end = time.perf_counter()
    if result.steps != len(batches) or len(seen["losses"]) != len(batches):
        raise SystemExit(f"core.run.train.train ran {result.steps} steps and reported {len(seen['losses'])}, "
                         f"expected {len(batches)}")
    steady = (end - seen["ends"][0]) if len(seen["ends"]) > 1 else None  # steps 2..N
    return dict(path="core.run.train.train", steady_s=steady, losses=seen["losses"], step_hashes=seen["hashes"],
                wall_s=end - t0, loop_s=result.seconds, tokens_counted=result.tokens,
                label_tokens_counted=result.label_tokens, memory=mem.to_dict(), shape=shape, lora=lora,
                load_s=env["load_s"], stats=batch_stats(batches), **info(torch))
