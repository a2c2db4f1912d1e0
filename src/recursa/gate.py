"""The one door every LM call of a run goes through.

:class:`LMGate` bounds concurrency across the whole tree, reserves each call's worst case against
the shared :class:`~recursa.limits.Budget` before it is sent (waiting while calls in flight hold
what is left, and sending the output cap the reservation allows), counts each retry a backend
wants as one more call, stops it when the run's wall clock runs out, settles its usage, and
records an ``lm_call`` span. Root turns, sub-calls and child
runs all use the same gate, so nothing is counted twice and nothing escapes the limits.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from recursa.cache import cacheable
from recursa.limits import Budget, Reservation, UsageMeter
from recursa.lm.base import LM, retry_guard
from recursa.store import request_key
from recursa.trace.spans import Span, Tracer
from recursa.types import Completion, LMSettings, Message

if TYPE_CHECKING:
    from recursa.cache import CallCache
    from recursa.journal import Journal, Replay

__all__ = ["LMGate"]

# How much of each prompt and response a span keeps (the trace is for reading, not replaying).
SPAN_TEXT_CHARS = 20_000


def since_last_reply(messages: Sequence[Message]) -> Sequence[Message]:
    """The messages added after the last assistant message (all of them before the first)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "assistant":
            return messages[i + 1 :]
    return messages


def _capped(lm: LM, settings: LMSettings | None, res: Reservation) -> LMSettings | None:
    """The settings with the output cap the reservation paid for (unchanged if it is theirs,
    or the backend's own default anyway)."""
    out = res.output_tokens
    current = settings.max_output_tokens if settings is not None else None
    if out is None or out == current:
        return settings
    if current is None and out == lm.capabilities.default_max_output_tokens:
        return settings
    return replace(settings or LMSettings(), max_output_tokens=out)


