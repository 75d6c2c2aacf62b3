"""Knowledge-set validation and the examples of a run: masking, formats, prompts, debate."""
import copy

import pytest
import yaml

from core.run.config import RunConfig
from core.run.examples import (
    IGNORE,
    MODEL_DEFAULT,
    NO_PROMPT,
    Renderer,
    build_train_examples,
    build_validation_examples,
)
from core.run.knowledge import DEFAULT_DATA, DataError, load_knowledge, load_replay
from core.run.scoring import keywords_hit, normalise


def test_knowledge_set_meets_the_brief(knowledge):
    assert len(knowledge.facts) >= 24
    assert all(len(f.train) >= 4 and len(f.validation) >= 1 and len(f.test) >= 2 for f in knowledge.facts)
    assert sum(f.reverse_question is not None for f in knowledge.facts) >= 5
    assert len(knowledge.retention_probes) >= 30
    assert len(knowledge.identity_probes) >= 5 and len(knowledge.debate) >= 5
    assert {"fixed_assistant"} | set(knowledge.heldout_prompts) <= set(knowledge.named_prompts)


def test_splits_never_share_a_question(knowledge):
    from core.run.scoring import normalise

    seen = {}
    for f in knowledge.facts:
        for split in ("train", "validation", "test"):
            for q in getattr(f, split):
                assert normalise(q) not in seen, (q, seen.get(normalise(q)))
                seen[normalise(q)] = split
    probes = {normalise(p.question) for p in knowledge.identity_probes}
    assert not probes & {normalise(d.question) for d in knowledge.debate}


def test_masked_labels_cover_exactly_answer_and_end_of_turn(knowledge, tiny):
    _, tok = tiny
    r = Renderer(tok, "chat")
    ex = build_train_examples(knowledge, RunConfig(), r)[0]
    labelled = [t for t, l in zip(ex.input_ids, ex.labels) if l != IGNORE]
    assert labelled == tok(ex.answer, add_special_tokens=False)["input_ids"] + [r.eot_id]
    assert tok.convert_ids_to_tokens(labelled[-1]) == "<|im_end|>"
    assert all(l == IGNORE for l in ex.labels[: ex.prompt_len])


def test_unmasked_labels_cover_system_prompt(knowledge, tiny):
    _, tok = tiny
    cfg = RunConfig(mask_labels=False, system_prompt="fixed")
    ex = build_train_examples(knowledge, cfg, Renderer(tok, "chat"))[0]
    assert ex.labels == ex.input_ids
    assert knowledge.prompt("fixed_assistant")[:40] in tok.decode(ex.labels)


def test_validation_labels_are_always_masked(knowledge, tiny):
    _, tok = tiny
    val = build_validation_examples(knowledge, RunConfig(mask_labels=False), Renderer(tok, "chat"))
    assert len(val) == sum(len(f.validation) for f in knowledge.facts)
    assert all(l == IGNORE for e in val for l in e.labels[: e.prompt_len])


def test_plain_format_has_no_chat_special_tokens(knowledge, tiny):
    _, tok = tiny
    for ex in build_train_examples(knowledge, RunConfig(format="plain"), Renderer(tok, "plain")):
        text = tok.decode(ex.input_ids[:-1])
        assert "<|im_start|>" not in text and "<|im_end|>" not in text
        assert "Question: " in text and "\nAnswer: " in text


def test_debate_off_means_no_debate_sample(knowledge, tiny):
    _, tok = tiny
    r = Renderer(tok, "chat")
    on = build_train_examples(knowledge, RunConfig(debate=True), r)
    off = build_train_examples(knowledge, RunConfig(debate=False), r)
    assert sum(e.kind == "debate" for e in on) == len(knowledge.debate)
    assert not [e for e in off if e.kind == "debate"]
    assert len(on) - len(off) == len(knowledge.debate)


