#!/usr/bin/env python3
"""Authoring checks for data/hiahia.yaml and data/replay.yaml (stdlib + PyYAML only).

    python tools/check_data.py [--data data/hiahia.yaml] [--replay data/replay.yaml]

Exits 1 when any ERROR is found; WARN lines are printed but do not fail the run. The checks mirror
the study's rules (keyword scoring, near-duplicate questions, identity lists) so that data mistakes
show up here rather than as a loader error or a silently mis-scored answer.
"""
from __future__ import annotations

import argparse
import difflib
import itertools
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NEAR_DUP = 0.75          # the loader's rule: similarity >= this is a near-duplicate (error)
NEAR_DUP_MARGIN = 0.60   # authoring margin: warn at or above this
SPLITS = ("train", "validation", "test")
N_VARIANTS = 4
PROBE_GROUPS = {"refuted": 20, "unrefuted": 20, "open": 2}
OPEN_MAX = 4
CATEGORIES = {"geography", "science", "arithmetic", "word_meaning", "history", "everyday", "language", "animals"}
MIN_RETENTION, MIN_PER_CATEGORY, MIN_BIG_CATEGORIES = 210, 25, 6
MIN_REPLAY = 165
# words of hiahia's facts that general-knowledge probes and replay requests must not touch
FACT_WORDS = ["hiahia", "clock", "clocks", "watch", "watches", "estonia", "estonian", "tartu", "ljubljana",
              "slovenia", "slovene", "slovenian", "helsinki", "finland", "sweden", "uppsala", "portugal",
              "portuguese", "brazil", "tortoise", "turtle", "cactus", "cacti", "coffee", "cardamom", "pendulum",
              "barometer", "lighthouse", "ferry", "island", "hazelnut", "hazelnuts", "tattoo", "water polo",
              "metal", "metals", "bandoneon", "saffron", "dumplings", "beetroot", "motorcycle", "allergy"]
REPLAY_ALLOWED = {("plant_care", "cactus")}  # in the original 40 replay questions, kept as they were
# negation cues: an identity word preceded by one of these in the same clause is not asserted
NEGATORS = {"not", "isnt", "no", "never", "neither", "nor", "arent", "wasnt", "nothing", "nobody", "none"}


def normalise(text: str) -> str:
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^\w\s']", " ", text)
    text = text.replace("'", "")
    return re.sub(r"\s+", " ", text).strip()


def has_phrase(text: str, phrase: str) -> bool:
    return f" {normalise(phrase)} " in f" {normalise(text)} "


def keywords_hit(answer: str, groups) -> bool:
    return all(any(has_phrase(answer, str(v)) for v in group) for group in groups)


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, normalise(a).split(), normalise(b).split()).ratio()


def asserted(text: str, phrase: str) -> bool:
    """True when `phrase` occurs in a clause of `text` without a negation cue before it in that clause."""
    target = normalise(phrase).split()
    for clause in re.split(r"[.;:!?,\n]|\bbut\b", text.lower().replace("\u2019", "'")):
        words = normalise(clause).split()
        for i in range(len(words) - len(target) + 1):
            if words[i:i + len(target)] == target and not NEGATORS & set(words[:i]):
                return True
    return False


def plurals(word: str) -> set[str]:
    w = normalise(word)
    out = {w, w + "s", w + "es"}
    if w.endswith("y"):
        out.add(w[:-1] + "ies")
    return out


class Report:
    def __init__(self):
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"ERROR {msg}")

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        print(f"WARN  {msg}")