def clip(text: str, limit: int = SPAN_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return (
        text[: limit // 2]
        + f"\n[... {len(text) - limit:,} characters cut ...]\n"
        + text[-limit // 2 :]
    )


class LMGate:
    """Concurrency limit + budget + deadline + pricing + tracing for LM calls.

    With a journal, every response is committed to it before it is used; with a replay (a
    resumed run), requests already in the journal are answered from it; with a call cache,
    cacheable requests are answered from it and stored in it.
    """

    def __init__(
        self,
        budget: Budget,
        tracer: Tracer,
        max_concurrency: int,
        *,
        journal: Journal | None = None,
        replay: Replay | None = None,
        cache: CallCache | None = None,
    ) -> None:
        self.budget = budget
        self.tracer = tracer
        self._sem = asyncio.Semaphore(max_concurrency)
        self.in_flight = 0
        self.journal = journal
        self.replay = replay
        self.cache = cache

    def _record(self, key: str, lm: LM, role: str, depth: int, completion: Completion) -> None:
        if self.journal is None:
            return
        try:
            self.journal.record_lm(key, lm.name, role, depth, completion)
        except sqlite3.Error as exc:
            # A broken journal must not break the run; it only stops the run being resumable.
            self.budget.warnings.append(f"journaling stopped ({exc}); this run cannot be resumed")
            self.journal = None

    async def _send(
        self,
        lm: LM,
        messages: Sequence[Message],
        settings: LMSettings | None,
        role: str,
        depth: int,
    ) -> tuple[Completion, str]:
        """The call itself, and where its answer came from: model, journal or cache."""
        if self.journal is None and self.replay is None and self.cache is None:
            return await lm.complete(messages, settings), "model"
        key = request_key(lm.name, messages, settings)
        if self.replay is not None and (done := self.replay.take(key)) is not None:
            self.budget.replayed += 1
            return done, "journal"
        use_cache = self.cache is not None and cacheable(lm, settings)
        if use_cache and (hit := self.cache.get(key)) is not None:
            self._record(key, lm, role, depth, hit)
            return hit, "cache"
        completion = await lm.complete(messages, settings)
        self._record(key, lm, role, depth, completion)  # durable before anyone uses it
        if use_cache:
            cost = self.budget.prices.cost(lm.name, completion.usage)
            self.cache.put(key, lm.name, completion, cost)
        return completion, "model"

    async def reserve(
        self, lm: LM, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Reservation:
        """Reserve one call's worst case, waiting while calls in flight hold what is left.
        Raises :class:`~recursa.limits.BudgetExhausted` when the tree may not make it."""
        prompt_chars = sum(len(m.content) for m in messages)
        cap = settings.max_output_tokens if settings is not None else None
        cap = cap or lm.capabilities.default_max_output_tokens
        try:
            async with asyncio.timeout(self.budget.remaining_time()):
                while True:
                    res = self.budget.try_reserve(
                        prompt_chars, model=lm.name, max_output_tokens=cap
                    )
                    if res is not None:
                        return res
                    await self.budget.wait_settled()
        except TimeoutError:
            raise self.budget.expire(" while waiting for the budget") from None

    async def complete(
        self,
        lm: LM,
        messages: Sequence[Message],
        settings: LMSettings | None = None,
        *,
        role: str,
        depth: int,
        parent: Span | None,
        meter: UsageMeter | None = None,
        reservation: Reservation | None = None,
    ) -> Completion:
        """Make one call. Raises :class:`BudgetExhausted` when the tree may not make it.

        ``meter`` also receives the call's priced usage: the engine whose turn or code made it.
        ``reservation``: one made earlier with :meth:`reserve` (it is used up either way).
        """
        try:
            if reservation is None:
                reservation = await self.reserve(lm, messages, settings)
            settings = _capped(lm, settings, reservation)
            async with asyncio.timeout(self.budget.remaining_time()):
                async with self._sem:
                    return await self._call(
                        lm, messages, settings, reservation, role, depth, parent, meter
                    )
        except TimeoutError:
            raise self.budget.expire(" during an LM call") from None
        finally:
            if reservation is not None:
                self.budget.release(reservation)

    async def _call(
        self,
        lm: LM,
        messages: Sequence[Message],
        settings: LMSettings | None,
        reservation: Reservation,
        role: str,
        depth: int,
        parent: Span | None,
        meter: UsageMeter | None,
    ) -> Completion:
        prompt_chars = sum(len(m.content) for m in messages)
        last = messages[-1].content if messages else ""
        extra: dict[str, object] = {}
        if role == "root":
            # A root conversation only grows: the messages added since the model's last
            # reply, kept whole, let a trace rebuild every root turn (SFT export).
            extra["new_messages"] = [m.to_dict() for m in since_last_reply(messages)]
        span = self.tracer.start(
            "lm_call",
            lm.name,
            parent,
            model=lm.name,
            role=role,
            depth=depth,
            prompt=clip(last),
            prompt_chars=prompt_chars,
            n_messages=len(messages),
            **extra,
        )
        retries = 0

        def guard() -> None:  # a retry the backend wants is one more call of the budget's
            nonlocal retries
            self.budget.reserve_retry()
            retries += 1

        self.in_flight += 1
        token = retry_guard.set(guard)
        reservation.sent = True
        try:
            completion, source = await self._send(lm, messages, settings, role, depth)
        except BaseException as exc:
            more = {"retries": retries} if retries else {}
            self.tracer.end(span, error=f"{type(exc).__name__}: {exc}", **more)
            raise
        finally:
            retry_guard.reset(token)
            self.in_flight -= 1
        self.budget.release(reservation)  # settled: what it did not use is free again
        priced = self.budget.charge(lm.name, depth, completion.usage, free=source == "cache")
        if meter is not None:
            meter.add(priced)
        more: dict[str, object] = {"retries": retries} if retries else {}
        if settings is not None and settings.max_output_tokens is not None:
            more["max_output_tokens"] = settings.max_output_tokens
        self.tracer.end(
            span,
            source=source,
            # Root replies are kept whole (they are short: code) so traces can train models.
            response=completion.text if role == "root" else clip(completion.text),
            response_chars=len(completion.text),
            response_model=completion.model or None,
            finish_reason=completion.finish_reason,
            input_tokens=priced.input_tokens,
            output_tokens=priced.output_tokens,
            cached_tokens=priced.cached_tokens,
            cost_usd=priced.cost_usd if not priced.unpriced_calls else None,
            **more,
        )
        return completion
