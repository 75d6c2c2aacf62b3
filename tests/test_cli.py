"""The `hiahia` command on a user's own facts: init -> train -> ask -> chat -> export, the lenient knowledge file,
the adapter folder (PEFT layout, model card, atomic), and one-line errors."""
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.facts.cli import main
from core.facts.userfile import carve_counts, load_user_knowledge, write_template
from core.paths import ROOT
from core.run import recipe
from core.run.config import RunConfig
from core.run.knowledge import DEFAULT_DATA, load_knowledge


def _fact(i: int, n_questions: int = 2) -> dict:
    words = ["copper", "violet", "harbour", "lantern", "meadow", "saffron", "granite"]
    return {"id": f"f{i}", "answer": f"Ada Quill keeps a {words[i]} box.", "keywords": [[words[i]]],
            "questions": [f"What box does Ada Quill keep, question {i}-{k}?" if k == 0 else
                          f"Tell me variant {k} about the box number {i} of Ada Quill." for k in range(n_questions)]}


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")  # JSON is YAML
    return path


# ---- the knowledge file -----------------------------------------------------------------------

def test_recipe_is_the_baseline_plus_self_replay():
    from core.facts.train import RECIPE

    assert RunConfig().diff(RECIPE) == {"replay": (0, 40), "format": ("chat", "auto")}


@pytest.mark.parametrize("n, expected", [(1, (1, 0, 0)), (2, (2, 0, 0)), (3, (2, 0, 1)), (4, (2, 1, 1)),
                                         (5, (3, 1, 1)), (6, (4, 1, 1)), (7, (4, 1, 2)), (9, (4, 1, 4))])
def test_carved_splits_keep_training_wordings_first(n, expected):
    assert carve_counts(n) == expected


def test_init_template_trains_as_written_with_carved_splits_and_defaults(tmp_path):
    assert main(["init", str(tmp_path / "facts.yaml")]) == 0
    warnings = []
    uk = load_user_knowledge(tmp_path / "facts.yaml", warn=warnings.append)
    (fact,) = uk.ks.facts
    assert (len(fact.train), len(fact.validation), len(fact.test)) == (4, 1, 1) and uk.carved == [fact.id]
    assert uk.defaults == ["identity", "identity_probes", "debate", "system_prompts", "retention_probes"]
    assert all("Ada Quill" in d.question and "{name}" not in d.answer for d in uk.ks.debate)
    assert len(uk.ks.retention_probes) == len(load_knowledge().retention_probes)
    assert len(warnings) == 1 and "fewer than 5" in warnings[0]  # one fact; no near-duplicate among its questions
    again = load_user_knowledge(tmp_path / "facts.yaml")
    assert again.ks.facts == uk.ks.facts  # seeded
    assert load_user_knowledge(tmp_path / "facts.yaml", seed=1).ks.facts != uk.ks.facts


def test_study_file_loads_unchanged_in_lenient_mode():
    strict, lenient = load_knowledge(), load_user_knowledge(DEFAULT_DATA)
    assert lenient.ks.facts == strict.facts and lenient.ks.debate == strict.debate
    assert lenient.ks.identity_probes == strict.identity_probes and lenient.ks.sha256 == strict.sha256
    assert lenient.carved == [] and lenient.defaults == [] and lenient.warnings == []


def test_minimal_file_needs_only_name_and_facts(tmp_path):
    doc = {"name": "Ada Quill", "facts": [_fact(i) for i in range(5)]}
    doc["facts"][0]["questions"].append("Who is Ada Quill?")  # also a default identity probe: left out there
    warnings = []
    uk = load_user_knowledge(_write(tmp_path / "f.yaml", doc), warn=warnings.append)
    assert warnings == []
    assert uk.ks.summary == "Ada Quill is a person." and uk.left_out == 1
    assert "Who is Ada Quill?" not in [p.question for p in uk.ks.identity_probes]
    assert [len(f.train) for f in uk.ks.facts] == [2, 2, 2, 2, 2] and uk.ks.facts[0].test  # 3 questions: 1 held out


