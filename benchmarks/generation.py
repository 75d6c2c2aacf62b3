"""Benchmark worker "eval": batched core.run.evaluate.generate against model.generate one question at a time."""
from __future__ import annotations

import time

from benchmarks.common import info, say, setup


def worker_eval(args) -> dict:
    env = setup(args)
    torch, model, cfg, knowledge, renderer, tok = (env[k] for k in ("torch", "model", "cfg", "knowledge", "renderer", "tok"))
    from tqdm.auto import tqdm

    from core.run.evaluate import generate
    from core.run.examples import eval_system_prompts

    tests = [(f, q) for f in knowledge.facts for q in f.test]
    systems = eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(tests))
    items = [(s, q) for (_, q), s in zip(tests, systems)][:args.eval_questions]
    stop = renderer.stop_ids()
    pad = tok.pad_token_id if tok.pad_token_id is not None else stop[0]

    def one(system, question, max_new):
        ids = renderer.prompt_ids(system, question)
        x = torch.tensor([ids])
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                             eos_token_id=stop, pad_token_id=pad)
        new = out[0, len(ids):].tolist()
        cut = next((k for k, t in enumerate(new) if t in stop), len(new))
        return tok.decode(new[:cut], skip_special_tokens=True).strip()

    model.eval()
    with torch.no_grad():  # warm-up, untimed: first-call allocations are paid by neither arm
        one(*items[0], max_new=2)
        generate(model, renderer, items[:2], 2, progress=False)
    say(f"eval: core.run.evaluate.generate on {len(items)} questions, max_new_tokens={cfg.max_new_tokens}")
    t0 = time.perf_counter()
    batched = generate(model, renderer, items, cfg.max_new_tokens, progress=not args.no_progress, desc="batched")
    batched_s = time.perf_counter() - t0
    say(f"eval: model.generate one question at a time on {len(items)} questions")
    single = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for s, q in tqdm(items, desc="one-at-a-time", disable=args.no_progress, leave=False):
            single.append(one(s, q, cfg.max_new_tokens))
    single_s = time.perf_counter() - t0
    mismatches = [i for i, (a, b) in enumerate(zip(batched, single)) if a != b]
    first = None
    if mismatches:
        i = mismatches[0]
        first = {"index": i, "question": items[i][1], "batched": batched[i], "single": single[i]}
    return dict(questions=len(items), available=len(tests), max_new_tokens=cfg.max_new_tokens, batched_s=batched_s,
                single_s=single_s, mismatches=len(mismatches), first_mismatch=first,
                sample={"question": items[0][1], "answer": batched[0]}, **info(torch))
