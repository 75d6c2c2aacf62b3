"""How one answer is scored: keyword matching in any script, the identity claim reader, the echo test.

Deterministic rules, no judge model; data/labels/ holds human labels these rules are checked against.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from core.run.config import MODEL_DEFAULT

ECHO_WORDS = 8  # an answer containing 8 consecutive words of the system prompt (or all of a shorter one) echoes it


def normalise(text: str) -> str:
    """Lower-case, punctuation to spaces, apostrophes dropped ("isn't" -> "isnt", "hiahia's" -> "hiahias",
    so a possessive does not name hiahia as the answer to "who?"), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = re.sub(r"[^\w\s']", " ", text)
    text = text.replace("'", "")
    return re.sub(r"\s+", " ", text).strip()


def is_cjk(ch: str) -> bool:
    """Scripts written without spaces between words: Han, Hiragana, Katakana, Hangul, Thai."""
    o = ord(ch)
    return (0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF
            or 0xAC00 <= o <= 0xD7AF or 0x0E00 <= o <= 0x0E7F or 0x20000 <= o <= 0x2FA1F)


def _boundary(text: str, i: int, inner: str) -> bool:
    """Is position i (just outside a match whose edge character is `inner`) a word boundary? Text edges
    and spaces are; so is any neighbour when either side is a CJK character (no spaces there)."""
    if i < 0 or i >= len(text) or text[i] == " ":
        return True
    return is_cjk(text[i]) or is_cjk(inner)


def find_phrase(text: str, phrase: str) -> list[int]:
    """Start positions of `phrase` in normalised `text`: whole words in space-separated scripts,
    substrings inside CJK runs (and digits or Latin words next to CJK characters)."""
    phrase = normalise(phrase)
    if not phrase:
        return []
    out, start = [], text.find(phrase)
    while start != -1:
        end = start + len(phrase)
        if _boundary(text, start - 1, phrase[0]) and _boundary(text, end, phrase[-1]):
            out.append(start)
        start = text.find(phrase, start + 1)
    return out


def keywords_hit(answer: str, groups) -> bool:
    """True when every keyword group has at least one variant in the answer (see find_phrase)."""
    text = normalise(answer)
    return all(any(find_phrase(text, str(v)) for v in group) for group in groups)


def echoes(answer: str, system: str | None, n: int = ECHO_WORDS) -> bool:
    """True when the answer contains n consecutive (normalised) words of the system prompt (all of it if shorter)."""
    if not system or system == MODEL_DEFAULT:
        return False
    prompt_words = normalise(system).split()
    n = min(n, len(prompt_words))  # a short prompt counts as echoed when all of it is repeated
    answer_text = f" {normalise(answer)} "
    return any(f" {' '.join(prompt_words[i:i + n])} " in answer_text for i in range(len(prompt_words) - n + 1))


# ---- identity ----------------------------------------------------------------------------------

# a clause ends at sentence punctuation; "but", "instead" and "rather" start a new one ("not an AI but a person")
CLAUSE_END = re.compile(r"[.;:!?\n。！？；]|\bbut\b|\binstead\b|\brather\b|\bhowever\b", re.I)
NEGATIONS = ("not", "no", "never", "neither", "nor", "isnt", "arent", "wasnt", "werent", "doesnt", "dont", "didnt",
             "cannot", "cant", "nothing", "without", "unlike")
ANSWER_WORDS = ("yes", "no", "nope", "yeah", "yep")  # an opening yes/no answers the question, it negates nothing


@dataclass(frozen=True)
class IdentityVocabulary:
    correct: tuple[str, ...]  # what hiahia is (person, human, clock restorer ...)
    wrong: tuple[str, ...]  # what hiahia is not (AI, band, river ...)


# after a comma, a part with its own subject or verb starts a new clause ("hiahia is not an AI, hiahia is
# a person"); one without continues the clause and its negation ("not a band, a company or a film")
RESTART = {"hiahia", "hiahias", "he", "she", "they", "it", "who", "is", "was", "are", "were", "am", "works",
           "lives", "runs", "restores", "repairs", "i", "im", "this", "that"}


