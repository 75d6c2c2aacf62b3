"""Batched greedy generation and the study's metrics (each a fraction in [0, 1]).

heldout_recall, reverse_recall, identity_hallucination and prompt_echo are computed on the answers
to the run's own evaluation prompt; heldout_recall is repeated under the held-out prompts.
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from core.run import metrics as metric_registry
from core.run.config import RunConfig
from core.run.examples import MODEL_DEFAULT, NO_PROMPT, Renderer, eval_system_prompts
from core.run.knowledge import KnowledgeSet
from core.run.lora import lora_modules, merge_all, unmerge_all
from core.run.scoring import (echoes, general_answer_correct, identity_correct, intruding_terms, keywords_hit,
                               names_persona)

OVERRUN_EXTRA = 16  # tokens allowed beyond max_new_tokens when checking for writing past the end of turn
# the prompts heldout_recall is repeated under: the registry's heldout_recall@<variant> metrics
HELDOUT_VARIANTS = tuple(dict.fromkeys(m.sample_set.split("@", 1)[1] for m in metric_registry.METRICS.values()
                                       if m.sample_set.startswith("test@")))
# the held-out prompts whose answers are also scored by likelihood (a registered recall_mc@<variant>)
MC_VARIANTS = {m.sample_set.split("@", 1)[1] for m in metric_registry.METRICS.values()
               if m.sample_set.startswith("test@") and m.score == "mc"}


def last_position(input_ids: torch.Tensor) -> torch.Tensor:
    """The prefill's logits_to_keep: the last position as an index tensor, not logits_to_keep=1. The integer
    form hands the LM head a strided view (hidden[:, -1:]), on which CPU F.linear copies the whole head weight
    once per row (a [rows, hidden, vocab] copy, most of a prefill's time); indexing gives a contiguous
    [rows, 1, hidden] input and the same logits."""
    return torch.tensor([input_ids.shape[1] - 1], device=input_ids.device)


def _rows_of(cache, rows: torch.Tensor):
    """A cache holding only `rows` of `cache` (repeated as often as they are listed), leaving `cache` as it was."""
    sub = copy.copy(cache)
    sub.layers = [copy.copy(layer) for layer in cache.layers]
    sub.batch_select_indices(rows)  # re-binds each copied layer's tensors to new, indexed ones
    return sub


CHOICE_ROWS = 64  # choice rows scored per forward pass, grouped by length so that little of it is padding


@torch.no_grad()
def _choice_logprobs(model, cache, mask: torch.Tensor, last_logits: torch.Tensor,
                     choices: list[list[list[int]] | None]) -> list[list[float] | None]:
    """The summed log-probability of each choice's tokens as the continuation of its row's prompt (already in
    `cache`, with the next-token logits `last_logits`). Choices of similar length are scored together, and the LM
    head runs only where a next choice token is predicted."""
    pairs = [(r, c) for r, row in enumerate(choices) if row for c in row]
    totals = torch.log_softmax(last_logits.float(), -1)[[r for r, _ in pairs], [c[0] for _, c in pairs]]
    device = mask.device
    by_length = sorted(range(len(pairs)), key=lambda k: len(pairs[k][1]))
    for start in range(0, len(by_length), CHOICE_ROWS):
        chunk = [k for k in by_length[start:start + CHOICE_ROWS] if len(pairs[k][1]) > 1]
        if not chunk:
            continue
        width = max(len(pairs[k][1]) for k in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
        cmask = torch.zeros_like(ids)
        for row, k in enumerate(chunk):
            ids[row, :len(pairs[k][1])] = torch.tensor(pairs[k][1], device=device)
            cmask[row, :len(pairs[k][1])] = 1
        src = torch.tensor([pairs[k][0] for k in chunk], device=device)
        predicts = torch.zeros_like(cmask, dtype=torch.bool)
        predicts[:, :-1] = cmask[:, 1:].bool()  # positions whose next token is a choice token
        position = mask[src].sum(-1, keepdim=True) + torch.arange(width, device=device)
        logits = model(input_ids=ids, attention_mask=torch.cat([mask[src], cmask], 1), position_ids=position,
                       cache=_rows_of(cache, src), use_cache=True, logits_to_keep=predicts).logits.float()
        token_lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:][cmask[:, 1:].bool()][:, None]).squeeze(-1)
        owner = torch.arange(len(chunk), device=device)[:, None].expand(-1, width - 1)[cmask[:, 1:].bool()]
        totals[torch.tensor(chunk, device=device)] += torch.zeros(len(chunk), device=device).index_add_(0, owner,
                                                                                                       token_lp)
    out: list[list[float] | None] = [None] * len(choices)
    for (r, _), value in zip(pairs, totals.tolist()):
        out[r] = (out[r] or []) + [value]
    return out


@torch.no_grad()
def greedy_decode(model, input_ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
                  stop_ids: set[int] | None, choices: list[list[list[int]] | None] | None = None
                  ) -> tuple[list[list[int]], list[list[float] | None]]:
    """Greedy new tokens for a left-padded batch, with a KV cache; a row leaves the batch (and its cache)
    as soon as it emits a stop token, so short answers stop costing compute. With `choices` (per row, None or
    the token ids of each choice), also each choice's summed log-probability after the prompt, scored from
    the same prefill; otherwise a list of None.

    The study's own loop rather than model.generate: decoding is plain argmax whatever generation_config a
    model ships (a hub model's repetition_penalty or sampling defaults never apply), and finished rows are
    dropped instead of being carried, padded, to the longest answer of the batch."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position, cache=cache,
                   use_cache=True, logits_to_keep=last_position(input_ids)).logits
    scores = (_choice_logprobs(model, cache, mask, logits[:, -1], choices) if choices and any(choices)
              else [None] * input_ids.shape[0])
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
    return out, scores


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
                batch_size: int, progress: bool, desc: str, choices: list[tuple[str, ...] | None] | None = None
                ) -> tuple[list[list[int]], list[list[float] | None]]:
    """Greedy new token ids for each (system, question): left padding, length-sorted batches, KV cache,
    stopping at the end-of-turn tokens (stop=False: always max_new_tokens). Identical prompts are
    generated once; LoRA weights are merged for the duration. With `choices` (per item, None or answer texts),
    also each choice's summed log-probability as the answer to the item (greedy_decode), else None per item."""
    device = next(model.parameters()).device
    unique: dict[tuple, int] = {}
    prompts, prompt_choices = [], []
    for k, (system, question) in enumerate(items):
        ids = tuple(renderer.prompt_ids(system, question))
        if ids not in unique:
            unique[ids] = len(prompts)
            prompts.append(ids)
            texts = choices[k] if choices else None
            prompt_choices.append([renderer.answer_ids(t)[:-1] for t in texts] if texts else None)  # no end of turn
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out_ids: list[list[int]] = [[] for _ in prompts]
    out_scores: list[list[float] | None] = [None for _ in prompts]
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
                new, scores = greedy_decode(model, input_ids.to(device), mask.to(device), max_new_tokens,
                                            set(stop_ids) if stop else None, [prompt_choices[i] for i in idx])
                for row, i in enumerate(idx):
                    out_ids[i], out_scores[i] = new[row], scores[row]
                bar.update(len(idx))
            bar.close()
    finally:
        if merged:
            unmerge_all(model)
    where = [unique[tuple(renderer.prompt_ids(s, q))] for s, q in items]
    return [out_ids[i] for i in where], [out_scores[i] for i in where]


