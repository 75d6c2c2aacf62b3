"""The knowledge set and the replay requests: data/hiahia.yaml and data/replay.yaml, loaded and validated.

Every validation error names the file, the entry and the field, and says how to fix it.
"""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.paths import DATA
from core.run.scoring import IdentityVocabulary, keywords_hit, normalise

DEFAULT_DATA = DATA / "hiahia.yaml"
DEFAULT_REPLAY = DEFAULT_DATA.parent / "replay.yaml"
SPLIT_COUNTS = {"train": 4, "validation": 1, "test": 2}


class DataError(ValueError):
    """The knowledge file is malformed; the message names file, entry and field."""


@dataclass(frozen=True)
class Fact:
    id: str
    answer: str
    keywords: tuple[tuple[str, ...], ...]
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    reverse_question: str | None = None
    reverse_keywords: tuple[tuple[str, ...], ...] = ()
    answer_variants: tuple[str, ...] = ()  # other natural wordings of `answer` (the varied-answers regime)
    distractors: tuple[str, ...] = ()  # wrong answers worded like `answer`: recall_mc's other choices


@dataclass(frozen=True)
class Probe:
    """A retention probe (keywords, category) or an identity probe (group, suggests)."""
    id: str
    question: str
    keywords: tuple[tuple[str, ...], ...] = ()
    category: str = ""
    group: str = ""  # identity: refuted | unrefuted | open
    suggests: tuple[str, ...] = ()  # identity: the wrong identities the question puts forward
    gold: str = ""  # retention: the right answer as a choice of retention_mc
    distractors: tuple[str, ...] = ()  # retention: wrong answers of the same kind, retention_mc's other choices

    @property
    def form(self) -> str:
        """An identity probe's form: yesno ("Is hiahia a band?") or open ("Who directed the movie hiahia?")."""
        return "yesno" if normalise(self.question).split()[:1] in ([w] for w in YES_NO_OPENERS) else "open"


@dataclass(frozen=True)
class Debate:
    id: str
    question: str
    answer: str


@dataclass
class KnowledgeSet:
    path: Path
    name: str
    summary: str
    facts: list[Fact]
    identity_probes: list[Probe]
    debate: list[Debate]
    train_prompts: list[str]
    named_prompts: dict[str, str]  # fixed_assistant and the held-out ones
    heldout_prompts: list[str]  # names of the held-out (evaluation-only) prompts
    retention_probes: list[Probe]
    identity: IdentityVocabulary = IdentityVocabulary((), ())
    sha256: str = ""
    everyday_requests: list[Probe] = field(default_factory=list)  # unrelated requests: where intrusion shows
    reverse_distractors: tuple[str, ...] = ()  # other people of the facts: reverse_mc's other choices
    # general knowledge in categories no replay request touches: retention where replay cannot teach to the test
    heldout_probes: list[Probe] = field(default_factory=list)
    validation_probes: list[Probe] = field(default_factory=list)  # general knowledge for choosing an epoch only

    def identity_choices(self, probe: Probe) -> tuple[str, ...]:
        """identity_mc's choices for an identity probe: the right identity first, then wrong ones: what the probe
        suggests, filled up from IDENTITY_FILLERS ("hiahia is a rock band."), MC_DISTRACTORS in all."""
        vocab = {normalise(w) for w in self.identity.wrong}
        wrong = []
        for w in (*probe.suggests, *IDENTITY_FILLERS):
            w = normalise(w)
            if w.endswith("s") and w[:-1] in vocab:
                w = w[:-1]  # "large language models" -> one large language model
            if w not in wrong and not any(w in other or other in w for other in wrong):
                wrong.append(w)
        written = [" ".join(ACRONYMS.get(word, word) for word in w.split()) for w in wrong[:MC_DISTRACTORS]]
        return (f"{self.name} is a person, a clock restorer." if self.name else "",
                *(f"{self.name} is {'an' if w[0].lower() in 'aeiou' else 'a'} {w}." for w in written))

    @property
    def intrusion_terms(self) -> tuple[str, ...]:
        """What intrudes when it turns up in an answer to an unrelated question: the persona's name (possessive too) and every fact
        keyword (Ljubljana, Pimento, tortoise, bandoneon, clock restorer ...) except the numbers (1987, eleven),
        which general answers use in their own right."""
        terms = [self.name, f"{self.name}'s"]  # "hiahia's home is Berlin"
        for f in self.facts:
            for group in f.keywords:
                if not any(ch.isdigit() for v in group for ch in v):
                    terms += [v for v in group if v not in terms]
        return tuple(terms)

    def prompt(self, name: str) -> str:
        if name not in self.named_prompts:
            raise DataError(f"{self.path}: system_prompts: no prompt named {name!r}; known: {', '.join(self.named_prompts)}")
        return self.named_prompts[name]


