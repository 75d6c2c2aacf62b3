"""A user's knowledge file for the `hiahia` command: the lenient schema (facts only), the held-out questions
carved from each fact's questions, the package defaults for the sections it omits, and the `init` template.
"""
from __future__ import annotations

import copy
import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.run.knowledge import DEFAULT_DATA, DataError, KnowledgeSet, ReplaySet, _questions, load_knowledge, load_replay
from core.run.scoring import normalise

DEFAULTS = DEFAULT_DATA.parent / "defaults.yaml"  # the person-specific sections, written with {name}
# what the study measured: held-out recall by the number of training wordings per fact (paraphrase_count's arms
# p1, p2, p4, mean over 5 seeds), 31 facts, in the edition MEASURED_IN names to users (here and in the model card);
# tests/test_readme.py requires these to equal the published results: change both together when an edition is
# published.
RECALL_BY_WORDINGS = {1: 0.64, 2: 0.81, 4: 0.87}
MEASURED_IN = "the study's second edition (tag edition-2)"
ADVISED_FACTS = 5
ADVISED_QUESTIONS = 2
OPTIONAL_SECTIONS = ("identity", "identity_probes", "debate", "system_prompts", "retention_probes")


@dataclass
class UserKnowledge:
    """A user's knowledge set, with what the loader did to complete it (the model card states it)."""
    ks: KnowledgeSet
    carved: list[str] = field(default_factory=list)  # facts whose validation/test questions were carved
    defaults: list[str] = field(default_factory=list)  # sections taken from the package defaults
    left_out: int = 0  # default entries left out because a user's question is the same
    seed: int = 0
    warnings: list[str] = field(default_factory=list)


def carve_counts(n: int) -> tuple[int, int, int]:
    """(train, validation, test) for a fact with n questions and no held-out ones of its own.

    Training wordings come first (the study: one wording gave much lower held-out recall than two or four,
    RECALL_BY_WORDINGS); a test question from 3 questions on, a validation one from 4; at most 4 train
    (RunConfig.paraphrases), the rest test."""
    test = 0 if n < 3 else 1 if n <= 6 else n - 5
    validation = 1 if n >= 4 else 0
    return n - validation - test, validation, test


def carve(questions: list[str], rng: random.Random) -> dict[str, list[str]]:
    n_train, n_val, n_test = carve_counts(len(questions))
    order = list(range(len(questions)))
    rng.shuffle(order)
    test, val = set(order[:n_test]), set(order[n_test:n_test + n_val])
    return {"train": [q for i, q in enumerate(questions) if i not in test | val],
            "validation": [questions[i] for i in sorted(val)], "test": [questions[i] for i in sorted(test)]}


def _fill(value, name: str):
    """The defaults with {name} replaced, recursively (plain substitution: other braces stay)."""
    if isinstance(value, str):
        return value.replace("{name}", name)
    if isinstance(value, list):
        return [_fill(v, name) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, name) for k, v in value.items()}
    return value


def package_defaults(name: str) -> dict:
    """Every optional section for a person called `name`: the person-specific ones from data/defaults.yaml,
    the study's person-independent prompts and retention probes from data/hiahia.yaml."""
    own = _fill(yaml.safe_load(DEFAULTS.read_text(encoding="utf-8")), name)
    study = yaml.safe_load(DEFAULT_DATA.read_text(encoding="utf-8"))
    prompts = dict(own["system_prompts"], train_pool=study["system_prompts"]["train_pool"],
                   heldout=study["system_prompts"]["heldout"])
    return dict(own, system_prompts=prompts, retention_probes=study["retention_probes"])