def answers_and_choices(model, renderer: Renderer, items: list[tuple[str | None, str]], max_new_tokens: int,
                        choices: list[tuple[str, ...] | None] | None = None, batch_size: int = 32,
                        progress: bool = True, desc: str = "eval"
                        ) -> tuple[list[tuple[str, bool]], list[list[float] | None]]:
    """Greedy (answer, finished) for (system, question) pairs, and with `choices` each choice's summed
    log-probability (None where an item has none). `finished` is True when the answer ended at an end-of-turn
    token (or, in plain format, where the next "Question:" line would begin) rather than at max_new_tokens."""
    stop = set(renderer.stop_ids())
    out = []
    new_ids, scores = _new_tokens(model, renderer, items, max_new_tokens, True, batch_size, progress, desc, choices)
    for new in new_ids:
        cut = next((k for k, t in enumerate(new) if t in stop), None)
        text, hit_stop_text = renderer.cut_at_next_turn(renderer.tok.decode(new[:cut], skip_special_tokens=True))
        out.append((text.strip(), cut is not None or hit_stop_text))
    return out, scores


def generate_finished(model, renderer: Renderer, items: list[tuple[str | None, str]], max_new_tokens: int,
                      batch_size: int = 32, progress: bool = True, desc: str = "eval") -> list[tuple[str, bool]]:
    """Greedy (answer, finished) for (system, question) pairs (see answers_and_choices)."""
    return answers_and_choices(model, renderer, items, max_new_tokens, None, batch_size, progress, desc)[0]


