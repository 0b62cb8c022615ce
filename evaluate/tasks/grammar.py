"""The review grammar of the ``sentiment`` task and its gold reward.

A review is one or more sentences; each sentence is one clause or two clauses joined by ``and``/``but``,
closed by a full stop::

    sentence := clause [("and" | "but") clause] "."
    clause   := det noun copula ["not"] [intensifier] adjective      # "the plot was not very dull"
              | "i" ["really"] opinion det noun                       # "i really loved the cast"
              | "i would" ["not"] "recommend it"

The gold reward is the review's sentiment, with grammaticality built in: every sentence that does not parse,
that repeats an earlier sentence, or is left unfinished (no full stop) scores -1, the minimum. A review's
reward is the mean of its sentence scores, so it lies in [-1, 1] and degenerate text ("great great great")
earns the lowest reward, never the reward of the sentiment words it repeats.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

DETS = ("the", "this")
NOUNS = (
    "movie",
    "film",
    "plot",
    "acting",
    "script",
    "ending",
    "cast",
    "soundtrack",
    "story",
    "dialogue",
    "pacing",
    "director",
    "humor",
    "camera",
    "lead",
)
COPULAS = ("was", "is", "felt", "seemed")
INTENSIFIERS = ("very", "really", "truly", "quite")
POSITIVE = (
    "great",
    "wonderful",
    "superb",
    "brilliant",
    "charming",
    "moving",
    "delightful",
    "clever",
    "beautiful",
    "excellent",
)
NEGATIVE = ("awful", "boring", "dull", "terrible", "weak", "messy", "tedious", "bland", "clumsy", "predictable")
NEUTRAL = ("long", "short", "quiet", "unusual")
OPINION_POSITIVE = ("loved", "enjoyed", "liked", "adored")
OPINION_NEGATIVE = ("hated", "disliked")
CONJUNCTIONS = ("and", "but")
FUNCTION_WORDS = ("i", "not", "would", "recommend", "it", ".")

# Bumped whenever the grammar or the reward changes, so cached task data built from the old one is not reused.
GRAMMAR_VERSION = 1

_ADJECTIVE_POLARITY = {**dict.fromkeys(POSITIVE, 1.0), **dict.fromkeys(NEGATIVE, -1.0), **dict.fromkeys(NEUTRAL, 0.0)}
_OPINION_POLARITY = {**dict.fromkeys(OPINION_POSITIVE, 1.0), **dict.fromkeys(OPINION_NEGATIVE, -1.0)}
_PLAIN_STRENGTH = 0.7  # an unintensified clause is milder than "very ..."; the top reward needs an intensifier
_NEGATED_STRENGTH = 0.5  # "not great" is mildly negative, "not dull" mildly positive
_BUT_WEIGHT = 0.7  # in "x but y" the second clause carries the verdict


def vocabulary() -> list[str]:
    """Every word the grammar can produce, in a fixed order (the tokenizer's vocabulary)."""
    groups = (DETS, NOUNS, COPULAS, INTENSIFIERS, POSITIVE, NEGATIVE, NEUTRAL, OPINION_POSITIVE, OPINION_NEGATIVE)
    words = [w for group in (*groups, CONJUNCTIONS, FUNCTION_WORDS) for w in group]
    return list(dict.fromkeys(words))


def prompts() -> list[str]:
    """All task prompts: the opening ``det noun copula`` of a review, e.g. ``"the plot was"``."""
    return [f"{d} {n} {c}" for d in DETS for n in NOUNS for c in COPULAS]


# --- parsing and reward -------------------------------------------------------------------------------------


def _parse_clause(words: list[str], i: int) -> tuple[float, int] | None:
    """Parse one clause starting at ``words[i]``; return (polarity, index after the clause) or None."""
    n = len(words)
    if i + 2 < n and words[i] in DETS and words[i + 1] in NOUNS and words[i + 2] in COPULAS:
        j = i + 3
        negated = j < n and words[j] == "not"
        j += negated
        intensified = j < n and words[j] in INTENSIFIERS
        j += intensified
        if j < n and words[j] in _ADJECTIVE_POLARITY:
            base = _ADJECTIVE_POLARITY[words[j]]
            if negated:
                return -_NEGATED_STRENGTH * base, j + 1
            return base * (1.0 if intensified else _PLAIN_STRENGTH), j + 1
        return None
    if i < n and words[i] == "i":
        j = i + 1
        if words[j : j + 1] == ["would"]:
            negated = words[j + 1 : j + 2] == ["not"]
            j += 1 + negated
            if words[j : j + 2] == ["recommend", "it"]:
                return (-0.8 if negated else 0.8), j + 2
            return None
        intensified = words[j : j + 1] == ["really"]
        j += intensified
        if j + 2 < n and words[j] in _OPINION_POLARITY and words[j + 1] in DETS and words[j + 2] in NOUNS:
            return _OPINION_POLARITY[words[j]] * (1.0 if intensified else _PLAIN_STRENGTH), j + 3
    return None


def sentence_score(words: Sequence[str]) -> float | None:
    """Polarity in [-1, 1] of one sentence (without its full stop), or None if it does not parse."""
    words = list(words)  # the clause parser compares list slices
    first = _parse_clause(words, 0)
    if first is None:
        return None
    value, j = first
    if j == len(words):
        return value
    if words[j] not in CONJUNCTIONS:
        return None
    second = _parse_clause(words, j + 1)
    if second is None or second[1] != len(words):
        return None
    if words[j] == "but":
        return (1 - _BUT_WEIGHT) * value + _BUT_WEIGHT * second[0]
    return (value + second[0]) / 2


def _sentences(text: str) -> tuple[list[tuple[str, ...]], list[str]]:
    """Split at full stops: (finished sentences without their ".", the unfinished words after the last ".")."""
    sentences: list[list[str]] = [[]]
    for word in text.split():
        sentences[-1].append(word)
        if word == ".":
            sentences.append([])
    unfinished = sentences.pop()
    return [tuple(sentence[:-1]) for sentence in sentences], unfinished


def is_grammatical(text: str) -> bool:
    """Whether every sentence parses, none repeats, and the text ends with a full stop."""
    sentences, unfinished = _sentences(text)
    return (
        bool(sentences)
        and not unfinished
        and len(set(sentences)) == len(sentences)
        and all(sentence_score(sentence) is not None for sentence in sentences)
    )


def gold_reward(text: str) -> float:
    """The gold reward of a whole review (prompt + completion), in [-1, 1]; ungrammatical text scores -1."""
    sentences, unfinished = _sentences(text)
    scores: list[float] = []
    seen: set[tuple[str, ...]] = set()
    for body in sentences:
        value = sentence_score(body)
        # Repeating a sentence is the classic degenerate output; it earns nothing over saying it once.
        scores.append(-1.0 if value is None or body in seen else value)
        seen.add(body)
    if unfinished or not scores:
        scores.append(-1.0)
    return sum(scores) / len(scores)


# --- sampling reviews for supervised fine-tuning ------------------------------------------------------------


def _random_clause(rng: random.Random, opening: bool) -> list[str]:
    kind = "adjective" if opening else rng.choices(("adjective", "opinion", "recommend"), weights=(6, 3, 1))[0]
    if kind == "adjective":
        words = [rng.choice(DETS), rng.choice(NOUNS), rng.choice(COPULAS)]
        if rng.random() < 0.15:
            words.append("not")
        if rng.random() < 0.4:
            words.append(rng.choice(INTENSIFIERS))
        pool = rng.choices((POSITIVE, NEGATIVE, NEUTRAL), weights=(45, 45, 10))[0]
        return words + [rng.choice(pool)]
    if kind == "opinion":
        words = ["i"] + (["really"] if rng.random() < 0.4 else [])
        return words + [
            rng.choice(rng.choice((OPINION_POSITIVE, OPINION_NEGATIVE))),
            rng.choice(DETS),
            rng.choice(NOUNS),
        ]
    return ["i", "would"] + (["not"] if rng.random() < 0.5 else []) + ["recommend", "it"]


def random_review(rng: random.Random, max_sentences: int = 1) -> str:
    """One grammatical review of mixed sentiment; it always opens with a ``det noun copula`` clause."""
    sentences: list[str] = []
    while len(sentences) < rng.randint(1, max_sentences):
        clause = _random_clause(rng, opening=not sentences)
        if rng.random() < 0.3:
            clause += [rng.choice(CONJUNCTIONS)] + _random_clause(rng, opening=False)
        sentence = " ".join(clause + ["."])
        if sentence not in sentences:  # a repeated sentence is what the reward punishes; keep SFT data clean
            sentences.append(sentence)
    return " ".join(sentences)