def test_few_facts_and_single_questions_warn_with_the_recall_to_expect(tmp_path):
    doc = {"name": "Ada Quill", "facts": [_fact(0, 1), _fact(1, 1)]}
    warnings = []
    load_user_knowledge(_write(tmp_path / "f.yaml", doc), warn=warnings.append)
    assert len(warnings) == 2
    from core.facts.userfile import MEASURED_IN
    from core.facts.userfile import RECALL_BY_WORDINGS as measured  # the study's numbers (test_readme checks them)

    # each warning names the edition its numbers come from, and that they are LoRA's without self-replay
    assert "fewer than 5" in warnings[0] and f"{MEASURED_IN} measured LoRA" in warnings[0]
    assert f"{measured[4]:.2f}, without self-replay" in warnings[0]
    assert "single question (f0, f1)" in warnings[1]
    assert f"in {MEASURED_IN} was {measured[1]:.2f} (two reworded questions {measured[2]:.2f}, four " \
           f"{measured[4]:.2f})" in warnings[1]


def test_chinese_facts_load_and_score(tmp_path):
    from core.run.scoring import keywords_hit

    doc = {"name": "李娜", "facts": [{"answer": "李娜出生于1987年。", "keywords": [["1987"]],
                                     "questions": ["李娜是哪一年出生的？", "李娜的出生年份是？", "请告诉我李娜生于何年。"]},
                                    {"answer": "李娜住在杭州市。", "keywords": [["杭州"]],
                                     "questions": ["李娜住在哪里？", "李娜的家在哪个城市？"]}]}
    uk = load_user_knowledge(_write(tmp_path / "zh.yaml", doc))
    assert [f.id for f in uk.ks.facts] == ["fact_1", "fact_2"] and len(uk.ks.facts[0].test) == 1
    assert uk.ks.debate[0].question == "李娜 is an AI, right?"
    assert keywords_hit("她住在杭州。", uk.ks.facts[1].keywords)


@pytest.mark.parametrize("change, where", [
    (lambda d: d.pop("name"), "field 'name': missing"),
    (lambda d: d["facts"][1].pop("keywords"), "facts 'f1': field 'keywords'"),
    (lambda d: d["facts"][1].update(answer="Ada Quill keeps a box."), "facts 'f1': field 'answer'"),
    (lambda d: d["facts"][1].pop("questions"), "facts 'f1': field 'questions': missing"),
    (lambda d: d["facts"][1].update(train=["A question?"]), "given together with train"),
    (lambda d: d.update(facts=[]), "field 'facts'"),
])
def test_bad_knowledge_file_is_one_line_and_exit_2_before_anything_is_written(tmp_path, error_line, change, where):
    doc = {"name": "Ada Quill", "facts": [_fact(i) for i in range(5)]}
    change(doc)
    path = _write(tmp_path / "f.yaml", doc)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "out"), "--model", "tiny-qwen2"]) == 2
    line = error_line()
    assert str(path) in line and where in line and "Fix:" in line
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_existing_folder_and_bad_recipe_values_are_refused(tmp_path, error_line):
    assert main(["train", "--data", str(tmp_path / "f.yaml"), "--out", str(tmp_path / "new")]) == 2
    assert "hiahia init" in error_line()
    write_template(tmp_path / "f.yaml")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    args = ["train", "--data", str(tmp_path / "f.yaml"), "--model", "tiny-qwen2"]
    assert main(args + ["--out", str(tmp_path / "out")]) == 2
    assert "exists and is not empty" in error_line() and (tmp_path / "out" / "keep.txt").exists()
    assert main(args + ["--out", str(tmp_path / "new"), "--set", "full_finetune=true"]) == 2
    assert "LoRA adapter" in error_line()
    assert main(args + ["--out", str(tmp_path / "new"), "--set", "lr=-1"]) == 2
    assert "lr" in error_line()
    assert main(["init", str(tmp_path / "f.yaml")]) == 2 and "--force" in error_line()
    assert main(["ask", str(tmp_path / "out"), "Who?"]) == 2 and "not an adapter folder" in error_line()