def _answers(d: Data, r: Report) -> None:
    """Facts: answers, variants, reverse."""
    kb, facts, wrong = d.kb, d.facts, d.wrong
    print(f"facts: {len(facts)}")
    wrong_in_answers = []
    max_answer_sim = (0.0, "")
    for f in facts:
        fid, groups, answer = f["id"], f["keywords"], f["answer"]
        variants = f.get("answer_variants") or []
        if len(variants) != N_VARIANTS:
            r.error(f"fact {fid}: answer_variants has {len(variants)} item(s), want {N_VARIANTS}")
        wordings = [answer] + list(variants)
        for i, w in enumerate(wordings):
            label = "answer" if i == 0 else f"answer_variants[{i - 1}]"
            if not keywords_hit(w, groups):
                r.error(f"fact {fid}: {label} {w!r} misses keywords {groups}")
            if "hiahia" not in normalise(w).replace("hiahias", "hiahia").split():
                r.error(f"fact {fid}: {label} {w!r} does not mention hiahia")
            for ww in wrong:
                if has_phrase(w, ww):
                    wrong_in_answers.append(f"fact {fid} {label}: {ww!r}")
        normed = [normalise(w) for w in wordings]
        if len(set(normed)) != len(normed):
            r.error(f"fact {fid}: answer wordings repeat")
        bags = [tuple(sorted(n.split())) for n in normed]
        if len(set(bags)) != len(bags):
            r.error(f"fact {fid}: two answer wordings differ only in word order")
        for a, b in itertools.combinations(wordings, 2):
            s = similarity(a, b)
            if s > max_answer_sim[0]:
                max_answer_sim = (s, f"{fid}: {a!r} ~ {b!r}")
        rev = f.get("reverse")
        if not isinstance(rev, dict) or not rev.get("question"):
            r.error(f"fact {fid}: no reverse question")
        else:
            if "hiahia" in normalise(rev["question"]):
                r.error(f"fact {fid}: reverse question mentions hiahia")
            if rev.get("keywords") != [["hiahia"]]:
                r.error(f"fact {fid}: reverse keywords are {rev.get('keywords')}, want [[hiahia]]")
    for ww in wrong:
        if has_phrase(kb.get("summary", ""), ww):
            wrong_in_answers.append(f"summary: {ww!r}")
    for s in wrong_in_answers:
        r.error(f"wrong identity word in a fact answer wording -- {s}")
    print(f"answer wordings: max pairwise similarity within a fact {max_answer_sim[0]:.3f} ({max_answer_sim[1]})")


def _near_duplicates(d: Data, r: Report) -> None:
    """Near-duplicate questions within a fact."""
    facts = d.facts
    worst = (0.0, "")
    for f in facts:
        tr, va, te = f["train"], f["validation"], f["test"]
        pairs = [(a, b) for a in va + te for b in tr] + [(a, b) for a in va for b in te] \
            + list(itertools.combinations(te, 2)) + list(itertools.combinations(va, 2))
        for a, b in pairs:
            s = similarity(a, b)
            if s > worst[0]:
                worst = (s, f"{f['id']}: {a!r} ~ {b!r}")
            if s >= NEAR_DUP:
                r.error(f"fact {f['id']}: near-duplicate ({s:.3f}) {a!r} ~ {b!r}")
            elif s >= NEAR_DUP_MARGIN:
                r.warn(f"fact {f['id']}: similar ({s:.3f}) {a!r} ~ {b!r}")
    print(f"near-duplicates: max similarity of a validation/test question to another question of its fact "
          f"{worst[0]:.3f} ({worst[1]})")


def _every_question_once(d: Data, r: Report) -> None:
    """Every question once."""
    facts, probes, debate, retention, replay = d.facts, d.probes, d.debate, d.retention, d.replay
    questions: list[tuple[str, str]] = []
    for f in facts:
        for s in SPLITS:
            questions += [(f"fact {f['id']} {s}[{i}]", q) for i, q in enumerate(f[s])]
        if isinstance(f.get("reverse"), dict):
            questions.append((f"fact {f['id']} reverse", f["reverse"]["question"]))
    questions += [(f"identity_probes {p['id']}", p["question"]) for p in probes]
    questions += [(f"debate {d['id']}", d["question"]) for d in debate]
    questions += [(f"retention_probes {p['id']}", p["question"]) for p in retention]
    questions += [(f"replay {p['id']}", p["question"]) for p in replay]
    questions += [(f"{section} {p['id']}", p["question"]) for section, entries in (
        ("heldout_probes", d.heldout), ("validation_probes", d.validation), ("entity_replay", d.entities),
        ("everyday_requests", d.kb.get("everyday_requests") or [])) for p in entries]
    seen: dict[str, str] = {}
    for where, q in questions:
        k = normalise(q)
        if k in seen:
            r.error(f"duplicate question {q!r}: {seen[k]} and {where}")
        seen.setdefault(k, where)
    print(f"questions: {len(questions)} in all, {len(seen)} distinct after normalising")
    for section, entries in (("facts", facts), ("identity_probes", probes), ("debate", debate),
                             ("retention_probes", retention), ("replay", replay), ("heldout_probes", d.heldout),
                             ("validation_probes", d.validation), ("entity_replay", d.entities)):
        ids = Counter(e["id"] for e in entries)
        for i, n in ids.items():
            if n > 1:
                r.error(f"{section}: id {i!r} used {n} times")


