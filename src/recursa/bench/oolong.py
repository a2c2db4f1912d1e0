"""OOLONG-style aggregation over TREC questions (after Bertsch et al. 2025, ``trec_coarse``).

A *window* is a list of lines ``Date: Jun 29, 2022 || User: 44436 || Instance: <question>``
drawn from the TREC training questions. The label of each question (abbreviation, entity,
description and abstract concept, human being, location, numeric value) is never in the text:
answering needs every line classified by a model. Gold answers come from the hidden labels.

Question families: the most and least common label, label A against label B (more common,
less common, same frequency), the count of a label, and counts per user and per date range.
Numbers score ``0.75 ** |error|``, the rest exact match (see :mod:`recursa.bench.scoring`).

As in OOLONG, many questions are asked of each window (10 by default: ``n`` questions per
length use ``ceil(n / 10)`` windows), which lets prompt caches reuse the window's text.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from recursa.bench.data import TREC_LABELS, TrecQuestion, load_trec, require_data
from recursa.bench.tasks import Benchmark, Task, length_label, register, target_chars

__all__ = ["QUESTIONS_PER_WINDOW", "Record", "Window", "load_questions", "oolong_window"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


QUESTIONS_PER_WINDOW = 10
TREC_FILE = "trec/train_5500.label"
LABELS = tuple(TREC_LABELS.values())
FIRST_DAY = dt.date(2022, 10, 1)
LAST_DAY = dt.date(2023, 7, 31)

LABEL_NOTE = (
    "Each question can be labelled as one of the labels (the data does not provide the "
    "labels; infer each one from the question's meaning): " + ", ".join(LABELS) + "."
)
_HEADER = (
    "The following lines contain {n} general-knowledge questions, one per line, each with the "
    "date it was asked and the id of the user who asked it. {note}\n\n"
)


@dataclass(frozen=True, slots=True)
class Record:
    date: dt.date
    user: int
    text: str
    label: str

    def line(self) -> str:
        return f"Date: {fmt_date(self.date)} || User: {self.user} || Instance: {self.text}"


@dataclass(frozen=True)
class Window:
    """One generated context: its text and the records (with their hidden labels)."""

    window_id: str
    text: str
    records: tuple[Record, ...]


def fmt_date(day: dt.date) -> str:
    return day.strftime("%b %d, %Y")


def load_questions(data_dir: Path | None, benchmark: str) -> tuple[TrecQuestion, ...]:
    return load_trec(require_data(data_dir, TREC_FILE, benchmark))


class _Pool:
    """Questions of one label, drawn without replacement until used up, then reshuffled."""

    def __init__(self, items: list[TrecQuestion], rng: random.Random) -> None:
        self.items, self.rng = items, rng
        self.order: list[int] = []

    def take(self) -> TrecQuestion:
        if not self.order:
            self.order = list(range(len(self.items)))
            self.rng.shuffle(self.order)
        return self.items[self.order.pop()]


@cache
def _window_cached(
    length: int, index: int, seed: int, questions: tuple[TrecQuestion, ...]
) -> Window:
    rng = random.Random(f"oolong-window:{length}:{seed}:{index}")
    by_label = {label: [q for q in questions if q.label == label] for label in LABELS}
    present = [label for label in LABELS if by_label[label]]
    # The label mix follows TREC's, skewed per window (up to e times either way) so that the
    # most common label changes from window to window, as OOLONG's skewed mixes do.
    weights = [len(by_label[lab]) * math.exp(rng.uniform(-1, 1)) for lab in present]
    pools = {label: _Pool(by_label[label], rng) for label in present}
    budget = target_chars(length)
    n_lines = max(8, budget // 90)  # ~90 characters a line; refined below
    n_users = min(400, max(10, n_lines // 5))
    users = rng.sample(range(10_000, 100_000), n_users)
    # A few busy users and many occasional ones (cumulative weights: drawn once per line).
    user_cum = list(itertools.accumulate(1 / (rank + 1) ** 0.8 for rank in range(n_users)))
    label_cum = list(itertools.accumulate(weights))
    span = (LAST_DAY - FIRST_DAY).days
    records: list[Record] = []
    chars = len(_HEADER) + len(LABEL_NOTE) + 8
    while chars < budget:
        label = rng.choices(present, cum_weights=label_cum)[0]
        q = pools[label].take()
        day = FIRST_DAY + dt.timedelta(days=rng.randrange(span + 1))
        rec = Record(day, rng.choices(users, cum_weights=user_cum)[0], q.text, label)
        records.append(rec)
        chars += len(rec.line()) + 1
    records.sort(key=lambda r: r.date)  # a log reads in time order
    header = _HEADER.format(n=len(records), note=LABEL_NOTE)
    text = header + "\n".join(r.line() for r in records) + "\n"
    window_id = f"trec-{length_label(length)}-s{seed}-w{index}"
    return Window(window_id, text, tuple(records))


def oolong_window(
    length: int, index: int, seed: int, questions: tuple[TrecQuestion, ...]
) -> Window:
    """Window ``index`` of about ``length`` tokens (the same for OOLONG and OOLONG-Pairs)."""
    return _window_cached(length, index, seed, questions)


# ---- questions ---------------------------------------------------------------------------

_ANSWER_LABEL = "Give your final answer as `Answer: <label>`."
_ANSWER_NUMBER = "Give your final answer as `Answer: <number>`."
_ANSWER_COMPARE = (
    "Give your final answer as `Answer: more common than`, `Answer: less common than` or "
    "`Answer: same frequency as`."
)


def _q(body: str, tail: str) -> str:
    return f"In the data above, {body} {LABEL_NOTE} {tail}"


def _extreme(counts: Counter[str], most: bool) -> list[tuple[str, str, object]]:
    ranked = sorted(LABELS, key=lambda lab: counts[lab], reverse=most)
    if counts[ranked[0]] == counts[ranked[1]]:
        return []  # no unique answer
    word = "most" if most else "least"
    body = f"which label is the {word} common?"
    return [(f"{word}_common", _q(body, _ANSWER_LABEL), ranked[0])]


def _candidates(win: Window, rng: random.Random) -> dict[str, list[tuple[str, str, object]]]:
    """Every family's possible questions for a window: ``(family, question, gold)``."""
    counts = Counter(r.label for r in win.records)
    fam: dict[str, list[tuple[str, str, object]]] = {}
    fam["most_common"] = _extreme(counts, True)
    fam["least_common"] = _extreme(counts, False)
    fam["count"] = [
        (
            "count",
            _q(f"how many questions should be labelled '{lab}'?", _ANSWER_NUMBER),
            counts[lab],
        )
        for lab in LABELS
    ]
    fam["compare"] = []
    for i, a in enumerate(LABELS):
        for b in LABELS[i + 1 :]:
            ca, cb = counts[a], counts[b]
            relation = "more common than" if ca > cb else "less common than" if ca < cb else None
            relation = relation or "same frequency as"
            body = (
                f"is the label '{a}' more common than, less common than, or the same frequency "
                f"as the label '{b}'?"
            )
            fam["compare"].append(("compare", _q(body, _ANSWER_COMPARE), relation))
    per_user = Counter(r.user for r in win.records)
    busy = sorted(u for u, k in per_user.items() if k >= 2)
    fam["user_count"] = []
    for user in rng.sample(busy, min(len(busy), 12)):
        lab = rng.choice(LABELS)
        asked = sum(1 for r in win.records if r.user == user and r.label == lab)
        body = f"how many questions asked by user {user} should be labelled '{lab}'?"
        fam["user_count"].append(("user_count", _q(body, _ANSWER_NUMBER), asked))
    fam["date_count"] = []
    days = sorted({r.date for r in win.records})
    for _ in range(12):
        first, last = sorted(rng.sample(days, 2)) if len(days) > 1 else (days[0], days[0])
        lab = rng.choice(LABELS)
        dated = sum(1 for r in win.records if first <= r.date <= last and r.label == lab)
        body = (
            f"how many questions dated from {fmt_date(first)} to {fmt_date(last)} (both days "
            f"included) should be labelled '{lab}'?"
        )
        fam["date_count"].append(("date_count", _q(body, _ANSWER_NUMBER), dated))
    for items in fam.values():
        rng.shuffle(items)
    return fam