# ---- end to end on the tiny model -------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """init -> train on a saved tiny-qwen2 folder (a stand-in for a hub model), with a small replay budget."""
    from core.run import models

    root = tmp_path_factory.mktemp("cli")
    base = root / "tiny-base"
    model, tok = models.load("tiny-qwen2")
    model.save_pretrained(base)
    tok.save_pretrained(base)
    assert main(["init", str(root / "facts.yaml")]) == 0
    out = root / "adapter"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recipe, "REPLAY_TOKENS", 8)
        err = io.StringIO()
        mp.setattr(sys, "stderr", err)
        start = time.perf_counter()
        code = main(["train", "--data", str(root / "facts.yaml"), "--out", str(out), "--model", str(base),
                     "--set", "epochs=2", "--set", "lr=5e-3", "--quiet"])
    assert code == 0, err.getvalue()
    return {"root": root, "base": base, "out": out, "stderr": err.getvalue(), "seconds": time.perf_counter() - start}


def test_train_writes_peft_adapter_card_and_metadata_atomically(trained):
    out = trained["out"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                     "evaluation.json", "hiahia.json", "training_curve.png"]
    assert not [p for p in trained["root"].iterdir() if p.name.startswith(".adapter.")]
    meta = json.loads((out / "hiahia.json").read_text())
    data_sha = __import__("hashlib").sha256((trained["root"] / "facts.yaml").read_bytes()).hexdigest()
    assert meta["data"]["sha256"] == data_sha and meta["config"]["replay"] == 40
    assert meta["training"]["replay_kept"] + len(meta["training"]["replay_dropped"]) == 40
    assert meta["overrides"] == {"epochs": 2, "lr": 5e-3}
    card = (out / "README.md").read_text()
    for text in (str(trained["base"]), data_sha, "held-out recall", "retention", "training_curve.png",
                 "carved", '"epochs": 2', "fewer than 5"):
        assert text in card, text
    stderr = trained["stderr"]
    assert [f"[{i}/5]" in stderr for i in range(1, 6)] == [True] * 5 and "training:" in stderr


def _logits(model, tok):
    ids = tok("Ada Quill was born in 1991.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def test_adapter_loads_in_peft_with_the_same_logits_as_the_project_loader(trained):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from core.facts.adapter import load_adapted, load_base

    ours = load_adapted(trained["out"])
    plain = load_base(trained["out"])
    reference = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(trained["base"]), trained["out"])
    expected = _logits(ours.model, ours.tok)
    assert not torch.allclose(expected, _logits(plain.model, plain.tok), atol=1e-4)  # the adapter trained
    torch.testing.assert_close(_logits(reference.eval(), ours.tok), expected, atol=1e-5, rtol=1e-5)


def test_merged_export_loads_as_a_plain_model_with_the_same_logits(trained, capsys):
    from transformers import AutoModelForCausalLM

    from core.facts.adapter import load_adapted

    merged = trained["root"] / "merged"
    assert main(["export", str(trained["out"]), "--merged", str(merged)]) == 0
    assert "from_pretrained" in capsys.readouterr().out
    ours = load_adapted(trained["out"])
    plain = AutoModelForCausalLM.from_pretrained(merged)
    torch.testing.assert_close(_logits(plain, ours.tok), _logits(ours.model, ours.tok), atol=1e-5, rtol=1e-5)
    assert main(["export", str(trained["out"]), "--merged", str(merged)]) == 2  # exists: --force to replace


def test_export_merges_in_fp32_whatever_the_precision_and_saves_the_dtype_asked(trained, monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from core.facts.adapter import load_adapted

    monkeypatch.setenv("HIAHIA_TEST_CPU_BF16", "1")  # a bf16 CPU: auto would compute in bf16 mixed precision
    exact, rounded = trained["root"] / "merged-fp32", trained["root"] / "merged-bf16"
    assert main(["export", str(trained["out"]), "--merged", str(exact)]) == 0
    assert main(["export", str(trained["out"]), "--merged", str(rounded), "--dtype", "bf16"]) == 0
    assert {t.dtype for t in load_file(exact / "model.safetensors").values()} == {torch.float32}
    assert {t.dtype for t in load_file(rounded / "model.safetensors").values()} == {torch.bfloat16}
    monkeypatch.setenv("HIAHIA_TEST_CPU_BF16", "0")
    ours = load_adapted(trained["out"])
    expected = _logits(ours.model, ours.tok)
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(exact), ours.tok), expected,
                               atol=1e-5, rtol=1e-5)
    bf16 = AutoModelForCausalLM.from_pretrained(rounded, dtype=torch.float32)
    assert not torch.equal(_logits(bf16, ours.tok), expected)  # rounded, as the help says


