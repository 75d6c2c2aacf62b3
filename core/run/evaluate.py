"""Batched greedy generation and the study's metrics (each a fraction in [0, 1]).

heldout_recall, reverse_recall, identity_hallucination and prompt_echo are computed on the answers
to the run's own evaluation prompt; heldout_recall is repeated under the held-out prompts.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from core.run import metrics as metric_registry
from core.run.config import RunConfig
from core.run.examples import MODEL_DEFAULT, NO_PROMPT, Renderer, eval_system_prompts
from core.run.knowledge import KnowledgeSet
from core.run.lora import lora_modules, merge_all, unmerge_all
from core.run.scoring import echoes, general_answer_correct, identity_correct, keywords_hit

OVERRUN_EXTRA = 16  # tokens allowed beyond max_new_tokens when checking for writing past the end of turn
# the prompts heldout_recall is repeated under: the registry's heldout_recall@<variant> metrics
HELDOUT_VARIANTS = tuple(m.sample_set.split("@", 1)[1] for m in metric_registry.METRICS.values()
                         if m.sample_set.startswith("test@"))


def last_position(input_ids: torch.Tensor) -> torch.Tensor:
    """The prefill's logits_to_keep: the last position as an index tensor, not logits_to_keep=1. The integer
    form hands the LM head a strided view (hidden[:, -1:]), on which CPU F.linear copies the whole head weight
    once per row (a [rows, hidden, vocab] copy, most of a prefill's time); indexing gives a contiguous
    [rows, 1, hidden] input and the same logits."""
    return torch.tensor([input_ids.shape[1] - 1], device=input_ids.device)


@torch.no_grad()
def greedy_decode(model, input_ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
                  stop_ids: set[int] | None) -> list[list[int]]:
    """Greedy new tokens for a left-padded batch, with a KV cache; a row leaves the batch (and its cache)
    as soon as it emits a stop token, so short answers stop costing compute.

    The study's own loop rather than model.generate: decoding is plain argmax whatever generation_config a
    model ships (a hub model's repetition_penalty or sampling defaults never apply), and finished rows are
    dropped instead of being carried, padded, to the longest answer of the batch."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position, cache=cache,
                   use_cache=True, logits_to_keep=last_position(input_ids)).logits
    tokens = logits[:, -1].argmax(-1)
    out: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    for step in range(max_new_tokens):
        for r, tok in zip(rows.tolist(), tokens.tolist()):
            out[r].append(tok)
        if step == max_new_tokens - 1:
            break
        if stop_ids:
            alive = torch.tensor([tok not in stop_ids for tok in tokens.tolist()], device=tokens.device)
            if not alive.all():
                keep = alive.nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                cache.batch_select_indices(keep)
                rows, tokens, mask = rows[keep], tokens[keep], mask[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                       cache=cache, use_cache=True).logits
        tokens = logits[:, -1].argmax(-1)
    return out


PACK_MIN_WEIGHTS = 1 << 16  # smaller weights (the tiny test model's) cost more to repack than they save


def _packable(module) -> bool:
    return (isinstance(module, torch.nn.Linear) and module.weight.device.type == "cpu"
            and module.weight.dtype == torch.bfloat16 and module.weight.numel() >= PACK_MIN_WEIGHTS)


@contextlib.contextmanager
def prepacked_linears(model, rows: int):
    """While decoding on a CPU, give every large bf16 linear layer its weight pre-packed for oneDNN once, instead
    of being re-packed on every call: decode-shaped matmuls (tens of rows) run about 1.2x faster, with results
    bit-identical to F.linear. `rows` is oneDNN's batch-size hint. Without oneDNN bf16 support nothing changes."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        yield
        return
    patched = [m for m in model.modules() if _packable(m)]
    for m in patched:
        packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), rows)

        def forward(x, packed=packed, bias=m.bias):
            return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), packed, bias, "none", [], "")
        m.forward = forward
    try:
        yield
    finally:
        for m in patched:
            del m.forward  # back to the class's forward (and to the weight, which training may change)


def _left_padded(prompts: list[tuple[int, ...]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of token ids padded on the left to the longest, and its attention mask."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        input_ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    return input_ids, mask


@torch.no_grad()
def _new_tokens(model, renderer: Renderer, items: list[tuple[str | None, str]], max_new_tokens: int, stop: bool,
                batch_size: int, progress: bool, desc: str) -> list[list[int]]:
    """Greedy new token ids for each (system, question): left padding, length-sorted batches, KV cache,
    stopping at the end-of-turn tokens (stop=False: always max_new_tokens). Identical prompts are
    generated once; LoRA weights are merged for the duration."""
    device = next(model.parameters()).device
    unique: dict[tuple, int] = {}
    prompts = []
    for system, question in items:
        ids = tuple(renderer.prompt_ids(system, question))
        if ids not in unique:
            unique[ids] = len(prompts)
            prompts.append(ids)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out_ids: list[list[int]] = [[] for _ in prompts]
    stop_ids = renderer.stop_ids()
    pad = renderer.tok.pad_token_id if renderer.tok.pad_token_id is not None else stop_ids[0]
    merged = bool(lora_modules(model))
    if merged:
        merge_all(model)
    model.eval()
    try:
        with prepacked_linears(model, batch_size):
            bar = tqdm(total=len(prompts), desc=desc, unit="ans", disable=not progress, leave=False, dynamic_ncols=True)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                input_ids, mask = _left_padded([prompts[i] for i in idx], pad)
                new = greedy_decode(model, input_ids.to(device), mask.to(device), max_new_tokens,
                                    set(stop_ids) if stop else None)
                for row, i in enumerate(idx):
                    out_ids[i] = new[row]
                bar.update(len(idx))
            bar.close()
    finally:
        if merged:
            unmerge_all(model)
    return [out_ids[unique[tuple(renderer.prompt_ids(s, q))]] for s, q in items]


def generate_finished(model, renderer: Renderer, items: list[tuple[str | None, str]], max_new_tokens: int,
                      batch_size: int = 32, progress: bool = True, desc: str = "eval") -> list[tuple[str, bool]]:
    """Greedy (answer, finished) for (system, question) pairs. `finished` is True when the answer ended at
    an end-of-turn token (or, in plain format, where the next "Question:" line would begin) rather than
    at max_new_tokens."""
    stop = set(renderer.stop_ids())
    out = []
    for new in _new_tokens(model, renderer, items, max_new_tokens, True, batch_size, progress, desc):
        cut = next((k for k, t in enumerate(new) if t in stop), None)
        text, hit_stop_text = renderer.cut_at_next_turn(renderer.tok.decode(new[:cut], skip_special_tokens=True))
        out.append((text.strip(), cut is not None or hit_stop_text))
    return out


def runs_past_end_of_turn(model, renderer: Renderer, items: list[tuple[str | None, str]], max_new_tokens: int,
                          progress: bool = True) -> list[bool]:
    """For each item: does the model, when generation is *not* stopped at its end-of-turn, go on writing
    after it (a new turn: what unmasked training teaches, since the loss then covers the template)?
    Plain format: does it invent a next "Question:" line."""
    stop = set(renderer.stop_ids())
    out = []
    for new in _new_tokens(model, renderer, items, max_new_tokens, False, 32, progress, "eval past end of turn"):
        cut = next((k for k, t in enumerate(new) if t in stop), None)
        if renderer.fmt == "plain":
            out.append(renderer.cut_at_next_turn(renderer.tok.decode(new, skip_special_tokens=True))[1])
        else:
            rest = [t for t in new[cut + 1:] if t not in stop and t != renderer.tok.pad_token_id] if cut is not None else []
            out.append(bool(renderer.tok.decode(rest, skip_special_tokens=True).strip()))
    return out


def generate(model, renderer: Renderer, items: list[tuple[str | None, str]], max_new_tokens: int,
             batch_size: int = 32, progress: bool = True, desc: str = "eval") -> list[str]:
    """Greedy answers for (system, question) pairs (see generate_finished)."""
    return [text for text, _ in generate_finished(model, renderer, items, max_new_tokens, batch_size, progress, desc)]


@dataclass
class Evaluation:
    metrics: dict[str, float | None]
    per_fact: dict[str, float]
    samples: list[dict]
    retention_correct: dict[str, bool]
    seconds: float


def _questions(knowledge: KnowledgeSet, cfg: RunConfig) -> tuple[list[tuple[str | None, str]], list[dict]]:
    """Every question an evaluation asks, as (system, question) items, and each one's sample fields."""
    tests = [(f, q) for f in knowledge.facts for q in f.test]
    reverse = [f for f in knowledge.facts if f.reverse_question]
    items, meta = [], []

    def add(kind, ident, system, question, expected, prompt_name, keywords, **probe_fields):
        """One question to ask; probe_fields: what only some sets store (identity group and suggests, retention
        category)."""
        items.append((system, question))
        meta.append(dict(set=kind, id=ident, prompt=prompt_name, system=system, question=question,
                         expected=expected, keywords=[list(g) for g in keywords], **probe_fields))

    for (f, q), s in zip(tests, eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(tests))):
        add("test", f.id, s, q, f.answer, cfg.eval_prompt, f.keywords)
    for f, s in zip(reverse, eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(reverse))):
        add("reverse", f.id, s, f.reverse_question, knowledge.name, cfg.eval_prompt, f.reverse_keywords)
    probes = knowledge.identity_probes
    for p, s in zip(probes, eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(probes))):
        add("identity", p.id, s, p.question, knowledge.summary, cfg.eval_prompt, (), group=p.group,
            suggests=list(p.suggests))
    for p in knowledge.retention_probes:
        add("retention", p.id, MODEL_DEFAULT, p.question, " / ".join(p.keywords[0]), MODEL_DEFAULT, p.keywords,
            category=p.category)
    for variant in HELDOUT_VARIANTS:
        if variant == cfg.eval_prompt:
            continue
        # one test question per fact under each held-out prompt keeps evaluation affordable on a CPU
        for f, s in zip(knowledge.facts, eval_system_prompts(knowledge, cfg, variant, len(knowledge.facts))):
            add(f"test@{variant}", f.id, s, f.test[0], f.answer, variant, f.keywords)
    return items, meta