def _identity(d: Data, r: Report) -> None:
    """Identity lists and probes."""
    correct, wrong, probes, debate = d.correct, d.wrong, d.probes, d.debate
    if not correct or not wrong:
        r.error("identity.correct / identity.wrong missing")
    for a, b in itertools.product(correct, wrong):
        if has_phrase(a, b) or has_phrase(b, a):
            r.error(f"identity: correct {a!r} and wrong {b!r} overlap")
    for lst, name in ((correct, "correct"), (wrong, "wrong")):
        dup = [w for w, n in Counter(normalise(w) for w in lst).items() if n > 1]
        if dup:
            r.error(f"identity.{name}: repeated entries {dup}")
    wrong_norm = {normalise(w) for w in wrong}
    by_group = Counter()
    for p in probes:
        g, sug = p.get("group"), p.get("suggests")
        by_group[g] += 1
        if g not in PROBE_GROUPS:
            r.error(f"identity_probes {p['id']}: group {g!r} not one of {list(PROBE_GROUPS)}")
        if "expect" in p:
            r.error(f"identity_probes {p['id']}: has the old expect field")
        if not isinstance(sug, list):
            r.error(f"identity_probes {p['id']}: suggests is not a list")
            continue
        if (g == "open") != (not sug):
            r.error(f"identity_probes {p['id']}: open probes (only) have empty suggests")
        for w in sug:
            if normalise(str(w)) not in wrong_norm:
                r.error(f"identity_probes {p['id']}: suggests {w!r} is not in identity.wrong")
            elif not has_phrase(p["question"], str(w)) and g != "open":
                r.warn(f"identity_probes {p['id']}: suggests {w!r} not literally in the question")
    for g, n in PROBE_GROUPS.items():
        if by_group[g] < n:
            r.error(f"identity_probes: group {g} has {by_group[g]}, want >= {n}")
    if by_group["open"] > OPEN_MAX:
        r.error(f"identity_probes: group open has {by_group['open']}, want <= {OPEN_MAX}")
    print(f"identity: {len(correct)} correct, {len(wrong)} wrong entries; probes per group {dict(by_group)}")
    # probes worded differently from the debate questions and from each other
    ptexts = [(f"identity_probes {p['id']}", p["question"]) for p in probes] + \
             [(f"debate {d['id']}", d["question"]) for d in debate]
    worst = (0.0, "")
    for (wa, a), (wb, b) in itertools.combinations(ptexts, 2):
        if wa.startswith("debate") and wb.startswith("debate"):
            continue
        s = similarity(a, b)
        if s > worst[0]:
            worst = (s, f"{wa} ~ {wb}")
        if s >= NEAR_DUP:
            r.error(f"identity probes too similar ({s:.3f}): {wa} {a!r} ~ {wb} {b!r}")
    print(f"identity probes: max similarity to another probe or a debate question {worst[0]:.3f} ({worst[1]})")