_FAMILY_CYCLE = _words(
    "count most_common compare user_count date_count least_common count compare "
    "user_count date_count"
)


def _pick(fam: dict[str, list[tuple[str, str, object]]], k: int) -> list[tuple[str, str, object]]:
    out: list[tuple[str, str, object]] = []
    i = 0
    while len(out) < k and any(fam.values()):
        items = fam[_FAMILY_CYCLE[i % len(_FAMILY_CYCLE)]]
        if items:
            out.append(items.pop())
        i += 1
    return out


def oolong_tasks(length: int, n: int, seed: int, data_dir: Path | None) -> list[Task]:
    questions = load_questions(data_dir, "oolong")
    tasks: list[Task] = []
    for w in range(math.ceil(n / QUESTIONS_PER_WINDOW)):
        win = oolong_window(length, w, seed, questions)
        rng = random.Random(f"oolong-questions:{win.window_id}")
        k = min(QUESTIONS_PER_WINDOW, n - len(tasks))
        for j, (family, question, gold) in enumerate(_pick(_candidates(win, rng), k)):
            tasks.append(
                Task(
                    benchmark="oolong",
                    task_id=f"oolong-{win.window_id}-q{j:02d}",
                    length=length,
                    question=question,
                    context=win.text,
                    gold=gold,
                    scoring="oolong",
                    window=win.window_id,
                    query=question.split(LABEL_NOTE)[0],
                    meta={"family": family, "lines": len(win.records)},
                )
            )
    return tasks


register(
    Benchmark(
        "oolong",
        "OOLONG-style aggregation over TREC questions whose labels are hidden",
        oolong_tasks,
        needs_data=True,
    )
)
