"""OOLONG-Pairs: the 20 pairwise tasks of the RLM paper's appendix (Zhang, Kraska, Khattab 2025,
arXiv 2512.24601, E.1), over the same generated windows as :mod:`recursa.bench.oolong`.

Each task asks for every pair of user ids whose questions meet label conditions, some with
date constraints. Tasks 1-10 are symmetric (both users meet one condition); tasks 11-20 are
asymmetric (one user meets X and the other Y). The conditions below restate the paper's list;
the gold pairs are computed from the hidden labels; the score is F1 over pairs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from recursa.bench.oolong import LABEL_NOTE, Record, load_questions, oolong_window
from recursa.bench.tasks import Benchmark, Task, register

__all__ = ["PAIR_TASKS", "PairTask", "gold_pairs"]

TASKS_PER_WINDOW = 20
DESC, ENT, HUM, NUM, LOC, ABBR = (
    "description and abstract concept",
    "entity",
    "human being",
    "numeric value",
    "location",
    "abbreviation",
)


@dataclass(frozen=True)
class UserFacts:
    counts: Counter[str]
    dates: dict[str, list[dt.date]]


@dataclass(frozen=True)
class Cond:
    """A condition on one user's questions, with the words that state it."""

    text: str
    test: Callable[[UserFacts], bool]

    def __and__(self, other: Cond) -> Cond:
        return Cond(f"{self.text} and {other.text}", lambda f: self.test(f) and other.test(f))


def _article(label: str) -> str:
    return "an" if label[0] in "aeiou" else "a"


def any_of(*labels: str) -> Cond:
    names = " or ".join(labels)
    return Cond(
        f"at least one instance with {_article(labels[0])} {names}",
        lambda f: any(f.counts[lab] for lab in labels),
    )


def at_least(k: int, label: str) -> Cond:
    word = {1: "one instance", 2: "two instances"}[k]
    return Cond(f"at least {word} with {label}", lambda f: f.counts[label] >= k)


def exactly(k: int, label: str) -> Cond:
    word = {1: "one instance", 2: "two instances"}[k]
    return Cond(f"exactly {word} with {label}", lambda f: f.counts[label] == k)


def all_dated(label: str, when: str, day: dt.date) -> Cond:
    """Every instance of ``label`` (of each user: the condition is tested per user) is dated
    strictly before/after ``day``; a user with none meets it."""
    if when == "after":
        test = lambda f: all(d > day for d in f.dates[label])  # noqa: E731
    else:
        test = lambda f: all(d < day for d in f.dates[label])  # noqa: E731
    text = (
        f"all instances that are {_article(label)} {label} for both users must be {when} "
        f"{day.strftime('%B')} {day.day}, {day.year}"
    )
    return Cond(text, test)


@dataclass(frozen=True)
class PairTask:
    number: int
    first: Cond
    second: Cond | None = None  # None: symmetric (both users meet ``first``)

    def condition_text(self) -> str:
        if self.second is None:
            return f"where both users have {self.first.text}"
        return (
            f"such that one user has {self.first.text}, and the other user has {self.second.text}"
        )


def _sym(number: int, cond: Cond) -> PairTask:
    return PairTask(number, cond)


def _dated(number: int, labels: tuple[str, str], label: str, when: str, day: dt.date) -> PairTask:
    base = any_of(*labels)
    date_cond = all_dated(label, when, day)
    # The paper's wording joins the two with ", and"; the test is the conjunction.
    return PairTask(number, Cond(f"{base.text}, and {date_cond.text}", (base & date_cond).test))


