"""An adapter folder written by `hiahia train`, loaded again: base model + adapter for `ask` (batched greedy
answers), `chat` (streamed, multi-turn) and `export` (the adapter merged into an ordinary model folder).
"""
from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from core.facts.folder import META, CommandError, check_out, clean_stale, install, temp_beside
from core.run import models
from core.run.evaluate import generate, last_position
from core.run.examples import MODEL_DEFAULT, Renderer
from core.run.knowledge import utf8_text
from core.run.lora import load_peft, lora_modules, merge_all


@dataclass
class Adapted:
    model: object
    tok: object
    renderer: Renderer
    meta: dict
    folder: Path


def read_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    for name in ("adapter_config.json", "adapter_model.safetensors", META):
        if not (folder / name).is_file():
            raise CommandError(f"{folder}: not an adapter folder written by `hiahia train` (no {name}). Fix: pass "
                               f"the --out folder of `hiahia train`")
    try:
        meta = json.loads(utf8_text(folder / META, (folder / META).read_bytes()))
        meta["model"], meta["format"]
    except (ValueError, KeyError, TypeError):
        raise CommandError(f"{folder / META}: unreadable or incomplete. Fix: train the folder again") from None
    check_adapter_files(folder)
    return meta


def load_base(folder: str | Path, device: str | models.Precision = "cpu", cache=None) -> Adapted:
    """The untrained base model of an adapter folder (no adapter yet: see attach)."""
    folder = Path(folder)
    meta = read_meta(folder)
    model, tok = models.load(meta["model"], device=device, cache=cache)
    return Adapted(model, tok, Renderer(tok, meta["format"]), meta, folder)


RETRAIN = "train the folder again with `hiahia train` (or copy it again from where it was whole)"


