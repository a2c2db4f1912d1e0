"""Cross-cutting LM concerns as wrappers around the LM seam (recursa.lm.wrappers)."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

from recursa import ScriptedLM
from recursa.cache import CallCache
from recursa.journal import Replay
from recursa.lm.base import LM
from recursa.lm.wrappers import CallScope, JournalSink, call_scope, compose
from recursa.pricing import PriceTable
from recursa.store import request_key
from recursa.types import Completion, LMSettings, Message

ASK = [Message.user("q")]
GREEDY = LMSettings(temperature=0)


class Recorder:
    """Stands in for a Journal: keeps what it is asked to record."""

    def __init__(self) -> None:
        self.lm: list[tuple[str, str, str, int, str]] = []

    def record_lm(self, key: str, model: str, role: str, depth: int, c: Completion) -> None:
        self.lm.append((key, model, role, depth, c.text))


def wrapped(lm: LM, tmp_path: Path, replay: Replay | None = None) -> tuple[LM, Recorder]:
    journal = Recorder()
    sink = JournalSink(journal, lambda note: None)  # type: ignore[arg-type]
    out = compose(
        lm,
        limit=asyncio.Semaphore(4),
        cache=CallCache(tmp_path / "calls.sqlite"),
        prices=PriceTable(),
        journal=sink,
        replay=replay,
    )
    return out, journal


async def test_model_then_cache_each_journaled_with_who_asked(tmp_path: Path) -> None:
    lm = ScriptedLM(["one", "two"])
    out, journal = wrapped(lm, tmp_path)
    assert out.name == lm.name and out.capabilities == lm.capabilities
    first = await out.complete(ASK, GREEDY)
    token = call_scope.set(CallScope("root", 2))
    try:
        second = await out.complete(ASK, GREEDY)
    finally:
        call_scope.reset(token)
    assert (first.text, first.source) == ("one", "model")
    assert (second.text, second.source) == ("one", "cache")  # the model was asked once
    assert len(lm.calls) == 1
    key = request_key(lm.name, ASK, GREEDY)
    assert journal.lm == [(key, lm.name, "sub", 0, "one"), (key, lm.name, "root", 2, "one")]


async def test_a_replayed_answer_is_not_journaled_again(tmp_path: Path) -> None:
    lm = ScriptedLM(["fresh"])
    key = request_key(lm.name, ASK, GREEDY)
    replay = Replay({key: deque([Completion("journaled")])})
    out, journal = wrapped(lm, tmp_path, replay)
    done = await out.complete(ASK, GREEDY)
    assert (done.text, done.source) == ("journaled", "journal")
    assert not lm.calls and not journal.lm
    fresh = await out.complete(ASK, GREEDY)  # the journal is used up: the model answers
    assert fresh.text == "fresh" and len(journal.lm) == 1


async def test_the_concurrency_limit_holds_only_model_calls() -> None:
    in_flight, peak = 0, 0

    class Slow(ScriptedLM):
        async def complete(self, messages, settings=None):  # type: ignore[no-untyped-def]
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return Completion("ok")

    out = compose(Slow(default="ok"), limit=asyncio.Semaphore(2))
    await asyncio.gather(*(out.complete([Message.user(str(i))]) for i in range(6)))
    assert peak == 2


async def test_a_failing_journal_stops_once_and_says_so() -> None:
    import sqlite3

    notes: list[str] = []

    class Broken(Recorder):
        def record_lm(self, *args: object) -> None:  # type: ignore[override]
            raise sqlite3.OperationalError("disk full")

    sink = JournalSink(Broken(), notes.append)  # type: ignore[arg-type]
    out = compose(ScriptedLM(["a", "b"]), limit=asyncio.Semaphore(1), journal=sink)
    await out.complete(ASK)
    await out.complete([Message.user("again")])
    assert sink.journal is None
    assert notes == ["journaling stopped (disk full); this run cannot be resumed"]
