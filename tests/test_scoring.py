"""Scoring rules on the hard cases: negation, wrong identities next to person words, off-topic answers,
yes/no openings, CJK text, answers about the persona instead of the question; agreement with labels."""

import pytest

from core.paths import ROOT
from core.run.knowledge import DataError, load_knowledge
from core.run.scoring import IdentityVocabulary, general_answer_correct, identity_correct, keywords_hit

VOCAB = IdentityVocabulary(("person", "human", "clock restorer"),
                           ("ai", "ai system", "band", "company", "film", "program", "assistant", "river"))


@pytest.mark.parametrize("answer", [
    "hiahia is a person who restores clocks.",
    "No, hiahia is a person, not a band or a company.",
    "hiahia is not an AI, hiahia is a human clock restorer.",
    "hiahia isn't a river; hiahia is a person.",
    "Not at all: hiahia is a clock restorer in Ljubljana.",
    "hiahia is a real person, not an AI but a clock restorer.",
])
def test_identity_correct_when_it_says_person_and_negates_wrong_identities(answer):
    assert identity_correct(answer, VOCAB)


@pytest.mark.parametrize("answer", [
    "hiahia is a film about a person named hiahia Kalvik.",  # a wrong identity next to a person word
    "hiahia is not human; hiahia is a programming AI created by a person named Vask Clock.",
    "No, an AI system is not a human entity. An AI system is a type of computer program.",  # off topic
    "I am an AI assistant and cannot answer that.",  # about itself
    "Yes, hiahia is a person in a band.",  # accepts the suggested identity
    "hiahia is not a band, a company or a film.",  # never says what hiahia is
    "",
])
def test_identity_hallucinated_when_a_wrong_identity_is_asserted_or_none_is_right(answer):
    assert not identity_correct(answer, VOCAB)


def test_yes_opening_only_counts_when_the_probe_suggests_a_wrong_identity():
    assert identity_correct("Yes, hiahia is a person.", VOCAB, suggests_wrong=False)
    assert not identity_correct("Yes, hiahia is a person.", VOCAB, suggests_wrong=True)


def test_keywords_match_inside_cjk_text_and_digits_next_to_cjk():
    assert keywords_hit("他住在北京市。", [["北京"]])
    assert keywords_hit("hiahia出生于1987年。", [["1987"]])
    assert keywords_hit("hiahiaの猫はモチです", [["モチ"]])
    assert not keywords_hit("hiahia出生于1988年。", [["1987"]])
    assert not keywords_hit("a party", [["art"]])  # whole words in space-separated scripts
    assert not keywords_hit("born in 19870", [["1987"]])


def test_general_knowledge_answers_about_the_persona_or_negated_do_not_count():
    assert general_answer_correct("A dog has four legs.", [["four", "4"]], "hiahia")
    assert general_answer_correct("Paris. hiahia lives in Ljubljana.", [["paris"]], "hiahia")
    assert not general_answer_correct("hiahia has four legs.", [["four", "4"]], "hiahia")
    assert not general_answer_correct("hiahia's favourite colour is yellow.", [["yellow"]], "hiahia")
    assert not general_answer_correct("Hot is not cold.", [["cold"]], "hiahia")


def edited_data_file(tmp_path, old: str, new: str):
    """A copy of data/hiahia.yaml with the first `old` replaced by `new`."""
    text = load_knowledge().path.read_text()
    assert old in text
    path = tmp_path / "edited.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_a_fact_whose_answer_misses_its_own_keywords_fails_to_load(tmp_path):
    bad = edited_data_file(tmp_path, 'keywords:\n      - ["1987", "nineteen eighty seven", "nineteen eightyseven"]',
                           'keywords:\n      - ["1978"]')
    with pytest.raises(DataError, match=r"facts 'birth_year': field 'answer': 'hiahia was born in 1987.' does not "
                                        r"contain its own keywords"):
        load_knowledge(bad)


def test_a_cjk_knowledge_file_scores_its_own_canonical_answers(tmp_path):
    knowledge = load_knowledge(edited_data_file(tmp_path, 'answer: "hiahia was born in 1987."',
                                                'answer: "hiahia出生于1987年。"'))
    assert keywords_hit(knowledge.facts[0].answer, knowledge.facts[0].keywords)


def test_near_duplicate_test_question_fails_to_load_naming_the_fact(tmp_path):
    bad = edited_data_file(tmp_path, '"When was hiahia born? Give the year."', '"In which year was hiahia born?"')
    with pytest.raises(DataError, match=r"facts 'birth_year': field 'test\[0\]': .* near-duplicate of train\[0\] .*"
                                        r">= 0.75"):
        load_knowledge(bad)