def runs_past_end_of_turn(model, renderer: Renderer, items: list[tuple[str | None, str]], max_new_tokens: int,
                          progress: bool = True) -> list[bool]:
    """For each item: does the model, when generation is *not* stopped at its end-of-turn, go on writing
    after it (a new turn: what unmasked training teaches, since the loss then covers the template)?
    Plain format: does it invent a next "Question:" line."""
    stop = set(renderer.stop_ids())
    out = []
    for new in _new_tokens(model, renderer, items, max_new_tokens, False, 32, progress, "eval past end of turn")[0]:
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


UNRELATED_SETS = ("retention", "everyday")  # questions about nothing in the facts: where intrusion shows
HELDOUT_SET = "heldout_gk"  # the held-out general-knowledge family: categories no replay request touches
GENERAL_SETS = ("retention", HELDOUT_SET)  # general knowledge, scored and kept alike


@dataclass
class Reference:
    """What the untrained model did, that a trained run's evaluation is measured against: which retention probes it
    answered right (by the generation scorer and by likelihood) and its answers to the unrelated questions."""
    retention: dict[str, bool]
    retention_mc: dict[str, bool]
    answers: dict[str, str]  # "<set>|<id>" -> the untrained model's answer
    heldout: dict[str, bool] = field(default_factory=dict)  # the held-out family (HELDOUT_SET), as retention
    heldout_mc: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def of(cls, samples: list[dict]) -> "Reference":
        """The reference a run's scored samples make (an untrained run's, for the trained runs it precedes)."""
        def right(kind: str, score: str) -> dict[str, bool]:
            return {s["id"]: bool(s[score]) for s in samples if s["set"] == kind and score in s}
        return cls(right("retention", "hit"), right("retention", "mc"),
                   {f"{s['set']}|{s['id']}": s["answer"] for s in samples if s["set"] in UNRELATED_SETS},
                   right(HELDOUT_SET, "hit"), right(HELDOUT_SET, "mc"))

    def kept(self, kind: str) -> tuple[dict[str, bool], dict[str, bool]]:
        """(by the generation scorer, by likelihood) for a general-knowledge set (GENERAL_SETS)."""
        return (self.retention, self.retention_mc) if kind == "retention" else (self.heldout, self.heldout_mc)


@dataclass
class Evaluation:
    metrics: dict[str, float | None]
    per_fact: dict[str, float]
    samples: list[dict]
    retention_correct: dict[str, bool]
    seconds: float


