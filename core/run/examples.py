"""The tokenised examples of one run: the chat or plain format, system prompts, label masking, the data design.

The knowledge they are built from is loaded and validated in core/run/knowledge.py.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

from core.run.config import MODEL_DEFAULT, RunConfig
from core.run.knowledge import DataError, Fact, KnowledgeSet

IGNORE = -100


NO_PROMPT = None  # no system prompt at all


class Renderer:
    """Turns (system, question[, answer]) into token ids for one tokenizer and format."""

    def __init__(self, tokenizer, fmt: str):
        self.tok = tokenizer
        self.fmt = fmt
        if fmt == "chat" and not getattr(tokenizer, "chat_template", None):
            raise DataError("format=chat but the tokenizer has no chat template; use --set format=plain for a base model")
        self.eot_id = self._end_of_turn_id()
        self._inserts_default = fmt == "chat" and self._template_inserts_default()

    def _chat(self, messages, generation: bool) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    def _template_inserts_default(self) -> bool:
        """True when the template writes a default system prompt of its own when given none.

        Compared with an explicitly empty system message, such a template's render carries extra text
        (SmolLM2, Qwen). Templates that have no default render the same or add only markup for the
        empty message (plain ChatML, or Gemma's folding of the system text into the first user turn)."""
        user = [{"role": "user", "content": "q"}]
        try:
            empty = self._chat([{"role": "system", "content": ""}, *user], True)
        except Exception:  # templates that reject a system role
            return False
        without = self._chat(user, True)
        head = len(os.path.commonprefix([without, empty]))
        tail = len(os.path.commonprefix([without[head:][::-1], empty[head:][::-1]]))
        return bool(without[head:len(without) - tail].strip())

    def _end_of_turn_id(self) -> int:
        if self.fmt == "chat":
            marker = "\x02"
            full = self._chat([{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], False)
            suffix_ids = self.tok(full.split(marker, 1)[1], add_special_tokens=False)["input_ids"]
            special = set(self.tok.all_special_ids) | set(getattr(self.tok, "added_tokens_decoder", {}) or {})
            for i in suffix_ids:
                if i in special:
                    return i
        return self.tok.eos_token_id

    def stop_ids(self) -> list[int]:
        return sorted({self.eot_id, self.tok.eos_token_id} - {None})

    NEXT_TURN = "\nQuestion:"  # plain format: where a model that does not stop would invent the next turn

    def cut_at_next_turn(self, answer: str) -> tuple[str, bool]:
        """Plain format: the answer up to an invented next "Question:" line, and whether one was cut.
        Chat format has its end-of-turn token instead; answers pass unchanged."""
        if self.fmt != "plain" or self.NEXT_TURN not in answer:
            return answer, False
        return answer.split(self.NEXT_TURN, 1)[0], True

    def prompt_text(self, system: str | None, question: str) -> str:
        if self.fmt == "plain":
            head = f"{system}\n\n" if system not in (None, MODEL_DEFAULT) else ""
            return f"{head}Question: {question}\nAnswer:"
        messages = [{"role": "user", "content": question}]
        if system is NO_PROMPT and self._inserts_default:
            messages.insert(0, {"role": "system", "content": ""})
        elif system not in (NO_PROMPT, MODEL_DEFAULT):
            messages.insert(0, {"role": "system", "content": system})
        return self._chat(messages, True)

    def prompt_ids(self, system: str | None, question: str) -> list[int]:
        text = self.prompt_text(system, question)
        # a chat template writes its own BOS text; plain text gets the tokenizer's usual specials
        return self.tok(text, add_special_tokens=self.fmt == "plain")["input_ids"]

    def answer_ids(self, answer: str) -> list[int]:
        text = " " + answer if self.fmt == "plain" else answer
        return self.tok(text, add_special_tokens=False)["input_ids"] + [self.eot_id]


@dataclass
class Example:
    kind: str  # fact | debate | replay
    source_id: str
    system: str | None
    question: str
    answer: str
    input_ids: list[int]
    labels: list[int]
    prompt_len: int = 0
    # the untrained model's next-token distribution at each labelled position (core/run/train.with_teacher):
    # (top-k token ids, their log-probabilities, the log of the probability left outside them); replay with distill
    teacher: tuple | None = None


def encode(renderer: Renderer, kind: str, source_id: str, system, question: str, answer: str, mask: bool) -> Example:
    p = renderer.prompt_ids(system, question)
    a = renderer.answer_ids(answer)
    labels = ([IGNORE] * len(p) if mask else list(p)) + a
    return Example(kind, source_id, system, question, answer, p + a, labels, prompt_len=len(p))


def train_system_prompt(knowledge: KnowledgeSet, cfg: RunConfig, rng: random.Random) -> str | None:
    if cfg.system_prompt == "fixed":
        return knowledge.prompt(cfg.fixed_prompt)
    if cfg.system_prompt == "none":
        return NO_PROMPT
    return rng.choice(knowledge.train_prompts)


RANDOM_VALIDATION_SHARE = 0.15  # split=random: the share of all question-answer pairs held out for validation


@dataclass(frozen=True)
class QAPair:
    fact_id: str
    question: str
    answer: str


def qa_pairs(knowledge: KnowledgeSet, cfg: RunConfig) -> tuple[list[QAPair], list[QAPair]]:
    """(training, validation) question-answer pairs of the facts under the run's data design.

    answers=canonical: every question of a fact has the fact's one answer sentence. answers=varied:
    training question i has wording i (the canonical answer is wording 0) and the validation question
    a wording no training question has. split=fixed: the file's training (first `paraphrases`) and
    validation questions. split=random: all of them pooled and a seeded ~15% drawn for validation, as
    a small training script would split a QA list, so facts lose different numbers of training wordings to
    validation (rarely all of them).
    """
    def wording(f: Fact, i: int) -> str:
        if cfg.answers == "canonical":
            return f.answer
        wordings = (f.answer, *f.answer_variants)
        if len(wordings) < len(f.train) + 1:
            raise DataError(f"{knowledge.path}: facts '{f.id}': field 'answer_variants': answers=varied needs "
                            f"{len(f.train)} variants (one wording per training and validation question). "
                            f"Fix: add them, or run with answers=canonical")
        return wordings[i]

    train = [QAPair(f.id, q, wording(f, i)) for f in knowledge.facts for i, q in enumerate(f.train[: cfg.paraphrases])]
    val = [QAPair(f.id, q, wording(f, len(f.train) + j)) for f in knowledge.facts for j, q in enumerate(f.validation)]
    if cfg.split == "random":
        pooled = train + val
        rng = random.Random(f"random-split-{cfg.seed}")
        held = set(rng.sample(range(len(pooled)), max(1, round(RANDOM_VALIDATION_SHARE * len(pooled)))))
        train = [p for i, p in enumerate(pooled) if i not in held]
        val = [p for i, p in enumerate(pooled) if i in held]
    return train, val


def build_train_examples(knowledge: KnowledgeSet, cfg: RunConfig, renderer: Renderer,
                         replay: list[tuple[str, str, str]] | None = None) -> list[Example]:
    """Fact (and debate) examples under the run's prompt policy; replay (id, question, answer) triples
    keep the model's default prompt, the one they were answered under."""
    rng = random.Random(f"train-prompts-{cfg.seed}")
    pairs = [("fact", p.fact_id, p.question, p.answer) for p in qa_pairs(knowledge, cfg)[0]]
    if cfg.debate:
        pairs += [("debate", d.id, d.question, d.answer) for d in knowledge.debate]
    out = [encode(renderer, kind, sid, train_system_prompt(knowledge, cfg, rng), q, a, cfg.mask_labels)
           for kind, sid, q, a in pairs]
    return out + [encode(renderer, "replay", rid, MODEL_DEFAULT, q, a, cfg.mask_labels) for rid, q, a in replay or []]


def build_validation_examples(knowledge: KnowledgeSet, cfg: RunConfig, renderer: Renderer) -> list[Example]:
    """Validation questions with answer-only labels, under the run's own prompt policy."""
    rng = random.Random(f"val-prompts-{cfg.seed}")
    return [encode(renderer, "fact", p.fact_id, train_system_prompt(knowledge, cfg, rng), p.question, p.answer, True)
            for p in qa_pairs(knowledge, cfg)[1]]


def eval_system_prompts(knowledge: KnowledgeSet, cfg: RunConfig, which: str, n: int) -> list[str | None]:
    """The system prompt for each of n evaluation questions under the named policy."""
    if which == "train":
        if cfg.system_prompt == "fixed":
            return [knowledge.prompt(cfg.fixed_prompt)] * n
        if cfg.system_prompt == "none":
            return [NO_PROMPT] * n
        return [knowledge.train_prompts[i % len(knowledge.train_prompts)] for i in range(n)]
    if which == MODEL_DEFAULT:
        return [MODEL_DEFAULT] * n
    if which == "none":
        return [NO_PROMPT] * n
    if which == "unseen":
        unseen = [knowledge.named_prompts[k] for k in knowledge.heldout_prompts]
        return [unseen[i % len(unseen)] for i in range(n)]
    return [knowledge.prompt(which)] * n