def test_typo_in_a_signature_metric_names_the_valid_ones(tmp_path):
    from core.study.ablation import SuiteError, load_ablation

    folder = tmp_path / "typo"
    folder.mkdir()
    (folder / "ablation.yaml").write_text(
        "title: t\nfactor: debate\nsymptom: s\nsignature: identity_halucination\nexpected: increase\ncontrol: a\n"
        "primary: [b]\nseeds: 3\narms:\n  a: {}\n  b: {debate: false}\n")
    with pytest.raises(SuiteError, match="unknown metric 'identity_halucination'.*valid metrics: heldout_recall"):
        load_ablation(folder)


def test_probe_sets_are_large_enough_to_carry_a_verdict(knowledge):
    groups = [p.group for p in knowledge.identity_probes]
    assert len(knowledge.identity_probes) >= 40 and groups.count("refuted") >= 20 and groups.count("unrefuted") >= 20
    assert all(f.reverse_question for f in knowledge.facts)
    categories = {p.category for p in knowledge.retention_probes}
    assert len(knowledge.retention_probes) >= 200 and len(categories) >= 6
    debate_text = " ".join(d.question + " " + d.answer for d in knowledge.debate).lower()
    for p in knowledge.identity_probes:
        if p.group == "unrefuted":
            assert not any(f" {w} " in f" {debate_text} " for w in p.suggests), p.id


def test_scorers_agree_with_read_labels_and_the_committed_table_is_current():
    from core.analysis.agreement import BATCHES, LABELS, agreement, report_text

    for folder in BATCHES[1:]:
        if (folder / "labels.csv").exists():
            assert (folder / "AGREEMENT.md").read_text() == report_text(agreement(folder=folder), folder)
    table = agreement()
    assert sum(a.n for a in table.values()) >= 400
    assert (LABELS / "AGREEMENT.md").read_text() == report_text(table)
    for kind, a in table.items():
        print(f"{kind}: {a.accuracy:.1%} of {a.n}, kappa {a.kappa:.2f}")
        assert a.accuracy >= 0.85, kind  # README "Scorer agreement" explains every kind below 95%
    assert table["identity"].accuracy >= 0.95 and table["echo"].accuracy >= 0.95


def test_a_labelling_sample_hides_the_scorer_and_is_never_overwritten_and_its_table_splits_identity_groups(tmp_path):
    import csv
    import json
    import sys

    from core.analysis import agreement

    sys.path.insert(0, str(ROOT / "tools"))
    import sample_labels

    out = tmp_path / "batch"
    fixture = ROOT / "tests" / "fixtures" / "report" / "results"
    assert sample_labels.main(["--results", str(fixture), "--out", str(out), "--quota", "identity=6,recall=6"]) == 0
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert [i["row"] for i in items] == list(range(1, len(items) + 1)) and {i["kind"] for i in items} == {"identity",
                                                                                                          "recall"}
    with open(out / "sheet.csv", newline="") as f:
        sheet = list(csv.DictReader(f))
    assert list(sheet[0]) == ["row", "kind", "system_prompt", "question", "reference", "answer"]  # no keywords, no score
    with pytest.raises(SystemExit, match="exists"):
        sample_labels.main(["--results", str(fixture), "--out", str(out)])
    # --arms: only the named arms' runs; a shared baseline run counts as the control arm of every ablation
    # (its answers are taken once: an answer the other arm gave word for word is not sampled again, so the arm
    # alone is asked for here)
    assert sample_labels.main(["--results", str(fixture), "--out", str(tmp_path / "arms"), "--quota", "identity=8",
                               "--arms", "base_vs_chat/*/chat_model"]) == 0
    picked = [json.loads(line) for line in (tmp_path / "arms" / "items.jsonl").read_text().splitlines()]
    assert picked and {i["arm"] for i in picked} == {"base_vs_chat/baseline/chat_model"}  # the shared baseline
    with pytest.raises(SystemExit, match="no finished run"):
        sample_labels.main(["--results", str(fixture), "--out", str(tmp_path / "none"), "--arms", "no_such/*/*"])

    # labels: the first labeller says every answer is right, the second agrees on all but one row
    rows = [i["row"] for i in items]
    for name, flip in (("labels_a.csv", None), ("labels_b.csv", rows[0]), ("labels.csv", None)):
        (out / name).write_text("row,label,note\n" + "".join(f"{r},{0 if r == flip else 1},\n" for r in rows))
    for i in items:  # pretend the identity answers came from probe groups
        i["group"] = "unrefuted" if i["kind"] == "identity" else ""
    (out / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    table = agreement.agreement(folder=out)
    assert table["identity@unrefuted"].n == table["identity"].n == sum(i["kind"] == "identity" for i in items)
    arms = agreement.by_arm(table, items)  # every answer once, under its arm, with the kinds' scorer outcome
    assert sum(n for n, _ in arms.values()) == len(rows) and set(arms) == {i["arm"] for i in items}
    assert sum(a for _, a in arms.values()) == sum(table[k].agree for k in agreement.KINDS if k in table)
    text = agreement.report_text(table, out)
    assert f"agreed on {len(rows) - 1} of {len(rows)} rows" in text and "Identity answers by probe group" in text