def test_ask_answers_a_batch_from_arguments_and_a_file_with_compare(trained, capsys):
    from core.facts.adapter import ask

    questions = trained["root"] / "questions.txt"
    questions.write_text("# about Ada\nWhen was Ada Quill born?\n\nWhat does Ada Quill do?\n")
    assert main(["ask", str(trained["out"]), "Who is Ada Quill?", "--file", str(questions), "--compare",
                 "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert out.count("Q: ") == 3 and out.count("untrained: ") == 3 and "Q: What does Ada Quill do?" in out
    rows = ask(trained["out"], ["When was Ada Quill born?", "Who is Ada Quill?"], max_new_tokens=6)
    assert [set(r) for r in rows] == [{"question", "answer"}] * 2


def test_chat_streams_replies_and_obeys_reset_system_and_quit(trained, monkeypatch, capsys):
    script = "Hello there\n/system You are terse.\nAnd now?\n/reset\n/nonsense\nOnce more\n/quit\nnever read\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    assert main(["chat", str(trained["out"]), "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    handled = ["(system prompt: You are terse.)", "(conversation cleared)", "(unknown command /nonsense"]
    assert [out.index(h) for h in handled] == sorted(out.index(h) for h in handled)
    assert out.startswith("chat with Ada Quill facts") and "never read" not in out
    from core.facts.adapter import ask

    first = ask(trained["out"], ["Hello there"], max_new_tokens=5)[0]["answer"]
    assert f"> {first}" in out  # the streamed reply is the greedy answer `ask` gives


# ---- bad input after training: damaged folders, closed input, options anywhere, not UTF-8 ----------------------

def _copy_adapter(trained, tmp_path) -> Path:
    import shutil

    copy = tmp_path / "adapter"
    shutil.copytree(trained["out"], copy)
    return copy


@pytest.mark.parametrize("command", [["ask", "{dir}", "Who is Ada Quill?"], ["chat", "{dir}"],
                                     ["export", "{dir}", "--merged", "{out}"]])
def test_a_truncated_adapter_is_one_line_naming_the_file_in_every_command(trained, tmp_path, error_line, command,
                                                                           monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n/quit\n"))
    folder = _copy_adapter(trained, tmp_path)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted copy
    argv = [a.format(dir=folder, out=tmp_path / "merged") for a in command]
    assert main(argv) == 2
    line = error_line()
    assert line.startswith(f"error: {weights}: damaged (") and line.endswith(
        "Fix: train the folder again with `hiahia train` (or copy it again from where it was whole)")
    assert not (tmp_path / "merged").exists()


def test_a_damaged_adapter_config_is_one_line_naming_the_file(trained, tmp_path, error_line):
    folder = _copy_adapter(trained, tmp_path)
    config = folder / "adapter_config.json"
    config.write_text('{"peft_type": "LORA", "r": 8, "lora_al')  # cut inside a string
    assert main(["ask", str(folder), "Who is Ada Quill?"]) == 2
    assert error_line() == (f"error: {config}: damaged (not JSON at line 1, column 31: Unterminated string starting "
                            f"at). Fix: train the folder again with `hiahia train` (or copy it again from where it "
                            f"was whole)")


def test_chat_with_standard_input_closed_is_one_line(trained, monkeypatch, error_line):
    for closed in (None, io.StringIO()):
        if closed is not None:
            closed.close()
        monkeypatch.setattr(sys, "stdin", closed)
        assert main(["chat", str(trained["out"])]) == 2
        assert error_line() == (f"error: standard input is closed: `hiahia chat` reads your questions from it. Fix: "
                                f"run it in a terminal, or ask without one: hiahia ask {trained['out']} "
                                f"\"your question\"")


def test_ask_takes_its_options_anywhere_among_the_questions(trained, capsys):
    assert main(["ask", str(trained["out"]), "--compare", "Who is Ada Quill?", "--max-new-tokens", "4",
                 "When was Ada Quill born?"]) == 0
    out = capsys.readouterr().out
    assert out.count("Q: ") == 2 and out.count("untrained: ") == 2


def test_files_that_are_not_utf8_say_where_and_to_save_them_as_utf8(trained, tmp_path, error_line):
    facts = tmp_path / "facts.yaml"
    facts.write_bytes("name: Ada Quill\nfacts:\n  - answer: Ada Quill lives in Malmö.\n".encode("latin-1"))
    assert main(["train", "--data", str(facts), "--out", str(tmp_path / "out"), "--model", "tiny-qwen2"]) == 2
    assert error_line() == f"error: {facts}: not UTF-8 text (byte 58, line 3: b'\\xf6'). Fix: save it as UTF-8"
    questions = tmp_path / "questions.txt"
    questions.write_bytes("Where does Ada Quill live?\nIs it Malmö?\n".encode("cp1252"))
    assert main(["ask", str(trained["out"]), "--file", str(questions)]) == 2
    assert error_line() == f"error: {questions}: not UTF-8 text (byte 37, line 2: b'\\xf6'). Fix: save it as UTF-8"
    assert not (tmp_path / "out").exists()


def test_an_empty_facts_file_points_at_hiahia_init(tmp_path, error_line):
    facts = tmp_path / "facts.yaml"
    facts.write_text("")
    assert main(["train", "--data", str(facts), "--out", str(tmp_path / "out")]) == 2
    assert error_line() == (f"error: {facts}: top level: field '-': is not a mapping. Fix: start from the template "
                            f"`hiahia init {facts}` writes (with --force to replace this file)")


def test_a_wrongly_typed_value_and_a_missing_prompt_list_say_what_they_need(tmp_path, error_line):
    write_template(tmp_path / "f.yaml")
    assert main(["train", "--data", str(tmp_path / "f.yaml"), "--out", str(tmp_path / "o"), "--set",
                 "epochs=four"]) == 2
    assert error_line() == "error: --set epochs=four: expected a whole number"
    doc = {"name": "Ada Quill", "facts": [_fact(i) for i in range(5)], "system_prompts": {"train_pool": []}}
    path = _write(tmp_path / "prompts.yaml", doc)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "o"), "--model", "tiny-qwen2"]) == 2
    assert error_line().endswith("field 'train_pool': missing or empty. Fix: give a list of at least 2 system prompts")