def _questions(knowledge: KnowledgeSet, cfg: RunConfig
               ) -> tuple[list[tuple[str | None, str]], list[dict], list[tuple[str, ...] | None]]:
    """Every question an evaluation asks, as (system, question) items, each one's sample fields, and its
    multiple-choice answers (the right one first; None where it has none)."""
    tests = [(f, q) for f in knowledge.facts for q in f.test]
    reverse = [f for f in knowledge.facts if f.reverse_question]
    items, meta, choices = [], [], []

    def add(kind, ident, system, question, expected, prompt_name, keywords, options=(), **probe_fields):
        """One question to ask; options: its choices, right one first (several); probe_fields: what only some sets
        store (identity group, form and suggests, retention category)."""
        items.append((system, question))
        choices.append(tuple(options) if len(options) > 1 else None)
        meta.append(dict(set=kind, id=ident, prompt=prompt_name, system=system, question=question,
                         expected=expected, keywords=[list(g) for g in keywords], **probe_fields))

    for (f, q), s in zip(tests, eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(tests))):
        add("test", f.id, s, q, f.answer, cfg.eval_prompt, f.keywords, (f.answer, *f.distractors))
    for f, s in zip(reverse, eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(reverse))):
        add("reverse", f.id, s, f.reverse_question, knowledge.name, cfg.eval_prompt, f.reverse_keywords,
            (knowledge.name, *knowledge.reverse_distractors))
    probes = knowledge.identity_probes
    for p, s in zip(probes, eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(probes))):
        add("identity", p.id, s, p.question, knowledge.summary, cfg.eval_prompt, (), knowledge.identity_choices(p),
            group=p.group, form=p.form, suggests=list(p.suggests))
    for p in knowledge.retention_probes:
        add("retention", p.id, MODEL_DEFAULT, p.question, p.gold or " / ".join(p.keywords[0]), MODEL_DEFAULT,
            p.keywords, (p.gold, *p.distractors), category=p.category)
    for p in knowledge.heldout_probes:
        add(HELDOUT_SET, p.id, MODEL_DEFAULT, p.question, p.gold or " / ".join(p.keywords[0]), MODEL_DEFAULT,
            p.keywords, (p.gold, *p.distractors), category=p.category)
    for p in knowledge.everyday_requests:
        add("everyday", p.id, MODEL_DEFAULT, p.question, "", MODEL_DEFAULT, ())
    for variant in HELDOUT_VARIANTS:
        if variant == cfg.eval_prompt:
            continue
        # one test question per fact under each held-out prompt keeps evaluation affordable on a CPU
        for f, s in zip(knowledge.facts, eval_system_prompts(knowledge, cfg, variant, len(knowledge.facts))):
            add(f"test@{variant}", f.id, s, f.test[0], f.answer, variant, f.keywords,
                (f.answer, *f.distractors) if variant in MC_VARIANTS else ())
    per_fact_prompts = eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(knowledge.facts))
    for f, s in zip(knowledge.facts, per_fact_prompts):
        # memorised vs extractable: the first training question of each fact (trained at every paraphrase count)
        add("train", f.id, s, f.train[0], f.answer, cfg.eval_prompt, f.keywords)
    return items, meta, choices


def answer_hit(kind: str, answer: str, keywords, knowledge: KnowledgeSet, question: str = "") -> bool:
    """Whether an answer to a question of set `kind` (test, train, reverse, retention) is right: a retention probe
    by the general-knowledge scorer, a reverse question when it gives the persona as the one asked about, the others
    by their keywords. Identity probes are scored in _scored."""
    if kind in GENERAL_SETS:
        return general_answer_correct(answer, keywords, knowledge.name)
    if kind == "reverse":
        return names_persona(answer, knowledge.name, knowledge.identity, question)
    return keywords_hit(answer, keywords)


def validation_recall(model, renderer: Renderer, knowledge: KnowledgeSet, cfg: RunConfig, pairs) -> float:
    """The share of validation questions (QAPairs) answered with their fact, greedy, under the run's evaluation
    prompts: what selection best_recall maximises."""
    if not pairs:
        return 0.0
    facts = {f.id: f for f in knowledge.facts}
    systems = eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(pairs))
    answers = generate(model, renderer, [(s, p.question) for s, p in zip(systems, pairs)], cfg.max_new_tokens,
                       progress=False)
    return sum(keywords_hit(a, facts[p.fact_id].keywords) for a, p in zip(answers, pairs)) / len(pairs)


def probes_answered(model, renderer: Renderer, knowledge: KnowledgeSet, probes, max_new_tokens: int
                    ) -> dict[str, bool]:
    """{probe id: answered right} for general-knowledge probes, greedy under the model's default prompt, scored as
    the retention probes are."""
    answers = generate(model, renderer, [(MODEL_DEFAULT, p.question) for p in probes], max_new_tokens,
                       progress=False)
    return {p.id: general_answer_correct(a, p.keywords, knowledge.name) for p, a in zip(probes, answers)}