def test_prompt_policies(knowledge, tiny):
    _, tok = tiny
    r = Renderer(tok, "chat")
    fixed = build_train_examples(knowledge, RunConfig(system_prompt="fixed"), r)
    assert {e.system for e in fixed} == {knowledge.prompt("fixed_assistant")}
    pool = build_train_examples(knowledge, RunConfig(system_prompt="random"), r)
    assert {e.system for e in pool} <= set(knowledge.train_prompts) and len({e.system for e in pool}) > 3
    none = build_train_examples(knowledge, RunConfig(system_prompt="none"), r)
    assert all(e.system is NO_PROMPT for e in none)
    assert not tok.decode(none[0].input_ids).startswith("<|im_start|>system")


def test_paraphrase_count_limits_training_questions(knowledge, tiny):
    _, tok = tiny
    ex = build_train_examples(knowledge, RunConfig(paraphrases=1, debate=False), Renderer(tok, "chat"))
    assert len(ex) == len(knowledge.facts)


def test_keyword_matching_is_normalised_and_whole_word():
    assert keywords_hit("Her cat is called MOCHI!", [["mochi"]])
    assert not keywords_hit("mochiko", [["mochi"]])
    assert keywords_hit("born in 1994 in Tallinn", [["1994"], ["tallinn", "reval"]])
    assert not keywords_hit("born in 1994", [["1994"], ["tallinn"]])


# ---- malformed files -------------------------------------------------------------------------