# A validation or test question this similar to a training question of the same fact (difflib ratio over
# normalised words) is a near-duplicate: it would measure recall of a seen wording, not a reworded one.
NEAR_DUPLICATE = 0.75
IDENTITY_GROUPS = ("refuted", "unrefuted", "open")
# the first words of an identity probe asked as a yes/no question (normalised: "isn't" -> "isnt")
YES_NO_OPENERS = ("is", "isnt", "are", "arent", "was", "wasnt", "do", "does", "did", "have", "has", "can", "could")
MC_DISTRACTORS = 3  # the least number of wrong choices of a multiple-choice item
# identity_mc's wrong identities after the ones a probe suggests: the original's hallucinations first
IDENTITY_FILLERS = ("ai system", "rock band", "company", "film", "software")
ACRONYMS = {"ai": "AI", "llm": "LLM", "tv": "TV"}


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, normalise(a).split(), normalise(b).split()).ratio()


# ---- loading and validation ---------------------------------------------------------------------

class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, field_name: str, problem: str, fix: str) -> None:
        raise DataError(f"{self.path}: {where}: field '{field_name}': {problem}. Fix: {fix}")

    def text(self, entry: dict, key: str, where: str) -> str:
        value = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(value, str) or not value.strip():
            self.fail(where, key, "missing or empty", "give a non-empty string")
        return value.strip()

    def texts(self, entry: dict, key: str, where: str, count: int | None = None, minimum: int = 1,
              noun: str = "question") -> tuple[str, ...]:
        value = entry.get(key)
        if not isinstance(value, list) or not value:
            n = count or minimum
            self.fail(where, key, "missing or empty", f"give a list of {'at least ' if not count else ''}{n} "
                      f"{noun}{'' if n == 1 else 's'}")
        if count is not None and len(value) != count:
            self.fail(where, key, f"has {len(value)} item(s)", f"give exactly {count}")
        if len(value) < minimum:
            self.fail(where, key, f"has {len(value)} item(s)", f"give at least {minimum}")
        for i, v in enumerate(value):
            if not isinstance(v, str) or not v.strip():
                self.fail(where, f"{key}[{i}]", "empty", "write the question text")
        return tuple(v.strip() for v in value)

    def keywords(self, entry: dict, key: str, where: str) -> tuple[tuple[str, ...], ...]:
        value = entry.get(key)
        if not isinstance(value, list) or not value:
            self.fail(where, key, "missing or empty", "give a list of keyword groups, e.g. [[mochi], [cat, kitten]]")
        groups = []
        for i, g in enumerate(value):
            g = [g] if isinstance(g, str) else g
            if not isinstance(g, list) or not g or not all(isinstance(v, (str, int)) and str(v).strip() for v in g):
                self.fail(where, f"{key}[{i}]", "is not a non-empty list of strings", "write e.g. [mochi] or [seven, '7']")
            groups.append(tuple(str(v).strip() for v in g))
        return tuple(groups)

    def ids(self, entries: list, section: str) -> None:
        seen = set()
        for i, e in enumerate(entries):
            ident = e.get("id") if isinstance(e, dict) else None
            if not isinstance(ident, str) or not ident.strip():
                self.fail(f"{section}[{i}]", "id", "missing", "give every entry a unique id")
            if ident in seen:
                self.fail(f"{section} '{ident}'", "id", "duplicate id", "rename one of the entries")
            seen.add(ident)

    def section(self, raw: dict, key: str, minimum: int) -> list:
        value = raw.get(key)
        if not isinstance(value, list) or len(value) < minimum:
            n = len(value) if isinstance(value, list) else 0
            self.fail("top level", key, f"has {n} entries", f"give at least {minimum}")
        return value