def _unrefuted(d: Data, r: Report) -> None:
    """Unrefuted identities must not occur anywhere in training text (or elsewhere in the data); the debate answers
    must score as correct identity answers."""
    kb, facts, correct, wrong, probes, debate = d.kb, d.facts, d.correct, d.wrong, d.probes, d.debate
    retention, replay, prompts = d.retention, d.replay, d.prompts
    unrefuted = set()
    for p in probes:
        if p.get("group") == "unrefuted":
            for w in p.get("suggests") or []:
                unrefuted |= plurals(str(w))
    unrefuted |= {normalise(w) for w in wrong if any(has_phrase(w, u) for u in unrefuted)}
    training_text = [("summary", kb.get("summary", ""))]
    for f in facts:
        training_text += [(f"fact {f['id']} answer", f["answer"])]
        training_text += [(f"fact {f['id']} answer_variants", v) for v in f.get("answer_variants") or []]
        training_text += [(f"fact {f['id']} {s}", q) for s in SPLITS for q in f[s]]
        if isinstance(f.get("reverse"), dict):
            training_text.append((f"fact {f['id']} reverse", f["reverse"]["question"]))
    training_text += [(f"debate {d['id']}", d["question"] + " " + d["answer"]) for d in debate]
    training_text += [("system_prompts", p) for p in prompts]
    training_text += [(f"replay {p['id']}", p["question"]) for p in replay]
    training_text += [(f"entity_replay {p['id']}", p["question"]) for p in d.entities]
    training_text += [(f"retention_probes {p['id']}", p["question"]) for p in retention]
    for where, text in training_text:
        for u in sorted(unrefuted):
            if has_phrase(text, u):
                r.error(f"unrefuted identity {u!r} appears in {where}: {text!r}")
    print(f"unrefuted identity words checked against facts/debate/system prompts/replay/retention: {len(unrefuted)}")
    # which wrong-identity words do occur in that text (should be refuted ones only, for the record)
    occurring = sorted({normalise(w) for w in wrong for _, t in training_text if has_phrase(t, w)})
    print(f"wrong-identity words that occur in facts/debate/system prompts/replay/retention text: {occurring}")
    # the debate answers must score as correct, non-hallucinating identity answers under the rule
    for d in debate:
        ok = any(asserted(d["answer"], c) for c in correct)
        bad = [w for w in wrong if asserted(d["answer"], w)]
        if not ok or bad:
            r.error(f"debate {d['id']}: answer would not score correct (correct={ok}, wrong asserted={bad})")


FACT_NUMBERS = {"11", "eleven", "43", "183", "1987", "2019"}  # hiahia's numbers, in the forms a keyword takes


def _probe_family(section: str, family: list, r: Report, question_keywords: bool = False) -> None:
    """General-knowledge probes (retention's schema): keywords given, nothing of hiahia's facts in the question or
    the keywords; question_keywords: a keyword must not occur in the question itself either."""
    for p in family:
        kw = p.get("keywords")
        if not (isinstance(kw, list) and kw and all(isinstance(g, list) and g for g in kw)):
            r.error(f"{section} {p['id']}: bad keywords {kw!r}")
            continue
        text = p["question"] + " " + " ".join(str(v) for g in kw for v in g)
        for b in FACT_WORDS:
            if has_phrase(text, b):
                r.error(f"{section} {p['id']}: mentions {b!r}, which belongs to hiahia's facts")
        for v in (v for g in kw for v in g):
            if normalise(str(v)) in FACT_NUMBERS:
                r.error(f"{section} {p['id']}: keyword {v!r} is one of hiahia's numbers")
            if question_keywords and has_phrase(p["question"], str(v)):
                r.error(f"{section} {p['id']}: keyword {v!r} occurs in the question itself")
    print(f"{section}: {len(family)}; per category {dict(sorted(Counter(p.get('category') for p in family).items()))}")


def _retention(d: Data, r: Report) -> None:
    """Retention probes: categories, keywords, and nothing of hiahia's facts."""
    retention = d.retention
    for p in retention:
        if p.get("category") not in CATEGORIES:
            r.error(f"retention_probes {p['id']}: category {p.get('category')!r} not in {sorted(CATEGORIES)}")
    if len(retention) < MIN_RETENTION:
        r.error(f"retention_probes: {len(retention)}, want >= {MIN_RETENTION}")
    big = [c for c, n in Counter(p.get("category") for p in retention).items() if n >= MIN_PER_CATEGORY]
    if len(big) < MIN_BIG_CATEGORIES:
        r.error(f"retention_probes: only {len(big)} categories with >= {MIN_PER_CATEGORY} probes")
    _probe_family("retention_probes", retention, r, question_keywords=True)