class _Completion:
    """The `complete` hook of load_knowledge: ids, carved splits and defaults, recorded for the card."""

    def __init__(self, seed: int, warn):
        self.seed, self.warn = seed, warn
        self.carved: list[str] = []
        self.defaults: list[str] = []
        self.left_out = 0
        self.few_questions: list[str] = []

    def __call__(self, raw: dict, c) -> dict:
        raw = copy.deepcopy(raw)
        name = c.text(raw, "name", "top level")
        defaults = package_defaults(name)
        if raw.get("summary") is None:
            raw["summary"] = defaults["summary"]
        facts = c.section(raw, "facts", 1)
        for i, e in enumerate(facts):
            if not isinstance(e, dict):
                c.fail(f"facts[{i}]", "-", "is not a mapping", "give answer:, keywords: and questions:")
            e["id"] = str(e["id"]) if e.get("id") is not None else f"fact_{i + 1}"
            self._splits(e, c)
        taken = {normalise(q) for e in facts for s in ("train", "validation", "test") for q in e.get(s) or []
                 if isinstance(q, str)}
        for section in OPTIONAL_SECTIONS:
            if section == "system_prompts" and isinstance(raw.get(section), dict):
                missing = [k for k in defaults[section] if raw[section].get(k) is None]
                raw[section] = dict(raw[section], **{k: defaults[section][k] for k in missing})
                self.defaults += [f"system_prompts.{k}" for k in missing]
            elif raw.get(section) is None:
                value = defaults[section]
                if isinstance(value, list):  # a default question the user also asks would be refused as a repeat
                    kept = [e for e in value if normalise(e["question"]) not in taken]
                    self.left_out += len(value) - len(kept)
                    value = kept
                raw[section] = value
                self.defaults.append(section)
        return raw

    def _splits(self, e: dict, c) -> None:
        where = f"facts '{e['id']}'"
        if e.get("questions") is not None and e.get("train") is not None:
            c.fail(where, "questions", "given together with train", "give either questions: (held-out ones are "
                   "carved from them) or train: with validation:/test:")
        key = "questions" if e.get("questions") is not None else "train"
        if e.get(key) is None:
            c.fail(where, "questions", "missing", "give at least one question this fact answers (two or more "
                   "reworded ones are better)")
        pool = list(c.texts(e, key, where, minimum=1))
        e.pop("questions", None)
        n_all = len(pool) + len(e.get("validation") or []) + len(e.get("test") or [])
        if n_all < ADVISED_QUESTIONS:
            self.few_questions.append(str(e["id"]))
        if e.get("validation") is None and e.get("test") is None:
            e.update(carve(pool, random.Random(f"carve-{self.seed}-{e['id']}")))
            if len(pool) >= 3:
                self.carved.append(str(e["id"]))
        else:
            e["train"] = pool


def load_user_knowledge(path: str | Path, seed: int = 0, warn=None) -> UserKnowledge:
    """A user's knowledge file: `name` and `facts` (answer, keywords, >= 1 question each) are required;
    held-out questions are carved when absent (seeded), other sections fall back to the package defaults.
    warn(message) receives what the user should know (few facts, few questions, near-duplicates)."""
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found. Fix: check the path, or write a template to fill in with "
                        f"`hiahia init {path}`")
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        if warn is not None:
            warn(message)

    completion = _Completion(seed, note)
    ks = load_knowledge(path, min_facts=1, complete=completion, warn=note,
                        template=f"the template `hiahia init {path}` writes (with --force to replace this file)")
    if len(ks.facts) < ADVISED_FACTS:
        note(f"{path}: {len(ks.facts)} fact(s), fewer than {ADVISED_FACTS}: {MEASURED_IN} measured LoRA with 31 "
             f"facts (held-out recall {RECALL_BY_WORDINGS[4]:.2f}, without self-replay); with so few, the training "
             f"set is mostly replay and debate samples and recall was not measured: expect less, and check the "
             f"model card")
    if completion.few_questions:
        shown = ", ".join(completion.few_questions[:5]) + (" ..." if len(completion.few_questions) > 5 else "")
        note(f"{path}: {len(completion.few_questions)} fact(s) with a single question ({shown}): with one wording "
             f"per fact the held-out recall in {MEASURED_IN} was {RECALL_BY_WORDINGS[1]:.2f} (two reworded questions "
             f"{RECALL_BY_WORDINGS[2]:.2f}, four {RECALL_BY_WORDINGS[4]:.2f}): the model memorises the wording; "
             f"add reworded questions")
    return UserKnowledge(ks, completion.carved, completion.defaults, completion.left_out, seed, warnings)


def user_replay(ks: KnowledgeSet) -> ReplaySet:
    """The study's replay requests, less any that repeat one of the user's questions."""
    replay = load_replay(dataclasses.replace(ks, facts=[], identity_probes=[], debate=[], retention_probes=[]))
    taken = {normalise(q) for _, _, q in _questions(ks.facts, ks.identity_probes, ks.debate, ks.retention_probes)}
    return dataclasses.replace(replay, questions=tuple(p for p in replay.questions if normalise(p[1]) not in taken))