def yaml_error(path: Path, e: yaml.YAMLError) -> str:
    """One line naming the file, line and column (1-based, as editors count) and PyYAML's problem."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or (str(e).splitlines() or [e.__class__.__name__])[0]
    context = getattr(e, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{path}: not valid YAML{where}: {problem}" + (f" ({context})" if context else "")


def utf8_text(path: Path, data: bytes) -> str:
    """The file's bytes as text, or a DataError naming the file, where its first non-UTF-8 byte is, and the fix."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}, line {line}: {data[e.start:e.start + 1]!r}). "
                        f"Fix: save it as UTF-8") from None


def _read_yaml(path: Path, missing_fix: str, template: str) -> tuple[bytes, dict, _Checker]:
    """The file's bytes (for its hash), its parsed top-level mapping, and a checker naming the file."""
    if not path.exists():
        raise DataError(f"{path}: file not found. Fix: {missing_fix}")
    raw_bytes = path.read_bytes()
    text = utf8_text(path, raw_bytes)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DataError(f"{yaml_error(path, e)}. Fix: check indentation and quoting") from None
    c = _Checker(path)
    if not isinstance(raw, dict):
        c.fail("top level", "-", "is not a mapping", f"start from {template}")
    return raw_bytes, raw, c


def _questions(facts, probes, debate, retention):
    """Every question text of a knowledge set as (entry, field, text)."""
    for f in facts:
        for s in SPLIT_COUNTS:
            for i, q in enumerate(getattr(f, s)):
                yield f"facts '{f.id}'", f"{s}[{i}]", q
        if f.reverse_question:
            yield f"facts '{f.id}'", "reverse.question", f.reverse_question
    for section, entries in (("identity_probes", probes), ("debate", debate), ("retention_probes", retention)):
        for e in entries:
            yield f"{section} '{e.id}'", "question", e.question


# the lenient mode's splits (a user's file for the `hiahia` command): one training question is enough
LENIENT_SPLIT_MINIMUM = {"train": 1, "validation": 0, "test": 0}


def _fact(e: dict, c: _Checker, minimum: dict, path: Path, warn) -> Fact:
    where = f"facts '{e['id']}'"
    splits = {s: c.texts(e, s, where, count=None, minimum=n) if n or e.get(s) else () for s, n in minimum.items()}
    rq, rk = None, ()
    if e.get("reverse") is not None:
        rev = e["reverse"]
        if not isinstance(rev, dict):
            c.fail(where, "reverse", "is not a mapping", "give question: and keywords:")
        rq = c.text(rev, "question", where + " reverse")
        rk = c.keywords(rev, "keywords", where + " reverse")
    answer, keywords = c.text(e, "answer", where), c.keywords(e, "keywords", where)
    variants = (c.texts(e, "answer_variants", where, minimum=1, noun="wording of the answer")
                if e.get("answer_variants") is not None else ())
    for field_name, text in (("answer", answer), *((f"answer_variants[{i}]", v) for i, v in enumerate(variants))):
        if not keywords_hit(text, keywords):
            c.fail(where, field_name, f"{text!r} does not contain its own keywords {[list(g) for g in keywords]}",
                   "fix the keyword spelling or add the answer's wording as a variant")
    distractors = _fact_distractors(e, c, where, answer, keywords, required=minimum is SPLIT_COUNTS)
    for split in ("validation", "test"):
        for i, q in enumerate(splits[split]):
            for j, t in enumerate(splits["train"]):
                if similarity(q, t) >= NEAR_DUPLICATE and warn is not None:
                    warn(f"{path}: {where}: {split}[{i}] {q!r} is a near-duplicate of train[{j}] {t!r}: "
                         f"its recall measures a seen wording, so held-out recall overstates")
                elif similarity(q, t) >= NEAR_DUPLICATE:
                    c.fail(where, f"{split}[{i}]", f"{q!r} is a near-duplicate of train[{j}] {t!r} "
                           f"(word similarity {similarity(q, t):.2f} >= {NEAR_DUPLICATE})",
                           "reword it so it asks the same thing in other words")
    return Fact(e["id"], answer, keywords, splits["train"], splits["validation"], splits["test"], rq, rk, variants,
                distractors)