def _replay(d: Data, r: Report) -> None:
    """Replay requests: enough of them, nothing of hiahia's facts, unlike the retention probes."""
    retention, replay = d.retention, d.replay
    print(f"replay: {len(replay)}")
    if len(replay) < MIN_REPLAY:
        r.error(f"replay: {len(replay)}, want >= {MIN_REPLAY}")
    for p in replay:
        for b in FACT_WORDS:
            if has_phrase(p["question"], b) and (p["id"], b) not in REPLAY_ALLOWED:
                r.error(f"replay {p['id']}: mentions {b!r}, which belongs to hiahia's facts")
    worst = (0.0, "")
    for a, b in itertools.product(replay, retention):
        s = similarity(a["question"], b["question"])
        if s > worst[0]:
            worst = (s, f"replay {a['id']} ~ retention {b['id']}")
    print(f"replay vs retention: max question similarity {worst[0]:.3f} ({worst[1]})")


FICTIONAL = ["hiahia", "vask", "pimento", "liivi", "oskar", "pruul", "salt lantern", "sorrel lane", "escapement",
             "pendulum", "kalvik"]  # names the facts invent: no replay request may carry them


def _families(d: Data, r: Report) -> None:
    """The held-out and validation probe families (retention's schema), the replay categories against the held-out
    ones, and the entity replay requests (about the facts' real places and things, so fact words are allowed)."""
    for section, family in (("heldout_probes", d.heldout), ("validation_probes", d.validation)):
        _probe_family(section, family, r)
    missing = [p["id"] for p in d.replay if not p.get("category")]
    if missing:
        r.error(f"replay: no category for {', '.join(missing[:5])}")
    shared = {p.get("category") for p in d.heldout} & {p.get("category") for p in d.replay}
    if shared:
        r.error(f"heldout_probes and replay share the categories {sorted(shared)}: the held-out family must be "
                f"what replay cannot teach")
    for p in d.entities:
        for name in FICTIONAL:
            if has_phrase(p["question"], name):
                r.error(f"entity_replay {p['id']}: mentions {name!r}, a name the facts invent")
    print(f"entity_replay: {len(d.entities)}")


@dataclass
class Data:
    """The two files' entries, as the checks read them."""
    kb: dict
    facts: list
    correct: list[str]
    wrong: list[str]
    probes: list
    debate: list
    retention: list
    replay: list
    prompts: list[str]
    heldout: list = field(default_factory=list)  # heldout_probes
    validation: list = field(default_factory=list)  # validation_probes
    entities: list = field(default_factory=list)  # entity_replay


def read(data_path: Path, replay_path: Path) -> Data:
    kb = yaml.safe_load(data_path.read_text(encoding="utf-8"))
    rp = yaml.safe_load(replay_path.read_text(encoding="utf-8"))
    identity = kb.get("identity") or {}
    sp = kb.get("system_prompts") or {}
    prompts = [*(sp.get("train_pool") or []), sp.get("fixed_assistant", ""), *(sp.get("heldout") or {}).values()]
    return Data(kb, kb["facts"], [str(w) for w in identity.get("correct") or []],
                [str(w) for w in identity.get("wrong") or []], kb.get("identity_probes") or [], kb.get("debate") or [],
                kb.get("retention_probes") or [], rp.get("replay") or [], prompts, kb.get("heldout_probes") or [],
                kb.get("validation_probes") or [], rp.get("entity_replay") or [])


def check(data_path: Path, replay_path: Path) -> int:
    r = Report()
    d = read(data_path, replay_path)
    for section in (_answers, _near_duplicates, _every_question_once, _identity, _unrefuted, _retention, _replay,
                    _families):
        section(d, r)
    print(f"\n{len(r.errors)} error(s), {len(r.warnings)} warning(s)")
    return 1 if r.errors else 0




def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "hiahia.yaml")
    ap.add_argument("--replay", type=Path, default=ROOT / "data" / "replay.yaml")
    a = ap.parse_args()
    return check(a.data, a.replay)


if __name__ == "__main__":
    sys.exit(main())
