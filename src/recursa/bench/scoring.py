"""Scorers: ``score(answer, gold) -> float`` in [0, 1], one per kind of task.

- ``values`` (S-NIAH): the answer must name the hidden value and no other value of its form
  (a 7-digit number or a UUID), so listing every candidate does not score.
- ``oolong``: numbers score ``0.75 ** |error|`` as OOLONG does; labels and comparisons are
  exact matches after normalisation.
- ``pairs_f1`` (OOLONG-Pairs): F1 between the listed and the gold sets of id pairs.
- ``choice`` (LongBench v2): accuracy on the extracted letter.
- ``aliases`` (multi-hop, docstring QA): normalised exact match against any alias.

Models often explain before they answer; an ``Answer:`` line, when present, is what is scored.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from recursa.errors import ConfigError

__all__ = [
    "COMPARISONS",
    "LABELS",
    "SCORERS",
    "extract_choice",
    "extract_pairs",
    "final_part",
    "normalize",
    "score",
]

LABELS = (
    "description and abstract concept",
    "abbreviation",
    "entity",
    "human being",
    "location",
    "numeric value",
)
# Shorter names a model may use for a label; each maps to exactly one label.
_LABEL_ALIASES = {
    "description": "description and abstract concept",
    "abstract concept": "description and abstract concept",
    "desc": "description and abstract concept",
    "abbr": "abbreviation",
    "enty": "entity",
    "human": "human being",
    "hum": "human being",
    "loc": "location",
    "numeric": "numeric value",
    "num": "numeric value",
}
COMPARISONS = ("more common than", "less common than", "same frequency as")

_ANSWER = re.compile(r"(?:final\s+)?(?:answer|label)\s*(?:is)?\s*[:：]", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def final_part(answer: str) -> str:
    """The text after the last ``Answer:`` (or ``Label:``), else the whole answer."""
    answer = str(answer or "")
    last = None
    for m in _ANSWER.finditer(answer):
        last = m
    text = answer[last.end() :] if last else answer
    return text.strip()


def normalize(text: str) -> str:
    """Lowercase, punctuation and articles removed, whitespace collapsed (SQuAD style)."""
    text = str(text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


# ---- S-NIAH ----------------------------------------------------------------------------------

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_SEVEN = re.compile(r"(?<![\d-])\d{7}(?![\d-])")


def score_values(answer: str, gold: Any) -> float:
    gold = str(gold).strip().lower()
    pattern = _UUID if _UUID.fullmatch(gold) else _SEVEN
    found = {m.group(0).lower() for m in pattern.finditer(str(answer or ""))}
    return 1.0 if found == {gold} else 0.0


# ---- OOLONG ----------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _labels_in(text: str) -> set[str]:
    norm = f" {normalize(text)} "
    found = set()
    for label in LABELS:
        if f" {normalize(label)} " in norm:
            found.add(label)
            norm = norm.replace(f" {normalize(label)} ", " ")
    for alias, label in _LABEL_ALIASES.items():
        if f" {alias} " in norm:
            found.add(label)
    return found


def _comparison_in(text: str) -> set[str]:
    norm = f" {normalize(text)} "
    found = set()
    if " more " in norm or " greater " in norm or " higher " in norm:
        found.add(COMPARISONS[0])
    if " less " in norm or " fewer " in norm or " lower " in norm:
        found.add(COMPARISONS[1])
    if " same " in norm or " equal " in norm or " equally " in norm:
        found.add(COMPARISONS[2])
    return found


def score_oolong(answer: str, gold: Any) -> float:
    text = final_part(answer)
    if isinstance(gold, int | float) and not isinstance(gold, bool):
        m = _NUMBER.search(text)
        if m is None:
            return 0.0
        try:
            value = float(m.group(0).replace(",", ""))
        except ValueError:
            return 0.0
        return 0.75 ** abs(value - float(gold)) if math.isfinite(value) else 0.0
    gold = str(gold)
    if normalize(text) == normalize(gold):
        return 1.0
    if gold in LABELS:
        return 1.0 if _labels_in(text) == {gold} else 0.0
    if gold in COMPARISONS:
        return 1.0 if _comparison_in(text) == {gold} else 0.0
    return 0.0


# ---- OOLONG-Pairs ----------------------------------------------------------------------------

_PAIR = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)|\b(\d+)\s*,\s*(\d+)\b")


def extract_pairs(answer: str) -> set[tuple[int, int]]:
    """Every ``(a, b)`` (or ``a, b``) pair of ids in the answer, lower id first."""
    out = set()
    for m in _PAIR.finditer(str(answer or "")):
        a, b = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        x, y = int(a), int(b)
        if x != y:
            out.add((min(x, y), max(x, y)))
    return out


def score_pairs_f1(answer: str, gold: Any) -> float:
    want = {(min(a, b), max(a, b)) for a, b in gold}
    got = extract_pairs(answer)
    if not want and not got:
        return 1.0
    hits = len(want & got)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(got), hits / len(want)
    return 2 * precision * recall / (precision + recall)


# ---- multiple choice -------------------------------------------------------------------------

_CHOICE_PATTERNS = (
    re.compile(r"answer\s+is\s*[:\s]*\(?\s*([A-D])\b", re.I),
    re.compile(r"answer\s*[:：]\s*\(?\s*([A-D])\b", re.I),
    re.compile(r"^\s*\(?([A-D])\)?(?:[.:)\s]|$)"),
    re.compile(r"\(([A-D])\)"),
)


def extract_choice(answer: str) -> str | None:
    """The chosen letter: "The correct answer is (B)", "Answer: B", "B.", "(B)"."""
    text = str(answer or "")
    for pattern in _CHOICE_PATTERNS:
        found = pattern.findall(text)
        if found:
            return str(found[-1]).upper()
    return None


def score_choice(answer: str, gold: Any) -> float:
    return 1.0 if extract_choice(answer) == str(gold).strip().upper() else 0.0


# ---- aliases ---------------------------------------------------------------------------------

_PREFIXES = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s+is\s*[:\s]*", re.I)


def _candidates(answer: str) -> list[str]:
    text = final_part(answer).strip().strip("`*\"' ")
    text = _PREFIXES.sub("", text)
    lines = [ln.strip().strip("`*\"' ") for ln in text.splitlines() if ln.strip()]
    out = [text]
    if lines:
        out.append(_PREFIXES.sub("", lines[0]))
        out.append(_PREFIXES.sub("", lines[-1]))
    return [c.removesuffix("()").rstrip(".") for c in out]


def score_aliases(answer: str, gold: Any) -> float:
    aliases: Sequence[str] = [gold] if isinstance(gold, str) else list(gold)
    want = {normalize(a) for a in aliases}
    return 1.0 if any(normalize(c) in want for c in _candidates(answer)) else 0.0


SCORERS: dict[str, Callable[[str, Any], float]] = {
    "values": score_values,
    "oolong": score_oolong,
    "pairs_f1": score_pairs_f1,
    "choice": score_choice,
    "aliases": score_aliases,
}


def score(kind: str, answer: str, gold: Any) -> float:
    """Score ``answer`` against ``gold`` with the scorer ``kind``."""
    scorer = SCORERS.get(kind)
    if scorer is None:
        raise ConfigError(f"unknown scorer {kind!r}; known: {', '.join(SCORERS)}")
    return float(scorer(answer, gold))


def mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None