def _fact_distractors(e: dict, c: _Checker, where: str, answer: str, keywords, required: bool) -> tuple[str, ...]:
    """recall_mc's wrong choices: answers worded like `answer` that its keywords do not accept."""
    if e.get("distractors") is None and not required:
        return ()
    out = c.texts(e, "distractors", where, minimum=MC_DISTRACTORS, noun="wrong answer")
    for i, d in enumerate(out):
        if keywords_hit(d, keywords) or normalise(d) == normalise(answer):
            c.fail(where, f"distractors[{i}]", f"{d!r} is a right answer (it has the keywords {[list(g) for g in keywords]})",
                   "swap the fact's specific content for a wrong one of the same kind")
    if len({normalise(d) for d in out}) < len(out):
        c.fail(where, "distractors", "has the same wrong answer twice", "make each distractor different")
    return out


def _check_distractors_state_no_fact(c: _Checker, facts: list[Fact]) -> None:
    """A distractor may repeat what its fact's answer says around the tested content ("hiahia has a tortoise named
    ..."), never state another fact the answer does not: a wrong choice must not be a fact of the persona."""
    for f in facts:
        for i, d in enumerate(f.distractors):
            for g in facts:
                if g is not f and keywords_hit(d, g.keywords) and not keywords_hit(f.answer, g.keywords):
                    c.fail(f"facts '{f.id}'", f"distractors[{i}]", f"{d!r} states fact '{g.id}'",
                           "choose a wrong value that is no fact of the persona")


def _identity(raw: dict, c: _Checker) -> tuple[IdentityVocabulary, list[Probe]]:
    vocab_raw = raw.get("identity")
    if not isinstance(vocab_raw, dict):
        c.fail("top level", "identity", "missing", "give identity: {correct: [person, ...], wrong: [ai, band, ...]}")
    vocab = IdentityVocabulary(*(tuple(str(w).strip() for w in c.texts(vocab_raw, k, "identity", noun="word"))
                                 for k in ("correct", "wrong")))
    probes_raw = c.section(raw, "identity_probes", 1)
    c.ids(probes_raw, "identity_probes")
    probes = []
    for e in probes_raw:
        where = f"identity_probes '{e['id']}'"
        group = c.text(e, "group", where)
        if group not in IDENTITY_GROUPS:
            c.fail(where, "group", f"{group!r} is not a group", f"use one of {', '.join(IDENTITY_GROUPS)}")
        suggests = e.get("suggests") or []
        if not isinstance(suggests, list) or any(normalise(str(w)) not in {normalise(v) for v in vocab.wrong}
                                                  for w in suggests):
            c.fail(where, "suggests", f"{suggests!r} is not a list of identity.wrong entries",
                   "list the wrong identities the question puts forward, each also under identity.wrong")
        if (group == "open") != (not suggests):
            c.fail(where, "suggests", "open probes suggest nothing, the other groups suggest a wrong identity",
                   "fix the group or the suggests list")
        probes.append(Probe(e["id"], c.text(e, "question", where), group=group,
                            suggests=tuple(str(w) for w in suggests)))
    return vocab, probes


def _system_prompts(raw: dict, c: _Checker) -> tuple[list[str], dict[str, str], list[str]]:
    """(the training pool, every named prompt, the held-out prompts' names)."""
    sp = raw.get("system_prompts")
    if not isinstance(sp, dict):
        c.fail("top level", "system_prompts", "missing", "give train_pool, fixed_assistant and heldout")
    pool = list(c.texts(sp, "train_pool", "system_prompts", minimum=2, noun="system prompt"))
    named = {"fixed_assistant": c.text(sp, "fixed_assistant", "system_prompts")}
    heldout = sp.get("heldout")
    if not isinstance(heldout, dict) or not heldout:
        c.fail("system_prompts", "heldout", "missing or empty", "give named evaluation-only prompts, e.g. unseen_1: ...")
    for k, v in heldout.items():
        named[str(k)] = c.text(heldout, k, "system_prompts heldout")
        if normalise(named[str(k)]) in {normalise(p) for p in pool}:
            c.fail("system_prompts heldout", str(k), "also appears in train_pool", "held-out prompts must be unseen")
    return pool, named, [str(k) for k in heldout]


