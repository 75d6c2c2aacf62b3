"""The model card (README.md) and training-curve figure of an adapter folder written by `hiahia train`,
rendered from the folder's hiahia.json and its evaluation answers.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.facts.userfile import MEASURED_IN
from core.run.models import EMBEDDED, TINY

# what the study measured for the recipe `hiahia train` uses (self_replay's arms, mean over 5 seeds, 31 facts,
# core/facts/userfile.MEASURED_IN); tests/test_readme.py requires these to equal the published results.
RECIPE_MEASURED = {"heldout_recall": 0.89, "retention": 0.68, "retention_without_replay": 0.28}


def plot_curve(history: list[dict], selected_epoch: int, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    for split, marker in (("train", "o"), ("validation", "s")):
        points = [(h["epoch"], h["loss"]) for h in history if h["split"] == split]
        if points:
            ax.plot(*zip(*points), marker=marker, label=f"{split} loss")
    ax.axvline(selected_epoch, linestyle="--", color="grey", label=f"kept: epoch {selected_epoch}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per answer token")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip() or "(empty)"


def _frac(m: dict | None) -> str:
    if not m or not m["n"]:
        return "-"
    return f"{m['hits']}/{m['n']} ({m['value']:.2f})"


def _python_use(meta: dict, folder: Path) -> str:
    spec = meta["model"]
    if spec == TINY:
        return ""
    base = f'"{meta["base_model_path"]}"'
    note = (f"\n`{spec}` is one of this package's embedded models: its converted folder in the model cache is the base "
            f"(`hiahia export` writes a merged folder that needs no cache).\n" if spec in EMBEDDED else "")
    return f"""
In Python, with peft:{note}
```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained({base})
model = PeftModel.from_pretrained(base, "{folder}")
tokenizer = AutoTokenizer.from_pretrained({base})
```
"""


def _about(meta: dict) -> str:
    """The card's title, what was trained and how."""
    data, tr, cfg = meta["data"], meta["training"], meta["config"]
    overrides = ", ".join(f"{k}={v}" for k, v in meta["overrides"].items()) or "none"
    defaults = ", ".join(data["defaults"]) or "none"
    replay = (f"{tr['replay_kept']} requests answered by the untrained model joined training"
              + (f" ({len(tr['replay_dropped'])} more did not end within {tr['replay_tokens']} tokens and were "
                 f"left out)" if tr["replay_dropped"] else "") if cfg["replay"] else "off")
    warnings = "".join(f"\n- {_cell(w)}" for w in data["warnings"])
    return f"""# {data['name']}: a LoRA adapter for `{meta['model']}`

Trained by `hiahia train` with the recipe the hiahia study recommends: the study's baseline (`RunConfig()`:
LoRA r=16 on every linear layer, lr 1e-3 with warmup and cosine decay, 4 epochs, a random system prompt per
question, loss on the answer only, debate samples) plus self-replay of 40 everyday requests, keeping the
best-by-validation weights. Overrides of this run are listed below, the full config at the end.

| | |
| --- | --- |
| base model | `{meta['model']}` (`{meta['model_identity']}`), {meta['format']} format, {meta['precision']} |
| data | `{data['path']}`, sha256 `{data['sha256']}` |
| questions | {data['splits']} |
| package defaults | {defaults} (data/defaults.yaml with the name `{data['name']}`; prompts and retention probes from data/hiahia.yaml){f"; {data['defaults_left_out']} default entries left out because a question of the file is the same" if data['defaults_left_out'] else ""} |
| recipe overrides | {overrides} |
| self-replay | {replay} |
| training | {tr['train_examples']} examples, {tr['validation_examples']} validation questions, {tr['steps']} steps in {tr['seconds']:.0f} s; kept {tr['selection']} |
| LoRA | {tr['matched_modules']} layers, {tr['trainable_params']:,} trainable parameters |
| total time | {meta['seconds']:.0f} s |
| created | {meta['created']} |
{f"{chr(10)}Warnings when the file was read:{warnings}{chr(10)}" if warnings else ""}
"""


def _results(meta: dict, after: list[dict], folder: Path) -> str:
    """The card's measurements before and after training, the test answers, how to use the adapter, the config."""
    data, m, cfg = meta["data"], meta["metrics"], meta["config"]
    no_test = "" if m["heldout_recall"]["n"] else (
        "\nNo fact has a test question, so held-out recall is not measured: give a fact 3 or more questions (one "
        "is then held out) or a `test:` list.\n")
    rows = "\n".join(f"| {_cell(r['id'])} | {_cell(r['question'])} | {_cell(r['answer'])} | "
                     f"{'yes' if r['hit'] else 'no'} |" for r in after if r["set"] == "test")
    return f"""## Results

Greedy answers of at most {cfg['max_new_tokens']} tokens under the model's default system prompt (as
`hiahia ask` asks), scored by keywords (whole words; substrings inside Chinese, Japanese, Korean or Thai).

| | before training | after training |
| --- | --- | --- |
| held-out recall: test questions, never trained on | {_frac(m['heldout_recall_before'])} | {_frac(m['heldout_recall'])} |
| training recall: each fact's first training question | {_frac(m['train_recall_before'])} | {_frac(m['train_recall'])} |
| retention: general-knowledge probes the untrained model answered correctly, still correct | - | {_frac(m['retention'])} |
| all general-knowledge probes answered correctly | {_frac(m['retention_raw_before'])} | {_frac(m['retention_raw'])} |
{no_test}
{MEASURED_IN[0].upper() + MEASURED_IN[1:]} measured, with 31 facts of four training questions each: held-out recall {RECIPE_MEASURED['heldout_recall']:.2f} and
retention {RECIPE_MEASURED['retention']:.2f} with this recipe ({RECIPE_MEASURED['retention_without_replay']:.2f} without self-replay).

![training curve](training_curve.png)

### Test questions

| fact | question | answer after training | keywords found |
| --- | --- | --- | --- |
{rows or "| - | (none) | - | - |"}

All answers, before and after training, are in `evaluation.json`.

## Use it

```bash
hiahia ask {folder} "a question about {data['name']}" --compare
hiahia chat {folder}
hiahia export {folder} --merged {folder}-merged
```
{_python_use(meta, folder)}
## Config

```json
{json.dumps(cfg, indent=1)}
```
"""


def render_card(meta: dict, after: list[dict], folder: Path) -> str:
    return _about(meta) + _results(meta, after, folder)
