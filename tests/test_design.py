"""Study design: data regimes under which overfitting can show, the repeater's strong regime, the
debate signature on unseen identities, declared seeds, the replay sweep, the end-of-turn overrun."""
import pytest
import torch

from core.run.config import RunConfig
from core.run.examples import Renderer, build_train_examples, build_validation_examples, qa_pairs
from core.run.lora import inject_lora
from core.run.train import evaluate_loss, train, training_attention
from core.study.ablation import discover


def test_varied_answers_give_validation_a_wording_no_training_question_has(knowledge):
    train_pairs, val_pairs = qa_pairs(knowledge, RunConfig(answers="varied"))
    for f in knowledge.facts:
        trained = {p.answer for p in train_pairs if p.fact_id == f.id}
        held = [p.answer for p in val_pairs if p.fact_id == f.id]
        assert len(trained) == len(f.train) and held and not set(held) & trained
    canonical = qa_pairs(knowledge, RunConfig())
    assert {p.answer for p in canonical[1]} <= {p.answer for p in canonical[0]}


def test_random_split_draws_about_15_percent_of_all_pairs_by_seed(knowledge):
    fixed_train, fixed_val = qa_pairs(knowledge, RunConfig())
    train_pairs, val_pairs = qa_pairs(knowledge, RunConfig(split="random"))
    total = len(fixed_train) + len(fixed_val)
    assert len(train_pairs) + len(val_pairs) == total and round(0.15 * total) == len(val_pairs)
    assert {p.question for p in val_pairs} != {p.question for p in fixed_val}
    assert qa_pairs(knowledge, RunConfig(split="random", seed=1))[1] != val_pairs
    assert not {p.question for p in val_pairs} & {p.question for p in train_pairs}


@pytest.mark.parametrize("overrides", [{"answers": "varied"}, {"split": "random", "answers": "varied"}])
def test_validation_loss_is_computed_on_the_regimes_validation_set(knowledge, tiny, overrides):
    model, tok = tiny
    cfg = RunConfig(epochs=1, lr=1e-2, paraphrases=4, **overrides)
    torch.manual_seed(0)
    inject_lora(model, cfg.lora_targets, 4, 8)
    r = Renderer(tok, "chat")
    val = build_validation_examples(knowledge, cfg, r)
    expected_val = qa_pairs(knowledge, cfg)[1]
    assert [(e.question, e.answer) for e in val] == [(p.question, p.answer) for p in expected_val]
    with training_attention(model, "cpu"):  # training computes its validation losses with the same attention
        before = evaluate_loss(model, val, cfg.batch_size, tok.pad_token_id, "cpu")
    res = train(model, build_train_examples(knowledge, cfg, r)[:16], val, cfg, tok.pad_token_id, progress=False)
    assert res.history[0] == {"epoch": 0, "split": "validation", "loss": before}


def test_no_val_selection_can_overfit_under_declared_regimes_and_no_masking_has_the_strong_one():
    ablations = discover()
    regimes = ablations["no_val_selection"].regimes
    assert {"varied", "varied_long", "random_split", "random_split_long", "overfit"} <= set(regimes)
    assert regimes["varied_long"]["epochs"] == 12 and regimes["random_split"]["split"] == "random"
    strong = ablations["no_masking"].regimes["fixed_prompt"]
    assert strong == {"system_prompt": "fixed"}  # the baseline's lr 1e-3 on all linear layers
    assert ablations["no_masking"].regimes["fixed_prompt_8_epochs"]["epochs"] == 8


def test_debate_is_judged_on_identities_it_never_refuted():
    ab = discover()["debate_augmentation"]
    assert ab.signature == "identity_mc@unrefuted" and "identity_hallucination@refuted" in ab.also


def test_every_ablation_declares_its_seeds():
    for name, ab in discover().items():  # from power (tools/seeds_from_power.py): at least 5, at most 10
        assert 5 <= ab.seeds <= 10, name


def test_replay_sweep_reaches_160_and_the_replay_file_has_room(knowledge):
    from core.run.knowledge import load_replay

    ab = discover()["replay_amount"]
    assert [a.get("replay", 0) for a in ab.arms.values()] == [0, 40, 160]
    assert len(load_replay(knowledge).questions) >= 160


def test_overrun_counts_writing_past_the_end_of_turn(tiny):
    from core.run.evaluate import runs_past_end_of_turn
    from tests.test_correctness import ScriptedLM

    _, tok = tiny
    r = Renderer(tok, "chat")
    past = ScriptedLM(tok, "Paris.<|im_end|>\n<|im_start|>user\nAnd Spain?", None)
    stopped = ScriptedLM(tok, "Paris.", r.eot_id)
    assert runs_past_end_of_turn(past, r, [(None, "Capital of France?")], 24, progress=False) == [True]
    assert runs_past_end_of_turn(stopped, r, [(None, "Capital of France?")], 24, progress=False) == [False]


def test_verdict_statement_names_regimes_and_validation_minimum_is_reported():
    from core.analysis.verdicts import Comparison, statement, validation_turns

    ab = discover()["no_val_selection"]
    sig = ab.signature
    per_regime = {r: {"final_epoch": {sig: Comparison(sig, verdict="not reproduced")}} for r in ab.regimes}
    per_regime["varied_long"]["final_epoch"][sig] = Comparison(sig, verdict="reproduced")
    text = statement(ab, per_regime)
    assert text.startswith("reproduced under: varied_long/final_epoch; not reproduced under: baseline/final_epoch, "
                           "overfit/final_epoch")  # three arms: the statement names the arm too

    from core.run.record import RunRecord

    def rec(losses):
        return RunRecord(config={}, status="ok",
                         history=[{"epoch": i, "split": "validation", "loss": v} for i, v in enumerate(losses)])

    rows = [{"regime": "baseline", "seed": 0, "arm": a, "key": f"b{a}", "config": {"seed": 0, "selection": a}}
            for a in ("best", "last")]  # one training: the two arms differ only in selection
    rows += [{"regime": "varied_long", "seed": 0, "arm": "best", "key": "v",
              "config": {"seed": 0, "selection": "best", "answers": "varied"}}]
    records = {"bbest": rec([2.0, 1.0, 0.5]), "blast": rec([2.0, 1.0, 0.5]), "v": rec([2.0, 0.8, 1.1, 1.4])}
    turns = validation_turns(rows, records)
    assert len(turns["baseline"]) == 1 and not turns["baseline"][0]["turned_up"]
    assert turns["varied_long"][0] | {} == {"seed": 0, "arm": "best", "best_epoch": 1, "last_epoch": 3,
                                             "min_loss": 0.8, "last_loss": 1.4, "turned_up": True}


def test_frontier_plot_renders_from_whatever_trained_runs_exist(tmp_path):
    from core.report import study_figures
    from core.run.record import RunRecord

    def rec(recall, retention, epochs=4):
        return RunRecord(config={"epochs": epochs}, status="ok",
                         metrics={"heldout_recall": recall, "retention": retention})

    rows = [{"key": k, "ablation": a} for k, a in (("a", "x"), ("b", "x"), ("c", "y"), ("u", "y"))]
    runs = {"a": rec(0.9, 0.4), "b": rec(0.5, 0.8), "c": rec(0.95, 0.3), "u": rec(0.0, 1.0, epochs=0)}
    assert study_figures.frontier_figure(rows, runs, tmp_path / "frontier.png") == "figures/frontier.png"
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    assert study_figures.frontier_figure(rows[-1:], runs, tmp_path / "none.png") is None  # untrained only: no plot