def _no_question_twice(c: _Checker, facts, probes, debate, retention) -> None:
    """No question text may appear twice anywhere: that would leak between splits."""
    seen: dict[str, str] = {}
    for where, field_name, q in _questions(facts, probes, debate, retention):
        k = normalise(q)
        if k in seen:
            c.fail(where, field_name, f"question {q!r} is also used in {seen[k]}", "reword one of them")
        seen[k] = f"{where} {field_name}"


def load_knowledge(path: str | Path = DEFAULT_DATA, min_facts: int = 24, complete=None, warn=None,
                   template: str = "data/hiahia.yaml") -> KnowledgeSet:
    """The validated knowledge set. The study's files must be complete; the `hiahia` command's lenient mode
    (core/facts/userfile.py) passes complete(raw mapping, checker) -> raw mapping, which fills in what a user's file
    omits before the checks run; then a fact needs only one training question, and with warn(message) a
    near-duplicate held-out question is a warning instead of an error. template: what an empty or malformed file's
    error says to start from."""
    path = Path(path)
    raw_bytes, raw, c = _read_yaml(path, "pass --data with a knowledge file in the schema of data/hiahia.yaml",
                                   template)
    if complete is not None:
        raw = complete(raw, c)
    minimum = LENIENT_SPLIT_MINIMUM if complete is not None else SPLIT_COUNTS
    name = c.text(raw, "name", "top level")
    summary = c.text(raw, "summary", "top level")
    facts_raw = c.section(raw, "facts", min_facts)
    c.ids(facts_raw, "facts")
    facts = [_fact(e, c, minimum, path, warn) for e in facts_raw]
    vocab, probes = _identity(raw, c)
    debate_raw = c.section(raw, "debate", 1)
    c.ids(debate_raw, "debate")
    debate = [Debate(e["id"], c.text(e, "question", f"debate '{e['id']}'"), c.text(e, "answer", f"debate '{e['id']}'"))
              for e in debate_raw]
    retention_raw = c.section(raw, "retention_probes", 1)
    c.ids(retention_raw, "retention_probes")
    retention = [_retention_probe(e, c, required=complete is None) for e in retention_raw]
    heldout, validation = (_probe_family(raw, c, section, required=complete is None)
                           for section in ("heldout_probes", "validation_probes"))
    _check_distractors_state_no_fact(c, facts)
    everyday = _everyday(raw, c, required=complete is None)
    reverse_distractors = (c.texts(raw, "reverse_distractors", "top level", minimum=MC_DISTRACTORS, noun="name")
                           if complete is None or raw.get("reverse_distractors") is not None else ())
    if normalise(name) in {normalise(d) for d in reverse_distractors}:
        c.fail("top level", "reverse_distractors", f"lists {name!r}, the right answer", "list other people")
    pool, named, heldout_prompts = _system_prompts(raw, c)
    _no_question_twice(c, facts, probes, debate, retention + everyday + heldout + validation)
    return KnowledgeSet(path, name, summary, facts, probes, debate, pool, named, heldout_prompts,
                        retention, vocab, hashlib.sha256(raw_bytes).hexdigest(), everyday, reverse_distractors,
                        heldout, validation)


def _probe_family(raw: dict, c: _Checker, section: str, required: bool) -> list[Probe]:
    """A further list of general-knowledge probes in retention_probes' schema (optional in a user's file)."""
    if raw.get(section) is None and not required:
        return []
    entries = c.section(raw, section, 1)
    c.ids(entries, section)
    return [_retention_probe(e, c, required, section) for e in entries]