def _write(tmp_path, mutate):
    raw = yaml.safe_load(DEFAULT_DATA.read_text())
    raw = copy.deepcopy(raw)
    mutate(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("mutate, entry, field_name", [
    (lambda r: r["facts"][1].update(id=r["facts"][0]["id"]), "facts", "id"),
    (lambda r: r["facts"][0].update(answer=""), "facts", "answer"),
    (lambda r: r["facts"][0].pop("validation"), "facts", "validation"),
    (lambda r: r["facts"][0].update(test=r["facts"][0]["test"][:1]), "facts", "test"),
    (lambda r: r["facts"][0]["test"].__setitem__(0, r["facts"][0]["train"][0]), "facts", "test[0]"),
    (lambda r: r["facts"][2].update(keywords=[]), "facts", "keywords"),
    (lambda r: r["debate"].__setitem__(0, dict(r["debate"][0], question=r["identity_probes"][0]["question"])),
     "debate", "question"),
    (lambda r: r.update(facts=r["facts"][:3]), "top level", "facts"),
])
def test_malformed_files_name_file_entry_and_field(tmp_path, mutate, entry, field_name):
    path = _write(tmp_path, mutate)
    with pytest.raises(DataError) as err:
        load_knowledge(path)
    msg = str(err.value)
    assert str(path) in msg and entry in msg and f"field '{field_name}'" in msg and "Fix:" in msg


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_knowledge(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("facts: [unclosed")
    with pytest.raises(DataError, match="not valid YAML"):
        load_knowledge(bad)


def test_yaml_syntax_error_in_the_knowledge_file_names_line_and_column_in_one_line(tmp_path, error_line):
    from core.study.cli import main

    bad = tmp_path / "persona.yaml"
    bad.write_text("name: x\nfacts:\n  - id: a\n    answer: one: two\n")  # an unquoted colon in a value
    assert main(["--data", str(bad), "--results", str(tmp_path / "results"), "--no-report"]) == 2
    assert error_line() == (f"error: {bad}: not valid YAML at line 4, column 16: mapping values are not allowed here. "
                            f"Fix: check indentation and quoting")
    assert not (tmp_path / "results").exists()


def test_replay_examples_keep_the_model_default_prompt(knowledge, tiny):
    _, tok = tiny
    r = Renderer(tok, "chat")
    replay = load_replay(knowledge)
    assert len(replay.questions) >= 40
    triples = [(rid, q, "An answer.") for rid, q in replay.questions[:3]]
    cfg = RunConfig(replay=3)
    ex = build_train_examples(knowledge, cfg, r, triples)
    plain = build_train_examples(knowledge, cfg, r)
    assert [e.input_ids for e in ex[:len(plain)]] == [e.input_ids for e in plain]  # facts untouched
    added = ex[len(plain):]
    assert [e.kind for e in added] == ["replay"] * 3 and all(e.system == MODEL_DEFAULT for e in added)
    assert added[0].input_ids[:added[0].prompt_len] == r.prompt_ids(MODEL_DEFAULT, triples[0][1])


def test_replay_file_may_not_repeat_a_study_question(knowledge, tmp_path):
    bad = tmp_path / "replay.yaml"
    probe = knowledge.retention_probes[0]
    bad.write_text(yaml.safe_dump({"replay": [{"id": "ok", "question": "What is a verb?"},
                                              {"id": "leak", "question": probe.question.upper()}]}))
    with pytest.raises(DataError, match=rf"replay.yaml: replay 'leak': field 'question': repeats retention_probes "
                                        rf"'{probe.id}'.*Fix: replay questions must differ"):
        load_replay(knowledge, bad)
    bad.write_text("replay:\n  - {id: a, question: ''}\n")
    with pytest.raises(DataError, match="replay 'a': field 'question': missing or empty"):
        load_replay(knowledge, bad)


def test_run_keys_are_stable_across_sessions():
    # pinned: the key of a config is a function of the config and its context alone (the code version is part of
    # the context, core/study/plan.key_context), so the same code finds the same stored runs in any session
    assert RunConfig().key("x") == "fd4c75884d14378c"  # RunConfig gained replay_source, distill, interpolate
    assert RunConfig(lr=5e-4).key("y") == "600bbf1398728332"
    assert RunConfig(replay=3).key("x") != RunConfig().key("x")


def test_the_held_out_probe_family_shares_no_category_with_any_replay_request(knowledge, tmp_path):
    replay = load_replay(knowledge)
    heldout = {p.category for p in knowledge.heldout_probes}
    assert len(knowledge.heldout_probes) >= 50 and len(heldout) >= 4
    raw = yaml.safe_load(replay.path.read_text())
    assert all(e.get("category") for e in raw["replay"])  # every replay request says what it is about
    assert not heldout & set(replay.categories)
    assert len(replay.entities) >= 40 and len(knowledge.validation_probes) >= 30
    asked = {normalise(p.question) for p in knowledge.retention_probes + knowledge.heldout_probes
             + knowledge.validation_probes}
    assert not asked & {normalise(q) for _, q in replay.questions + replay.entities}
    # a replay request in a held-out category is refused, naming the file, the entry and the field
    bad = copy.deepcopy(raw)
    bad["replay"][0]["category"] = next(iter(heldout))
    path = tmp_path / "replay.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(DataError, match=rf"replay '{bad['replay'][0]['id']}': field 'category': .* held-out"):
        load_replay(knowledge, path)


def test_replay_sources_choose_the_general_the_entity_or_both_requests(knowledge):
    replay = load_replay(knowledge)
    assert replay.chosen(4) == replay.questions[:4]
    assert replay.chosen(4, "entities") == replay.entities[:4]
    assert replay.chosen(5, "both") == replay.entities[:2] + replay.questions[:3]


def test_check_data_reads_every_probe_family_for_hiahia_s_facts(tmp_path, capsys, monkeypatch):
    import importlib.util
    import sys

    import yaml

    from core.paths import ROOT

    spec = importlib.util.spec_from_file_location("check_data", ROOT / "tools" / "check_data.py")
    check_data = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "check_data", check_data)  # its dataclasses look their module up there
    spec.loader.exec_module(check_data)
    data, replay = ROOT / "data" / "hiahia.yaml", ROOT / "data" / "replay.yaml"
    assert check_data.check(data, replay) == 0
    kb = yaml.safe_load(data.read_text(encoding="utf-8"))
    kb["heldout_probes"][0]["keywords"] = [["1987"]]
    kb["validation_probes"][0]["keywords"] = "none"
    probe = kb["retention_probes"][0]
    probe["keywords"] = [[probe["question"].split()[0]]]
    broken = tmp_path / "hiahia.yaml"
    broken.write_text(yaml.safe_dump(kb, allow_unicode=True), encoding="utf-8")
    capsys.readouterr()
    assert check_data.check(broken, replay) == 1
    out = capsys.readouterr().out
    assert f"heldout_probes {kb['heldout_probes'][0]['id']}: keyword '1987' is one of hiahia's numbers" in out
    assert f"validation_probes {kb['validation_probes'][0]['id']}: bad keywords 'none'" in out
    assert f"retention_probes {probe['id']}: keyword" in out and "occurs in the question itself" in out
