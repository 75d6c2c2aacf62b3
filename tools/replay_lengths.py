"""Length distribution of the untrained chat model's replay answers (sets run.REPLAY_TOKENS).

Generates every data/replay.yaml answer under the model's default prompt with a large budget and
prints the token-length percentiles and how many answers never reached an end-of-turn token.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from core.run import models
from core.run.evaluate import generate_finished
from core.run.examples import MODEL_DEFAULT, Renderer
from core.run.knowledge import load_knowledge, load_replay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--n", type=int, default=0, help="first n replay questions (0 = all)")
    args = ap.parse_args()
    model, tok = models.load(args.model)
    renderer = Renderer(tok, "chat")
    questions = load_replay(load_knowledge()).questions
    questions = questions[:args.n] if args.n else questions
    answers = generate_finished(model, renderer, [(MODEL_DEFAULT, q) for _, q in questions], args.budget)
    lengths = sorted(len(tok(a, add_special_tokens=False)["input_ids"]) for a, done in answers if done)
    unfinished = sum(not done for _, done in answers)
    q = statistics.quantiles(lengths, n=20)
    print(f"{len(answers)} answers, budget {args.budget}: {unfinished} never ended; finished lengths (tokens): "
          f"median {statistics.median(lengths):.0f}, p90 {q[17]:.0f}, p95 {q[18]:.0f}, max {lengths[-1]}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