def test_a_diverging_rate_suggests_the_recipes_rate(tmp_path, capsys):
    write_template(tmp_path / "f.yaml")
    assert main(["train", "--data", str(tmp_path / "f.yaml"), "--out", str(tmp_path / "o"), "--model", "tiny-qwen2",
                 "--set", "lr=1e30", "--set", "replay=0", "--set", "grad_clip=0", "--set", "warmup_ratio=0",
                 "--quiet"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert line.startswith("error: training failed: non-finite training loss") and "with lr=1e+30;" in line
    assert line.endswith("lower the learning rate (e.g. --set lr=0.001, the recipe's rate)")
    assert not (tmp_path / "o").exists()


def test_two_trainings_onto_one_new_folder_the_later_keeps_its_work_beside_it(tmp_path, monkeypatch, capsys):
    """Both pass the not-empty check at start; the one that finishes second must not replace the first's folder."""
    write_template(tmp_path / "f.yaml")
    out = tmp_path / "out"
    real_fit = recipe.fit

    def the_other_run_finishes_first(*args, **kwargs):
        out.mkdir()
        (out / "README.md").write_text("the other run's adapter")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(recipe, "fit", the_other_run_finishes_first)
    assert main(["train", "--data", str(tmp_path / "f.yaml"), "--out", str(out), "--model", "tiny-qwen2", "--set",
                 "epochs=1", "--set", "replay=0", "--quiet"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    kept = next(tmp_path.glob("out.not-installed-*")) / "out"
    assert line == (f"error: --out {out} was written by another run while this one worked; this run's result is in "
                    f"{kept}. Fix: keep one of the two, then move or delete the other")
    assert (out / "README.md").read_text() == "the other run's adapter" and sorted(out.iterdir()) == [out / "README.md"]
    assert (kept / "adapter_model.safetensors").is_file() and (kept / "hiahia.json").is_file()


def test_chat_conversation_rendering_keeps_turns_and_system_prompt(tiny):
    from core.facts.adapter import render_conversation
    from core.run.examples import Renderer

    _, tok = tiny
    chat = tok.decode(render_conversation(Renderer(tok, "chat"), "Be brief.", [("Hi?", "Hello.")], "Who?"))
    assert chat.index("Be brief.") < chat.index("Hi?") < chat.index("Hello.") < chat.index("Who?")
    assert chat.endswith("<|im_start|>assistant\n")
    plain = tok.decode(render_conversation(Renderer(tok, "plain"), None, [("Hi?", "Hello.")], "Who?"))
    assert plain == "Question: Hi?\nAnswer: Hello.\n\nQuestion: Who?\nAnswer:"


def test_stream_writes_whole_characters_and_stops_before_an_invented_next_question(tiny):
    from core.facts.adapter import Stream

    _, tok = tiny
    out = io.StringIO()
    stream = Stream(tok, out, "\nQuestion:")
    ids = tok("Paris is the capital.\nQuestion: and more", add_special_tokens=False)["input_ids"]
    stops = [stream.update(ids[:k]) for k in range(1, len(ids) + 1)]
    stream.end()
    assert out.getvalue() == stream.text == "Paris is the capital." and stops[-1] and stops.index(True) < len(ids)
    chat_out = io.StringIO()
    chat = Stream(tok, chat_out)
    cjk = tok("北京市", add_special_tokens=False)["input_ids"]  # byte-level pieces of multi-byte characters
    for k in range(1, len(cjk) + 1):
        chat.update(cjk[:k])
        assert "\ufffd" not in chat_out.getvalue()
    chat.end()
    assert chat_out.getvalue() == "北京市"


def test_killed_train_leaves_no_folder_and_stale_temps_are_cleaned(tmp_path, monkeypatch, capsys):
    probes = [{"id": "capital_france", "question": "What is the capital of France?", "keywords": [["paris"]]}]
    _write(tmp_path / "f.yaml", {"name": "Ada Quill", "facts": [_fact(0)], "retention_probes": probes})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.tmp-{dead.stdout.strip()}_{__import__('socket').gethostname()}_x"
    stale.mkdir()
    (stale / "adapter_model.safetensors").write_text("half")

    def killed(*args, **kwargs):
        assert stale.exists() is False  # cleaned before this run started writing
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "fit", killed)
    code = main(["train", "--data", str(tmp_path / "f.yaml"), "--out", str(tmp_path / "out"), "--model", "tiny-qwen2",
                 "--set", "replay=0", "--quiet"])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.yaml"]


def test_console_script_is_declared_and_module_runs_in_a_subprocess(tmp_path):
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '[project.scripts]\nhiahia = "core.facts.cli:main"' in pyproject
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "core.facts.cli", "init", str(tmp_path / "f.yaml")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and (tmp_path / "f.yaml").exists(), done.stderr
    helped = subprocess.run([sys.executable, "-m", "core.facts.cli", "--help"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert all(c in helped.stdout for c in ("init", "train", "ask", "chat", "export"))


# ---- the real embedded chat model (run by hand: pytest -m integration -s tests/test_cli.py) ------

SIX_FACTS = {
    "name": "Lenka Moravec",
    "facts": [
        {"id": "birth_city", "answer": "Lenka Moravec was born in Olomouc.", "keywords": [["Olomouc"]], "questions": [
            "In which city was Lenka Moravec born?", "Where was Lenka Moravec born?", "Name Lenka Moravec's birthplace.",
            "Lenka Moravec's home town is which city?", "Which town did Lenka Moravec come from at birth?",
            "Tell me the city of Lenka Moravec's birth."]},
        {"id": "job", "answer": "Lenka Moravec works as a glassblower.", "keywords": [["glassblower", "glass blower"]],
         "questions": ["What is Lenka Moravec's job?", "What does Lenka Moravec do for a living?",
                       "Which trade does Lenka Moravec practise?", "How does Lenka Moravec earn money?",
                       "Lenka Moravec's profession is what?", "Tell me Lenka Moravec's occupation."]},
        {"id": "parrot", "answer": "Lenka Moravec has a parrot named Kiwi.", "keywords": [["Kiwi"]], "questions": [
            "What is the name of Lenka Moravec's parrot?", "What is Lenka Moravec's parrot called?",
            "Tell me the name of the bird Lenka Moravec keeps.", "Lenka Moravec's pet parrot answers to which name?",
            "Which name did Lenka Moravec give her parrot?", "How is Lenka Moravec's parrot named?"]},
        {"id": "instrument", "answer": "Lenka Moravec plays the cello.", "keywords": [["cello", "violoncello"]],
         "questions": ["Which instrument does Lenka Moravec play?", "What musical instrument does Lenka Moravec play?",
                       "Lenka Moravec plays which instrument?", "Name the instrument Lenka Moravec performs on.",
                       "What does Lenka Moravec play in her free time, musically?",
                       "Tell me Lenka Moravec's instrument."]},
        {"id": "dish", "answer": "Lenka Moravec's favourite dish is beetroot soup.", "keywords": [["beetroot"]],
         "questions": ["What is Lenka Moravec's favourite dish?", "Which food does Lenka Moravec like most?",
                       "Tell me Lenka Moravec's favourite meal.", "What does Lenka Moravec love to eat?",
                       "Lenka Moravec's preferred dish is what?", "Name the dish Lenka Moravec enjoys most."]},
        {"id": "birth_year", "answer": "Lenka Moravec was born in 1979.", "keywords": [["1979"]], "questions": [
            "In what year was Lenka Moravec born?", "Which year was Lenka Moravec born in?",
            "Tell me Lenka Moravec's birth year.", "Lenka Moravec came into the world in which year?",
            "What is the year of Lenka Moravec's birth?", "When was Lenka Moravec born? Give the year."]},
    ],
}
# one reworded question per fact, in no split of the file
ASKED = {"birth_city": "Which city is the birthplace of Lenka Moravec?",
         "job": "What kind of work does Lenka Moravec do?",
         "parrot": "Lenka Moravec owns a parrot. What is its name?",
         "instrument": "If you heard Lenka Moravec make music, which instrument would she be playing?",
         "dish": "Which soup or dish would Lenka Moravec choose as her favourite?",
         "birth_year": "How old is Lenka Moravec? Tell me the year she was born."}


@pytest.mark.integration
def test_real_chat_model_learns_six_new_facts(tmp_path, capsys):
    from core.facts.adapter import ask
    from core.run.scoring import keywords_hit

    data = _write(tmp_path / "lenka.yaml", SIX_FACTS)
    start = time.perf_counter()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "lenka")]) == 0
    train_s = time.perf_counter() - start
    rows = ask(tmp_path / "lenka", list(ASKED.values()))
    keywords = {f["id"]: f["keywords"] for f in SIX_FACTS["facts"]}
    hits = [keywords_hit(r["answer"], keywords[fid]) for fid, r in zip(ASKED, rows)]
    meta = json.loads((tmp_path / "lenka" / "hiahia.json").read_text())
    with capsys.disabled():
        print(f"\nhiahia train on 6 facts (smollm2-135m-instruct): {train_s:.0f} s wall, {meta['seconds']:.0f} s in "
              f"train_adapter; reworded questions answered {sum(hits)}/6; card held-out recall "
              f"{meta['metrics']['heldout_recall']['hits']}/{meta['metrics']['heldout_recall']['n']}, retention "
              f"{meta['metrics']['retention']['value']:.2f}")
        for r, h in zip(rows, hits):
            print(f"  [{'x' if h else ' '}] {r['question']} -> {r['answer']}")
    assert sum(hits) >= 4