def answer_hit(kind: str, answer: str, keywords, knowledge: KnowledgeSet) -> bool:
    """Whether an answer to a question of set `kind` (test, train, reverse, retention) is right: a retention probe
    by the general-knowledge scorer, the others by their keywords. Identity probes are scored in _scored."""
    if kind == "retention":
        return general_answer_correct(answer, keywords, knowledge.name)
    return keywords_hit(answer, keywords)


def _scored(meta: dict, answer: str, system: str | None, knowledge: KnowledgeSet) -> dict:
    """One question's sample: its fields, the answer and the per-item scores the metrics average."""
    m = dict(meta, answer=answer, system="<model default>" if system == MODEL_DEFAULT else system,
             has_prompt=system not in (NO_PROMPT, MODEL_DEFAULT))
    if m["set"] == "identity":
        m["hallucinated"] = not identity_correct(answer, knowledge.identity, suggests_wrong=bool(m["suggests"]))
        m["hit"] = not m["hallucinated"]
    else:
        m["hit"] = answer_hit(m["set"], answer, m["keywords"], knowledge)
    m["echo"] = echoes(answer, system)
    return m


def evaluate(model, renderer: Renderer, knowledge: KnowledgeSet, cfg: RunConfig, progress: bool = True,
             retention_reference: dict[str, bool] | None = None) -> Evaluation:
    start = time.perf_counter()
    items, meta = _questions(knowledge, cfg)
    # memorised vs extractable: the first training question of each fact (trained at every paraphrase count)
    per_fact_prompts = eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(knowledge.facts))
    for f, s in zip(knowledge.facts, per_fact_prompts):
        items.append((s, f.train[0]))
        meta.append(dict(set="train", id=f.id, prompt=cfg.eval_prompt, system=s, question=f.train[0],
                         expected=f.answer, keywords=[list(g) for g in f.keywords]))
    answers = generate(model, renderer, items, cfg.max_new_tokens, progress=progress)
    # past the end of turn: the first test question of each fact, generation not stopped at end-of-turn
    overrun_items = [(s, f.test[0]) for f, s in zip(knowledge.facts, per_fact_prompts)]
    overruns = runs_past_end_of_turn(model, renderer, overrun_items, cfg.max_new_tokens + OVERRUN_EXTRA, progress)
    samples = [dict(set="overrun", id=f.id, prompt=cfg.eval_prompt, system=s, question=q, expected="", keywords=[],
                    answer="", has_prompt=s not in (NO_PROMPT, MODEL_DEFAULT), overrun=o, hit=not o, echo=False)
               for f, (s, q), o in zip(knowledge.facts, overrun_items, overruns)]
    samples += [_scored(m, answer, system, knowledge) for m, answer, (system, _) in zip(meta, answers, items)]

    retention_correct = {s["id"]: s["hit"] for s in samples if s["set"] == "retention"}
    reference = retention_reference if retention_reference is not None else retention_correct
    for s in samples:
        if s["set"] == "retention":
            s["kept"] = bool(reference.get(s["id"], False))
    metrics = metric_registry.compute(samples, cfg.eval_prompt)
    per_fact: dict[str, list[bool]] = {}
    for s in samples:
        if s["set"] == "test":
            per_fact.setdefault(s["id"], []).append(s["hit"])
    return Evaluation(metrics, {k: sum(v) / len(v) for k, v in per_fact.items()}, samples, retention_correct,
                      time.perf_counter() - start)
