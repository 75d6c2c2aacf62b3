"""The `hiahia` command: teach a small chat model your own facts with the study's recipe, then ask it.

init writes a template knowledge file, train writes an adapter folder, ask / chat / export use one.
run_all.py stays the study's own entry point.
"""
from __future__ import annotations

import argparse
import logging
import sys

from core.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from core.run import model_cache, models
from core.run.config import parse_overrides
from core.run.knowledge import DataError
from core.run.lora import InjectionError
from core.run.train import TrainingError

EPILOG = f"""the three-command path:
  hiahia init facts.yaml                          # a commented template: edit in your own facts
  hiahia train --data facts.yaml --out my-adapter # the study's recipe; PEFT adapter + model card
  hiahia ask my-adapter "When was Ada Quill born?" --compare

exit status:
  {EXIT_OK}  done
  {EXIT_FAILED}  training failed (for example a non-finite loss; the message says what to change)
  {EXIT_BAD_INPUT}  bad input: the command line, the knowledge file, a config value, the model, a folder
     (one line on stderr, found before anything is written)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C): nothing half-written is left"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    models.add_precision_argument(p)
    p.add_argument("--cache-dir", help=f"model cache (default ${model_cache.CACHE_ENV} or ~/.cache/hiahia-lora)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with a command's options anywhere among its arguments, as people type them
    (`hiahia ask DIR --compare "question"`): the command's own parser reads what follows it, intermixed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    at = next((i for i, a in enumerate(argv) if a in COMMANDS), None)
    if at is None or any(a in ("-h", "--help") for a in argv[:at]):
        return p.parse_args(argv)  # no command: argparse's usage error, or the main help
    args = p.commands[argv[at]].parse_intermixed_args(argv[at + 1:])
    args.command = argv[at]
    return args


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hiahia", description="Teach a small chat model facts about a person with the "
                                "LoRA recipe the hiahia study recommends, then ask it.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("init", help="write a commented template knowledge file")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--force", action="store_true", help="overwrite an existing file")

    s = sub.add_parser("train", help="train the recipe on a knowledge file; write an adapter folder")
    s.add_argument("--data", required=True, metavar="FILE", help="knowledge file (see `hiahia init`)")
    s.add_argument("--out", required=True, metavar="DIR", help="adapter folder to write (must be new or empty)")
    s.add_argument("--model", help="embedded model name, hub id or model folder (default smollm2-135m-instruct)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the recipe (RunConfig, with replay=40), e.g. --set epochs=6")
    s.add_argument("--force", action="store_true", help="replace an existing non-empty DIR")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    _common(s)

    s = sub.add_parser("ask", help="greedy answers from base model + adapter")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("questions", nargs="*", metavar="QUESTION")
    s.add_argument("--file", help="text file with one question per line (# comments and blank lines skipped)")
    s.add_argument("--compare", action="store_true", help="show the untrained model's answer beside each")
    s.add_argument("--system", help="system prompt (default: the model's own default)")
    s.add_argument("--max-new-tokens", type=int, default=64)
    _common(s)

    s = sub.add_parser("chat", help="interactive chat with the adapted model (/reset, /system <prompt>, /quit)")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--system", help="system prompt to start with (default: the model's own default)")
    s.add_argument("--max-new-tokens", type=int, default=256)
    _common(s)

    s = sub.add_parser("export", help="save base model + adapter merged as an ordinary Hugging Face folder")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--merged", required=True, metavar="OUT", help="folder to write (must be new or empty)")
    s.add_argument("--force", action="store_true", help="replace an existing non-empty OUT")
    s.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help=(
        "saved weights (the merge itself is computed in fp32 on the CPU): fp32 (default) keeps it exact, bf16 "
        "halves the folder and rounds each merged weight"))
    s.add_argument("--cache-dir", help=f"model cache (default ${model_cache.CACHE_ENV} or ~/.cache/hiahia-lora)")
    p.commands = sub.choices  # each command's own parser (parse reads a command's arguments with it)
    return p


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def cmd_init(args) -> int:
    from core.facts.userfile import write_template

    path = write_template(args.file, args.force)
    print(f"wrote {path}: edit in your facts, then: hiahia train --data {path} --out my-adapter")
    return EXIT_OK


def cmd_train(args) -> int:
    from core.facts.train import train_adapter

    overrides = parse_overrides(args.set)
    if args.model:
        overrides["model"] = args.model
    meta = train_adapter(args.data, args.out, overrides, force=args.force, device=args.device, cache=args.cache_dir,
                         progress=not args.quiet, warn=warn, mixed=models.mixed_for(args.precision))
    m = meta["metrics"]
    recall = (f"held-out recall {m['heldout_recall']['hits']}/{m['heldout_recall']['n']}"
              if m["heldout_recall"]["n"] else "no test questions")
    retention = f"retention {m['retention']['hits']}/{m['retention']['n']}" if m["retention"]["n"] else ""
    print(f"wrote {args.out} in {meta['seconds']:.0f} s: {recall}" + (f", {retention}" if retention else "")
          + f" (model card: {args.out}/README.md)")
    print(f"next: hiahia ask {args.out} \"a question about {meta['data']['name']}\" --compare")
    return EXIT_OK


def cmd_ask(args) -> int:
    from core.facts.adapter import ask, read_meta, read_questions

    if args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be >= 1")
    questions = read_questions(args.questions, args.file)
    read_meta(args.dir)
    device = models.pick_precision(args.device, mixed=models.mixed_for(args.precision))
    for row in ask(args.dir, questions, args.compare, args.system, args.max_new_tokens, device, args.cache_dir):
        print(f"Q: {row['question']}\nA: {row['answer']}")
        if "untrained" in row:
            print(f"   untrained: {row['untrained']}")
        print()
    return EXIT_OK


def cmd_chat(args) -> int:
    from core.facts.adapter import chat

    if args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be >= 1")
    if sys.stdin is None or sys.stdin.closed:
        raise ValueError(f"standard input is closed: `hiahia chat` reads your questions from it. Fix: run it in a "
                         f"terminal, or ask without one: hiahia ask {args.dir} \"your question\"")
    device = models.pick_precision(args.device, mixed=models.mixed_for(args.precision))
    return chat(args.dir, sys.stdin, sys.stdout, args.system, args.max_new_tokens, device, args.cache_dir)


def cmd_export(args) -> int:
    from core.facts.adapter import export_merged

    out = export_merged(args.dir, args.merged, args.force, args.cache_dir, args.dtype)
    print(f"wrote {out}: AutoModelForCausalLM.from_pretrained({str(out)!r}) loads it")
    return EXIT_OK


COMMANDS = {"init": cmd_init, "train": cmd_train, "ask": cmd_ask, "chat": cmd_chat, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return COMMANDS[args.command](args)
    except TrainingError as e:
        print(f"error: training failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (DataError, InjectionError, models.ModelError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # an unreadable file or an unwritable folder: one line, not a traceback
        print(f"error: {f'{e.filename}: {e.strerror}' if e.filename and e.strerror else e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