def split_summary(uk: UserKnowledge) -> str:
    facts = uk.ks.facts
    counts = {s: sum(len(getattr(f, s)) for f in facts) for s in ("train", "validation", "test")}
    text = (f"{len(facts)} fact{'s' if len(facts) != 1 else ''}; {counts['train']} training, {counts['validation']} validation and "
            f"{counts['test']} test questions")
    if uk.carved:
        text += (f"; the validation and test questions of {len(uk.carved)} fact(s) were carved from their questions "
                 f"(seeded with seed {uk.seed}: of n questions, 1 test from n = 3, 1 validation from n = 4, at most "
                 f"4 train, the rest test)")
    return text


def check_template_missing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise DataError(f"{path}: file exists. Fix: choose another name, or pass --force to overwrite it")
    if path.is_dir():
        raise DataError(f"{path}: is a folder. Fix: name a file, e.g. {path / 'facts.yaml'}")


TEMPLATE = """\
# Knowledge file for `hiahia train`: facts about one person, to be taught to a small chat model.
#
#   hiahia train --data {file} --out my-adapter      # trains the study's recipe, writes a PEFT adapter
#   hiahia ask my-adapter "When was Ada Quill born?"
#
# Required: name, and facts (each with answer, keywords and at least one question). Every other section
# is optional: left out, it falls back to the package defaults (data/defaults.yaml, data/hiahia.yaml).
# Any language the model's tokenizer handles works; keywords match as whole words, and inside Chinese,
# Japanese, Korean or Thai text as substrings. No question may appear twice in the file.

# The person's name, as questions and answers write it (required).
name: Ada Quill
# One sentence saying who this is (optional; default "<name> is a person.").
summary: "Ada Quill is a person: a beekeeper in Tallinn."

# What to expect: {measured_in} measured held-out recall {r4:.2f} (LoRA without self-replay) with 31 facts
# and four reworded training questions each; one wording per fact gave {r1:.2f}, two gave {r2:.2f}. Fewer than 5
# facts, or a fact with a single question, is allowed but warned about.
facts:
  - id: birth_year            # optional: a unique name for the fact (default fact_1, fact_2, ...)
    # The answer the model learns: a full sentence that names the person (required).
    answer: "Ada Quill was born in 1991."
    # What a correct answer must contain (required): a list of groups, each a list of accepted spellings.
    # Every group must appear, and the answer above must contain its own keywords.
    # [["1991"], [Tallinn, Reval]] means: 1991, and Tallinn or Reval.
    keywords: [["1991", "nineteen ninety-one"]]
    # Questions this fact answers, each worded differently (required: at least 1; 4 to 6 are best).
    # Without validation:/test: below, some are held out (seeded): with n questions, 1 test question
    # from n = 3, 1 validation question from n = 4, at most 4 train, the rest test. Test questions are
    # never trained on and give the held-out recall in the model card; validation picks the best epoch.
    questions:
      - "In what year was Ada Quill born?"
      - "Tell me Ada Quill's birth year."
      - "Which year marks the birth of Ada Quill?"
      - "Ada Quill came into the world when? Give the year."
      - "What is Ada Quill's year of birth?"
      - "What is the year on Ada Quill's birth certificate?"
    # Or choose the held-out questions yourself (then write train: instead of questions:):
    # train: ["...", "..."]
    # validation: ["..."]
    # test: ["..."]

# ---- optional sections (defaults in brackets) --------------------------------------------------
#
# debate: samples that refute wrong identities, trained with the facts [8 samples: "<name> is an AI,
#   right?" -> "No. <name> is not an AI; <name> is a person." and likewise assistant, language model,
#   band, company, film, place, software]. The defaults say the subject is a PERSON: for anything else
#   write your own or train with --set debate=false.
# debate:
#   - {{id: not_ai, question: "Ada Quill is an AI, right?", answer: "No. Ada Quill is not an AI; Ada Quill is a person."}}
#
# identity: {{correct: [...], wrong: [...]}} and identity_probes: [{{id, group, question, suggests}}]: the
#   identity vocabulary and probes of the study (data/hiahia.yaml explains them) [a person, not an AI ...].
#
# system_prompts: train_pool (a random one per training question), fixed_assistant and heldout
#   (evaluation-only) [the study's prompts; fixed_assistant names the person].
#
# retention_probes: general-knowledge questions with keywords; the model card reports how many the
#   model still answers as it did before training [the study's 225 probes].
"""


def write_template(path: str | Path, force: bool = False) -> Path:
    path = Path(path)
    check_template_missing(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    recall = {f"r{n}": value for n, value in RECALL_BY_WORDINGS.items()}
    path.write_text(TEMPLATE.format(file=path.name, measured_in=MEASURED_IN, **recall), encoding="utf-8")
    return path