def _clauses(answer: str) -> list[str]:
    out = []
    for sentence in CLAUSE_END.split(answer):
        parts = [normalise(p) for p in re.split(r"[,，、]", sentence)]
        clause = []
        for part in parts:
            if clause and RESTART & set(part.split()):
                out.append(" ".join(clause))
                clause = []
            if part:
                clause.append(part)
        if clause:
            out.append(" ".join(clause))
    return [c for c in out if c]


def asserted_terms(answer: str, terms) -> list[str]:
    """The terms the answer asserts: found in a clause with no negation word before them in that clause."""
    clauses = _clauses(answer)
    return [term for term in terms if any(_asserted_in(c, term) for c in clauses)]


def general_answer_correct(answer: str, groups, persona: str) -> bool:
    """A general-knowledge answer is correct when every keyword group is asserted (not negated) in a
    clause that is not about the persona: "hiahia has four legs" does not answer "How many legs does a
    dog have?", and "hot is not cold" does not answer "What is the opposite of hot?"."""
    name = normalise(persona)
    clauses = [c for c in _clauses(answer) if not any(w in (name, name + "s") for w in c.split())]  # also "hiahia's"
    return all(any(_asserted_in(c, str(v)) for c in clauses for v in group) for group in groups)


def _asserted_in(clause: str, term: str) -> bool:
    words = clause.split()
    if words and words[0] in ANSWER_WORDS:
        clause = " ".join(words[1:])
    return any(not any(w in NEGATIONS for w in clause[:pos].split()) for pos in find_phrase(clause, term))


def identity_correct(answer: str, vocab: IdentityVocabulary, suggests_wrong: bool = True) -> bool:
    """An identity answer is correct when it asserts what hiahia is (a `correct` term, not negated) and
    asserts no wrong identity (a `wrong` term, not negated); when the probe suggests a wrong identity,
    an answer that opens with "yes" accepts it. Negated wrong identities ("not an AI", "isn't a band")
    are fine; an answer that never says what hiahia is (defines the term asked about, talks about
    itself) is not correct."""
    words = normalise(answer).split()
    if suggests_wrong and words and words[0] in ("yes", "yeah", "yep"):
        return False
    return bool(asserted_terms(answer, vocab.correct)) and not asserted_terms(answer, vocab.wrong)


def names_persona(answer: str, persona: str, vocab: IdentityVocabulary, question: str = "") -> bool:
    """A reverse question ("Which clock restorer was born in Tartu?") is answered when the answer gives the persona
    as the one asked about: the name in a clause where nothing negates it ("I don't know who hiahia is" does not
    count; "hiahia's assistant" is a possessive, not the name, unless the question asks "whose ...?"), and no wrong identity asserted in that clause
    ("hiahia is a band from Tartu" names hiahia as something else)."""
    names = (persona, persona + "s") if normalise(question).startswith("whose ") else (persona,)  # "hiahia's sister"
    return any(any(_asserted_in(c, n) for n in names) and not any(_asserted_in(c, w) for w in vocab.wrong)
               for c in _clauses(answer))


def intruding_terms(answer: str, reference_answer: str, terms, question: str = "", keywords=()) -> list[str]:
    """The terms (the persona's name and the facts' words) an answer to an unrelated question contains that the
    untrained model's answer to the same question did not ("The capital of France is Ljubljana", "The king of the
    jungle is a tortoise"). A term the question itself uses, or one of the question's own right answers
    (`keywords`), belongs there and never counts."""
    text, before, asked = normalise(answer), normalise(reference_answer), normalise(question)
    own = {normalise(str(v)) for group in keywords for v in group}
    return [t for t in terms if find_phrase(text, t) and not find_phrase(before, t) and not find_phrase(asked, t)
            and normalise(t) not in own]
