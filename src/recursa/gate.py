"""Where an LM call is charged to the budget: the one door every call of a run goes through.

:class:`LMGate` does the budget's part of a call and nothing else: it reserves the call's worst
case against the shared :class:`~recursa.limits.Budget` before it is sent (waiting while calls
in flight hold what is left, and sending the output cap the reservation allows), counts each
retry a backend wants as one more call, stops the call when the run's wall clock runs out,
settles it, charges what it used to the :class:`~recursa.limits.Ledger` (and the meter of the
engine that made it), and records an ``lm_call`` span.

Where the answer comes from (a resumed run's journal, the call cache or the model), journaling
and the concurrency limit are wrappers around the LM seam (:mod:`recursa.lm.wrappers`), composed
once per model and run. Root turns, sub-calls and child runs all use the same gate, so nothing is
counted twice and nothing escapes the limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from recursa.limits import Budget, Reservation, UsageMeter
from recursa.lm.base import LM, retry_guard
from recursa.lm.wrappers import CallScope, call_scope
from recursa.trace.spans import Span, Tracer
from recursa.types import Completion, LMSettings, Message

__all__ = ["LMGate", "clip"]

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
    """Budget + deadline + usage + tracing for the LM calls of one run's tree.

    ``wrap`` turns a model into the one the run calls (its journal, cache and concurrency
    wrappers, see :func:`recursa.lm.wrappers.compose`); it is applied once per model.
    """

    def __init__(
        self,
        budget: Budget,
        tracer: Tracer,
        wrap: Callable[[LM], LM] | None = None,
    ) -> None:
        self.budget = budget
        self.tracer = tracer
        self._wrap = wrap
        self._wrapped: dict[int, tuple[LM, LM]] = {}

    def _model(self, lm: LM) -> LM:
        if self._wrap is None:
            return lm
        found = self._wrapped.get(id(lm))
        if found is None:
            found = self._wrapped[id(lm)] = (lm, self._wrap(lm))  # holds lm: its id stays its
        return found[1]

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
                return await self._call(
                    lm, messages, settings, reservation, CallScope(role, depth), parent, meter
                )
        except TimeoutError:
            raise self.budget.expire(" during an LM call") from None
        finally:
            if reservation is not None:
                self.budget.release(reservation)

    def _start_span(
        self,
        lm: LM,
        messages: Sequence[Message],
        reservation: Reservation,
        scope: CallScope,
        parent: Span | None,
    ) -> Span:
        extra: dict[str, object] = {}
        if scope.role == "root":
            # A root conversation only grows: the messages added since the model's last
            # reply, kept whole, let a trace rebuild every root turn (SFT export).
            extra["new_messages"] = [m.to_dict() for m in since_last_reply(messages)]
        return self.tracer.start(
            "lm_call",
            lm.name,
            parent,
            model=lm.name,
            role=scope.role,
            depth=scope.depth,
            prompt=clip(messages[-1].content if messages else ""),
            prompt_chars=reservation.prompt_chars,
            n_messages=len(messages),
            **extra,
        )

    async def _call(
        self,
        lm: LM,
        messages: Sequence[Message],
        settings: LMSettings | None,
        reservation: Reservation,
        scope: CallScope,
        parent: Span | None,
        meter: UsageMeter | None,
    ) -> Completion:
        span = self._start_span(lm, messages, reservation, scope, parent)
        retries = 0

        def guard() -> None:  # a retry the backend wants is one more call of the budget's
            nonlocal retries
            self.budget.reserve_retry()
            retries += 1

        tokens = retry_guard.set(guard), call_scope.set(scope)
        reservation.sent = True
        try:
            completion = await self._model(lm).complete(messages, settings)
        except BaseException as exc:
            failed: dict[str, Any] = {"retries": retries} if retries else {}
            self.tracer.end(span, error=f"{type(exc).__name__}: {exc}", **failed)
            raise
        finally:
            retry_guard.reset(tokens[0])
            call_scope.reset(tokens[1])
        self.budget.release(reservation)  # settled: what it did not use is free again
        ledger = self.budget.ledger
        if completion.source == "journal":
            ledger.replayed += 1
        priced = ledger.charge(
            lm.name, scope.depth, completion.usage, free=completion.source == "cache"
        )
        if meter is not None:
            meter.add(priced)
        more: dict[str, Any] = {"retries": retries} if retries else {}
        if settings is not None and settings.max_output_tokens is not None:
            more["max_output_tokens"] = settings.max_output_tokens
        self.tracer.end(
            span,
            source=completion.source,
            # Root replies are kept whole (they are short: code) so traces can train models.
            response=completion.text if scope.role == "root" else clip(completion.text),
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