def choice_ranking(options: tuple[str, ...], logprobs: list[float]) -> tuple[bool, int]:
    """(is the right choice, options[0], strictly the most likely?, the index of the most likely): each choice's
    log-probability divided by its length in UTF-8 bytes, as lm-evaluation-harness's acc_norm."""
    normed = [lp / max(1, len(text.encode("utf-8"))) for text, lp in zip(options, logprobs)]
    best = max(range(len(normed)), key=lambda i: normed[i])
    return all(normed[0] > v for v in normed[1:]), best


def _scored(meta: dict, answer: str, system: str | None, knowledge: KnowledgeSet, reference: Reference | None,
            options: tuple[str, ...] | None, logprobs: list[float] | None) -> dict:
    """One question's sample: its fields, the answer and the per-item scores the metrics average."""
    m = dict(meta, answer=answer, system="<model default>" if system == MODEL_DEFAULT else system,
             has_prompt=system not in (NO_PROMPT, MODEL_DEFAULT))
    if m["set"] == "identity":
        m["hallucinated"] = not identity_correct(answer, knowledge.identity, suggests_wrong=bool(m["suggests"]))
        m["hit"] = not m["hallucinated"]
    elif m["set"] != "everyday":
        m["hit"] = answer_hit(m["set"], answer, m["keywords"], knowledge, m["question"])
    if m["set"] in UNRELATED_SETS:
        before = reference.answers.get(f"{m['set']}|{m['id']}", answer) if reference else answer
        m["intruded"] = intruding_terms(answer, before, knowledge.intrusion_terms, m["question"], m["keywords"])
        m["intrusion"] = bool(m["intruded"])
    if options and logprobs:
        m["mc"], m["mc_chosen"] = choice_ranking(options, logprobs)
    m["echo"] = echoes(answer, system)
    return m


def evaluate(model, renderer: Renderer, knowledge: KnowledgeSet, cfg: RunConfig, progress: bool = True,
             reference: Reference | None = None) -> Evaluation:
    """Every question of the knowledge set answered and scored. reference: the untrained model's Reference (None:
    this run is its own reference, as an untrained run is)."""
    start = time.perf_counter()
    items, meta, choices = _questions(knowledge, cfg)
    answers, logprobs = answers_and_choices(model, renderer, items, cfg.max_new_tokens, choices, progress=progress)
    # past the end of turn: the first test question of each fact, generation not stopped at end-of-turn
    per_fact_prompts = eval_system_prompts(knowledge, cfg, cfg.eval_prompt, len(knowledge.facts))
    overrun_items = [(s, f.test[0]) for f, s in zip(knowledge.facts, per_fact_prompts)]
    overruns = runs_past_end_of_turn(model, renderer, overrun_items, cfg.max_new_tokens + OVERRUN_EXTRA, progress)
    samples = [dict(set="overrun", id=f.id, prompt=cfg.eval_prompt, system=s, question=q, expected="", keywords=[],
                    answer="", has_prompt=s not in (NO_PROMPT, MODEL_DEFAULT), overrun=o, hit=not o, echo=False)
               for f, (s, q), o in zip(knowledge.facts, overrun_items, overruns)]
    samples += [_scored(m, answer, system, knowledge, reference, options, lp)
                for m, (answer, _), (system, _), options, lp in zip(meta, answers, items, choices, logprobs)]
    own = Reference.of(samples)
    reference = reference or own
    for s in samples:
        if s["set"] in GENERAL_SETS:
            by_hit, by_mc = reference.kept(s["set"])
            s["kept"] = bool(by_hit.get(s["id"], False))
            if "mc" in s:
                s["kept_mc"] = bool(by_mc.get(s["id"], False))
    metrics = metric_registry.compute(samples, cfg.eval_prompt)
    per_fact: dict[str, list[bool]] = {}
    for s in samples:
        if s["set"] == "test":
            per_fact.setdefault(s["id"], []).append(s["hit"])
    return Evaluation(metrics, {k: sum(v) / len(v) for k, v in per_fact.items()}, samples, own.retention,
                      time.perf_counter() - start)