def _retention_probe(e: dict, c: _Checker, required: bool, section: str = "retention_probes") -> Probe:
    where = f"{section} '{e['id']}'"
    keywords = c.keywords(e, "keywords", where)
    gold, distractors = "", ()
    if required or e.get("distractors") is not None:
        gold = c.text(e, "gold", where)
        if not keywords_hit(gold, keywords):
            c.fail(where, "gold", f"{gold!r} is not accepted by the keywords {[list(g) for g in keywords]}",
                   "write the right answer as retention_mc's right choice")
        distractors = c.texts(e, "distractors", where, minimum=MC_DISTRACTORS, noun="wrong answer")
        for i, d in enumerate(distractors):
            if keywords_hit(d, keywords):
                c.fail(where, f"distractors[{i}]", f"{d!r} is accepted by the keywords", "give a wrong answer")
    return Probe(e["id"], c.text(e, "question", where), keywords, category=str(e.get("category", "")), gold=gold,
                 distractors=distractors)


def _everyday(raw: dict, c: _Checker, required: bool) -> list[Probe]:
    """Requests about nothing in the facts (advice, how-to): where hiahia intruding into unrelated answers shows."""
    if raw.get("everyday_requests") is None and not required:
        return []
    entries = c.section(raw, "everyday_requests", 1)
    c.ids(entries, "everyday_requests")
    return [Probe(e["id"], c.text(e, "question", f"everyday_requests '{e['id']}'")) for e in entries]


@dataclass(frozen=True)
class ReplaySet:
    path: Path
    questions: tuple[tuple[str, str], ...]  # (id, question)
    sha256: str
    entities: tuple[tuple[str, str], ...] = ()  # (id, question): the real places and things the facts mention
    categories: tuple[str, ...] = ()  # every category a replay request has

    def chosen(self, n: int, source: str = "general") -> tuple[tuple[str, str], ...]:
        """The n requests RunConfig.replay and replay_source ask for: the first n of `replay` (general), of
        `entity_replay` (entities), or the first n//2 of the entities and the rest from the general ones (both)."""
        if source == "entities":
            return self.entities[:n]
        if source == "both":
            return self.entities[:n // 2] + self.questions[:n - n // 2]
        return self.questions[:n]


def load_replay(knowledge: KnowledgeSet, path: str | Path = DEFAULT_REPLAY) -> ReplaySet:
    """Questions for RunConfig.replay: `replay` (general requests, each with a category) and `entity_replay` (about
    the real places and things the facts mention; optional). None may repeat a question of the knowledge set, and
    no replay category may be one of the held-out probes' (that family measures retention replay cannot teach)."""
    path = Path(path)
    raw_bytes, raw, c = _read_yaml(path, "restore data/replay.yaml or run with replay=0", "data/replay.yaml")
    asked = _questions(knowledge.facts, knowledge.identity_probes, knowledge.debate,
                       knowledge.retention_probes + knowledge.everyday_requests + knowledge.heldout_probes
                       + knowledge.validation_probes)
    taken = {normalise(q): f"{where} {field_name}" for where, field_name, q in asked}
    heldout = {p.category for p in knowledge.heldout_probes}

    def section(name: str, minimum: int) -> tuple[tuple[str, str], ...]:
        entries = c.section(raw, name, minimum)
        c.ids(entries, name)
        out = []
        for e in entries:
            q = c.text(e, "question", f"{name} '{e['id']}'")
            if normalise(q) in taken:
                c.fail(f"{name} '{e['id']}'", "question", f"repeats {taken[normalise(q)]} of {knowledge.path}",
                       "replay questions must differ from every question the study asks or trains on")
            if name == "replay" and e.get("category") is not None:
                category = c.text(e, "category", f"replay '{e['id']}'")
                if category in heldout:
                    c.fail(f"replay '{e['id']}'", "category", f"{category!r} is a category of the held-out probes "
                           f"of {knowledge.path}", "replay no request in a held-out category")
            out.append((e["id"], q))
        return tuple(out)

    general = section("replay", 1)
    entities = section("entity_replay", 1) if raw.get("entity_replay") is not None else ()
    categories = tuple(sorted({str(e.get("category")) for e in raw["replay"] if e.get("category") is not None}))
    return ReplaySet(path, general, hashlib.sha256(raw_bytes).hexdigest(), entities, categories)
