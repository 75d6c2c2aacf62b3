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


def test_a_blind_sample_is_uniform_within_arms_hides_the_scorer_and_never_redraws_or_overwrites(tmp_path, monkeypatch):
    import csv
    import json
    import random
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import sample_labels

    out = tmp_path / "blind"
    fixture = ROOT / "tests" / "fixtures" / "report" / "results"
    assert sample_labels.main(["--results", str(fixture), "--out", str(out), "--per-kind", "6", "--dev", "2"]) == 0
    dev, held = ([json.loads(line) for line in (out / b / "items.jsonl").read_text().splitlines()]
                 for b in ("dev", "heldout"))
    assert [i["row"] for i in held] == list(range(1, len(held) + 1))
    assert {i["kind"] for i in held} >= {"recall", "identity", "retention", "intrusion"}
    assert all(i["untrained_answer"] for i in held if i["kind"] == "intrusion")  # the scorer's reference rides along
    with open(out / "heldout" / "sheet.csv", newline="") as f:
        sheet = list(csv.DictReader(f))
    assert list(sheet[0]) == ["row", "kind", "system_prompt", "question", "reference", "answer"]  # no keywords, no score
    with pytest.raises(SystemExit, match="already holds"):
        sample_labels.main(["--results", str(fixture), "--out", str(out), "--per-kind", "6", "--dev", "2"])
    (out / "heldout").rename(out / "old")  # a second held-out batch never draws an answer already sampled
    assert sample_labels.main(["--results", str(fixture), "--out", str(out), "--per-kind", "6", "--dev", "0"]) == 0
    again = [json.loads(line) for line in (out / "heldout" / "items.jsonl").read_text().splitlines()]
    from core.analysis.blind import dedup

    assert not {dedup(i["kind"], i) for i in again} & {dedup(i["kind"], i) for i in dev + held}
    # the draw never looks at a scorer: the arms' answers are visited round-robin, uniformly within each arm
    pools = {"x": [{"n": i} for i in range(10)], "y": [{"n": 100 + i} for i in range(2)]}
    picked = sample_labels.pick(pools, 6, random.Random(0))
    assert sum(p["n"] >= 100 for p in picked) == 2 and len(picked) == 6


def test_the_blind_check_counts_precision_recall_and_corrects_the_baseline_rate(tmp_path):
    import json

    from core.analysis import blind

    knowledge = None
    items = [{"row": r, "kind": "recall", "arm": "a", "question": "q", "answer": answer, "keywords": [["pimento"]]}
             for r, answer in enumerate(["Pimento.", "Pimento.", "Pimento.", "no idea", "no idea", "Pimento"], 1)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    labels = [1, 1, 0, 0, 1, 1]  # the scorer says 1,1,1,0,0,1: true pos 3 (rows 1, 2, 6), false pos row 3, miss row 5
    (tmp_path / "labels.csv").write_text("row,label,note\n" + "".join(f"{r},{x},\n" for r, x in enumerate(labels, 1)))
    c = blind.check(tmp_path, results=None, knowledge=knowledge)["recall"]
    assert (c.n, c.agree, c.true_pos, c.scorer_pos, c.label_pos) == (6, 4, 3, 4, 4)
    assert c.precision == 0.75 and c.recall == 0.75 and c.specificity == 0.5 and not c.passes
    low, high = blind.wilson(4, 6)
    assert 0.29 < low < 0.31 and 0.90 < high < 0.91  # Wilson 95% for 4 of 6
    assert blind.rogan_gladen(0.5, 0.75, 0.5) == 0.0 and blind.rogan_gladen(0.6, 1.0, 1.0) == pytest.approx(0.6)
    assert blind.rogan_gladen(0.3, 0.5, 0.5) is None  # a scorer no better than chance corrects nothing
    assert "| recall |" in blind.markdown({"recall": c}) and "**no**" in blind.markdown({"recall": c})


def test_the_blind_held_out_table_is_current_and_names_every_scorer_that_misses():
    from core.analysis import blind

    table = blind.check()
    assert (blind.HELDOUT / "AGREEMENT.md").read_text() == blind.report_text(table)
    assert sum(c.n for c in table.values()) >= 600 and set(table) == set(blind.KINDS)
    text = blind.report_text(table)
    for c in table.values():
        assert c.passes or c.kind in text.split("Scorers that miss:")[1]


def test_no_signature_counts_with_a_scorer_that_misses_the_blind_bar():
    from core.analysis import blind
    from core.study.ablation import discover

    table = blind.check(results=None)
    assert blind.scorer_of("heldout_recall") == "recall" and blind.scorer_of("recall_mc") is None
    assert blind.scorer_of("retention_heldout") == "retention" and blind.scorer_of("turn_overrun") is None
    assert blind.scorer_of("identity_hallucination@open_question") == "identity"
    for ab in discover().values():
        kind = blind.scorer_of(ab.signature)
        assert kind is None or table[kind].passes, f"{ab.name}: {ab.signature} counts with the {kind} scorer, " \
                                                    f"which misses the bar"


def test_the_recall_scorer_is_also_reported_on_the_base_model_s_own_answers_never_pooled():
    from core.analysis import blind
    from core.run.knowledge import load_knowledge

    checks = blind.labelled_batches(blind.ARM_CHECKS)
    assert checks and all(c not in blind.HELDOUT_BATCHES for c in checks)  # one arm: not a uniform draw
    models = blind.by_model("recall", blind.labelled_batches() + checks, load_knowledge())
    n, agreed = models["gemma-3-270m"]
    assert n == 40 and agreed >= 38, "the rule of bece191: more than 2 errors of 40 sends base_vs_chat to recall_mc"
    assert blind.check(results=None)["recall"].n == 300  # the pooled row reads the uniform batches only