def check_adapter_files(folder: Path) -> None:
    """adapter_config.json parses and adapter_model.safetensors has a whole header and all the bytes it announces,
    before any model is loaded; a damaged one is one CommandError naming the file."""
    from safetensors import SafetensorError, safe_open

    config = folder / "adapter_config.json"
    try:
        json.loads(utf8_text(config, config.read_bytes()))
    except json.JSONDecodeError as e:
        raise CommandError(f"{config}: damaged (not JSON at line {e.lineno}, column {e.colno}: {e.msg}). "
                           f"Fix: {RETRAIN}") from None
    weights = folder / "adapter_model.safetensors"
    try:
        with safe_open(str(weights), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise CommandError(f"{weights}: damaged ({str(e).strip().splitlines()[0]}). Fix: {RETRAIN}") from None


def attach(adapted: Adapted) -> Adapted:
    """The adapter's weights on the base model (its files were checked by read_meta); files that do not fit each
    other or the model are one CommandError."""
    try:
        load_peft(adapted.model, adapted.folder)
    except (KeyError, TypeError, ValueError) as e:
        raise CommandError(f"{adapted.folder}: the adapter files do not fit together or this model "
                           f"({e.args[0] if e.args else e}). Fix: {RETRAIN}") from None
    return adapted


def load_adapted(folder: str | Path, device: str | models.Precision = "cpu", cache=None) -> Adapted:
    return attach(load_base(folder, device, cache))


def read_questions(questions: list[str], file: str | None) -> list[str]:
    out = [q.strip() for q in questions if q.strip()]
    if file:
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"--file {path}: file not found. Fix: give a text file with one question per line")
        out += [line.strip() for line in utf8_text(path, path.read_bytes()).splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    if not out:
        raise CommandError("no question given. Fix: hiahia ask DIR \"your question\" (or --file questions.txt, "
                           "one question per line)")
    return out


def ask(folder: str | Path, questions: list[str], compare: bool = False, system: str | None = None,
        max_new_tokens: int = 64, device: str = "cpu", cache=None, progress: bool = False) -> list[dict]:
    """Batched greedy answers of base + adapter ({question, answer}); with compare, also the untrained
    model's answer (`untrained`), from the same loaded weights before the adapter is attached."""
    adapted = load_base(folder, device, cache)
    items = [(system if system is not None else MODEL_DEFAULT, q) for q in questions]
    before = generate(adapted.model, adapted.renderer, items, max_new_tokens, progress=progress,
                      desc="untrained") if compare else None
    attach(adapted)
    answers = generate(adapted.model, adapted.renderer, items, max_new_tokens, progress=progress, desc="answers")
    return [dict(question=q, answer=a, **({"untrained": before[i]} if compare else {}))
            for i, (q, a) in enumerate(zip(questions, answers))]


# ---- chat --------------------------------------------------------------------------------------

class Stream:
    """Writes a reply to `out` as its tokens arrive: the decoded text so far, less what was written, less a
    tail that could still be an incomplete character or the start of `cut` (plain format: an invented next
    "Question:" line, where the reply ends)."""

    def __init__(self, tok, out, cut: str | None = None):
        self.tok, self.out, self.cut, self.written, self.text = tok, out, cut, 0, ""

    def update(self, new_ids: list[int]) -> bool:
        """Write what is ready; True when the reply has reached `cut` and generation should stop."""
        self.text = self.tok.decode(new_ids, skip_special_tokens=True)
        if self.cut and self.cut in self.text:
            self.text = self.text.split(self.cut, 1)[0]
            self._write(len(self.text))
            return True
        ready = len(self.text.rstrip("\ufffd")) if self.text.endswith("\ufffd") else len(self.text)
        self._write(ready - (len(self.cut) if self.cut else 0))
        return False

    def end(self) -> None:
        self._write(len(self.text))

    def _write(self, upto: int) -> None:
        if upto > self.written:
            self.out.write(self.text[self.written:upto])
            self.out.flush()
            self.written = upto


@torch.no_grad()
def stream_greedy(model, ids: list[int], max_new_tokens: int, stop: set[int], stream: Stream) -> list[int]:
    """Greedy decoding one token at a time with a KV cache (plain argmax, whatever generation_config the
    model ships), each token passed to the stream; returns the reply's token ids."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    device = next(model.parameters()).device
    inputs = torch.tensor([ids], device=device)
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(model(input_ids=inputs, cache=cache, use_cache=True, logits_to_keep=last_position(inputs)).logits[0, -1].argmax())
        if token in stop:
            break
        new.append(token)
        if stream.update(new):
            break
        inputs = torch.tensor([[token]], device=device)
    stream.end()
    return new


def render_conversation(renderer: Renderer, system: str | None, turns: list[tuple[str, str]], question: str
                        ) -> list[int]:
    """Token ids of the conversation so far plus the new question, ready for the model's reply."""
    if renderer.fmt == "plain":
        text = f"{system}\n\n" if system else ""
        text += "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in turns) + f"Question: {question}\nAnswer:"
        return renderer.tok(text)["input_ids"]
    messages = [{"role": "system", "content": system}] if system else []
    for q, a in turns:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": question})
    text = renderer.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return renderer.tok(text, add_special_tokens=False)["input_ids"]


CHAT_HELP = "/reset clears the conversation, /system <prompt> sets the system prompt (/system alone: the model's " \
            "default), /quit ends"


@torch.no_grad()
def chat_loop(adapted: Adapted, input=None, output=None, system: str | None = None, max_new_tokens: int = 256
              ) -> int:
    """Read questions line by line from `input`, stream greedy replies to `output`, until /quit or end of input."""
    input, output = input or sys.stdin, output or sys.stdout
    model, renderer = adapted.model, adapted.renderer
    merge_all(model)  # one merged forward per token: the adapter costs nothing while chatting
    model.eval()
    stop = set(renderer.stop_ids())
    limit = max(16, (getattr(model.config, "max_position_embeddings", None) or 2048) - max_new_tokens)
    turns: list[tuple[str, str]] = []
    output.write(f"chat with {adapted.meta['data']['name']} facts on {adapted.meta['model']} ({CHAT_HELP})\n")
    while True:
        output.write("> ")
        output.flush()
        line = input.readline()
        if not line:
            output.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return 0
        if text == "/reset":
            turns = []
            output.write("(conversation cleared)\n")
            continue
        if text == "/system" or text.startswith("/system "):
            system = text[len("/system"):].strip() or None
            output.write(f"(system prompt: {system or 'the model default'})\n")
            continue
        if text.startswith("/"):
            output.write(f"(unknown command {text.split()[0]}: {CHAT_HELP})\n")
            continue
        ids = render_conversation(renderer, system, turns, text)
        while len(ids) > limit and turns:  # keep the newest turns that fit the context window
            turns = turns[1:]
            ids = render_conversation(renderer, system, turns, text)
        stream = Stream(renderer.tok, output, renderer.NEXT_TURN if renderer.fmt == "plain" else None)
        stream_greedy(model, ids, max_new_tokens, stop, stream)
        reply = stream.text.strip()
        output.write("\n")
        turns.append((text, reply))


def chat(folder: str | Path, input=None, output=None, system: str | None = None, max_new_tokens: int = 256,
         device: str = "cpu", cache=None) -> int:
    return chat_loop(load_adapted(folder, device, cache), input, output, system, max_new_tokens)


# ---- export ------------------------------------------------------------------------------------

EXPORT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def export_merged(folder: str | Path, out: str | Path, force: bool = False, cache=None, dtype: str = "fp32") -> Path:
    """Base + adapter merged and saved as an ordinary Hugging Face folder (written beside `out`, renamed in).

    The merge is done on the CPU in fp32 whatever --precision says: added to bf16 weights, the adapter's change
    would be rounded to bf16's 8 bits. `dtype` is that of the saved weights: fp32 keeps the merge as computed,
    bf16 halves the folder and rounds each merged weight once."""
    out = Path(out)
    read_meta(folder)
    check_out(out, force)
    adapted = load_adapted(folder, models.Precision(torch.device("cpu"), torch.float32, None), cache)
    model = adapted.model
    merge_all(model)
    model.to(EXPORT_DTYPES[dtype])
    for name, m in lora_modules(model).items():  # put the merged plain Linear layers back in place
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, m.base)
    for p in model.parameters():
        p.requires_grad_(False)
    clean_stale(out)
    tmp = temp_beside(out)
    try:
        model.save_pretrained(tmp)
        adapted.tok.save_pretrained(tmp)
        install(tmp, out, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