PAIR_TASKS: tuple[PairTask, ...] = (
    _sym(1, any_of(NUM, LOC)),
    _sym(2, any_of(ENT, HUM)),
    _sym(3, any_of(DESC, ABBR)),
    _dated(4, (HUM, LOC), HUM, "after", dt.date(2023, 1, 6)),
    _dated(5, (ENT, NUM), ENT, "before", dt.date(2023, 3, 15)),
    _sym(6, any_of(LOC, ABBR)),
    _dated(7, (DESC, NUM), NUM, "after", dt.date(2023, 2, 1)),
    _sym(8, any_of(HUM, DESC)),
    _dated(9, (ENT, LOC), LOC, "after", dt.date(2023, 4, 10)),
    _dated(10, (NUM, ABBR), ABBR, "before", dt.date(2023, 5, 20)),
    PairTask(11, at_least(1, ENT) & at_least(1, ABBR), exactly(1, ENT)),
    PairTask(12, at_least(2, NUM), at_least(1, LOC) & at_least(1, HUM)),
    PairTask(13, exactly(1, DESC), at_least(1, ABBR) & at_least(1, ENT)),
    PairTask(14, at_least(1, HUM) & at_least(1, NUM), exactly(2, LOC)),
    PairTask(15, at_least(1, ENT) & at_least(1, LOC) & at_least(1, ABBR), exactly(1, NUM)),
    PairTask(16, at_least(1, DESC) & at_least(1, HUM), at_least(2, ENT) & exactly(1, ABBR)),
    PairTask(17, exactly(1, NUM), at_least(1, LOC) & at_least(1, DESC)),
    PairTask(18, at_least(1, ABBR) & exactly(1, HUM), at_least(1, ENT) & at_least(1, NUM)),
    PairTask(19, at_least(2, LOC) & at_least(1, ENT), exactly(1, DESC) & exactly(1, ABBR)),
    PairTask(
        20,
        at_least(1, NUM) & at_least(1, HUM),
        at_least(1, LOC) & at_least(1, ENT) & exactly(1, ABBR),
    ),
)


def user_facts(records: tuple[Record, ...]) -> dict[int, UserFacts]:
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    dates: dict[int, dict[str, list[dt.date]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        counts[r.user][r.label] += 1
        dates[r.user][r.label].append(r.date)
    return {u: UserFacts(counts[u], dates[u]) for u in counts}


def gold_pairs(task: PairTask, records: tuple[Record, ...]) -> list[tuple[int, int]]:
    """Every pair ``(a, b)``, ``a < b``, of users that meets the task (sorted)."""
    facts = user_facts(records)
    first = {u for u, f in facts.items() if task.first.test(f)}
    if task.second is None:
        return sorted(combinations(sorted(first), 2))
    second = {u for u, f in facts.items() if task.second.test(f)}
    out = set()
    for a in first:
        for b in second:
            if a != b:
                out.add((min(a, b), max(a, b)))
    return sorted(out)


def question(task: PairTask) -> str:
    return (
        "In the data above, list all pairs of user IDs (no duplicate pairs, list the lower ID "
        f"first) {task.condition_text()}. {LABEL_NOTE} In your answer, list all pairs in the "
        "format (user id 1, user id 2), one pair per line."
    )


def pairs_tasks(length: int, n: int, seed: int, data_dir: Path | None) -> list[Task]:
    questions = load_questions(data_dir, "oolong-pairs")
    tasks: list[Task] = []
    for w in range(math.ceil(n / TASKS_PER_WINDOW)):
        win = oolong_window(length, w, seed, questions)
        for spec in PAIR_TASKS[: min(TASKS_PER_WINDOW, n - len(tasks))]:
            gold = gold_pairs(spec, win.records)
            tasks.append(
                Task(
                    benchmark="oolong-pairs",
                    task_id=f"pairs-{win.window_id}-t{spec.number:02d}",
                    length=length,
                    question=question(spec),
                    context=win.text,
                    gold=[list(p) for p in gold],
                    scoring="pairs_f1",
                    window=win.window_id,
                    query=f"pairs of user IDs {spec.condition_text()}",
                    meta={"paper_task": spec.number, "gold_pairs": len(gold)},
                )
            )
    return tasks


register(
    Benchmark(
        "oolong-pairs",
        "OOLONG-Pairs: the RLM paper's 20 pairwise tasks over the OOLONG windows (F1 over pairs)",
        pairs_tasks,
        needs_data=True,
    )
)
