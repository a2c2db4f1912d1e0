"""Cross-cutting concerns of an LM call, each a wrapper around the LM seam.

A wrapper is an :class:`~recursa.lm.base.LM` holding another; it declares the same ``name`` and
``capabilities`` and adds one concern to ``complete``:

- :class:`ReplayLM`: answers requests a resumed run's journal holds (``source="journal"``);
- :class:`JournalingLM`: commits every response to the run's journal before it is used;
- :class:`CachedLM`: answers deterministic requests from the shared call cache
  (``source="cache"``) and stores the model's answers in it;
- :class:`ConcurrencyLimitedLM`: bounds the model calls in flight, per provider
  (:class:`ProviderLimits`): every run of the process that calls one endpoint shares its cap,
  and root turns (of the root and of child RLMs) are let in before waiting sub-calls, so a
  child's next turn never queues behind its siblings' fan-out.

:func:`compose` stacks them in the one order that is right (replay, journal, cache, limit,
model): a replayed answer is not journaled twice, a cache hit is journaled so a resumed run
replays it, and only real model calls wait for a concurrency slot. The budget is not a wrapper:
it lives in :mod:`recursa.gate`, which reserves, settles and charges around the composed call.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from recursa.lm.base import LM, BaseLM
from recursa.store import request_key
from recursa.types import CellResult, Completion, LMSettings, Message

if TYPE_CHECKING:
    from recursa.batch.ratelimit import RateLimiter
    from recursa.cache import CallCache
    from recursa.journal import Journal, Replay
    from recursa.pricing import PriceTable

__all__ = [
    "CachedLM",
    "CallScope",
    "ConcurrencyLimitedLM",
    "FairLimiter",
    "JournalSink",
    "JournalingLM",
    "ProviderLimits",
    "ReplayLM",
    "WrapperLM",
    "call_scope",
    "compose",
    "provider_key",
]


class CallScope(NamedTuple):
    """Who makes the call in flight: ``root`` turn or ``sub`` call, and at which depth."""

    role: str = "sub"
    depth: int = 0


#: Set by the run's LM gate around each call, for wrappers that record who made it.
_NO_SCOPE = CallScope()
call_scope: ContextVar[CallScope] = ContextVar("recursa_call_scope", default=_NO_SCOPE)


class WrapperLM(BaseLM):
    """An LM that adds one concern around another; it never closes the LM it wraps."""

    def __init__(self, inner: LM) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        return await self.inner.complete(messages, settings)


class _Keys:
    """Request keys, computed once per request however many wrappers ask for it."""

    def __init__(self) -> None:
        self._last: tuple[str, Sequence[Message], int, LMSettings | None, str] | None = None

    def __call__(self, name: str, messages: Sequence[Message], settings: LMSettings | None) -> str:
        last = self._last
        if (
            last is not None
            and last[0] == name
            and last[1] is messages
            and last[2] == len(messages)
            and last[3] == settings
        ):
            return last[4]
        key = request_key(name, messages, settings)
        # Holding the messages keeps their identity from being reused by another request.
        self._last = (name, messages, len(messages), settings, key)
        return key


class ReplayLM(WrapperLM):
    """Answers the requests a resumed run's journal holds, in the order they were made."""

    def __init__(self, inner: LM, replay: Replay, keys: Callable[..., str] = request_key) -> None:
        super().__init__(inner)
        self.replay = replay
        self._key = keys

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        done = self.replay.take(self._key(self.name, messages, settings))
        if done is not None:
            return replace(done, source="journal")
        return await self.inner.complete(messages, settings)


class JournalSink:
    """A run's journal, the one place that writes to it: LM responses (through
    :class:`JournalingLM`), code cells (from the engine) and tool results (from
    :mod:`recursa.toolcalls`). A journal that fails stops
    journaling for the whole run (which goes on, but cannot be resumed) and says so once."""

    def __init__(self, journal: Journal, warn: Callable[[str], None]) -> None:
        self.journal: Journal | None = journal
        self._warn = warn

    def _failed(self, exc: sqlite3.Error) -> None:
        self._warn(f"journaling stopped ({exc}); this run cannot be resumed")
        self.journal = None

    def record_lm(self, key: str, model: str, scope: CallScope, completion: Completion) -> None:
        if self.journal is None:
            return
        try:
            self.journal.record_lm(key, model, scope.role, scope.depth, completion)
        except sqlite3.Error as exc:
            self._failed(exc)

    def record_tool(self, key: str, tool: str, outcome: dict[str, Any]) -> None:
        """Record what a tool call returned (:mod:`recursa.toolcalls`), for a resumed run to
        replay instead of calling the tool again."""
        if self.journal is None:
            return
        try:
            self.journal.record_tool(key, tool, outcome)
        except sqlite3.Error as exc:
            self._failed(exc)

    def record_cell(self, engine: str, code: str, result: CellResult) -> str | None:
        """Record a cell (or compare it with the journaled one when replaying): a warning when
        a replayed cell printed something else."""
        if self.journal is None:
            return None
        try:
            return self.journal.record_cell(engine, code, result)
        except sqlite3.Error as exc:
            self._failed(exc)
            return None


class JournalingLM(WrapperLM):
    """Commits each response to the run's journal before anyone uses it."""

    def __init__(
        self, inner: LM, sink: JournalSink, keys: Callable[..., str] = request_key
    ) -> None:
        super().__init__(inner)
        self.sink = sink
        self._key = keys

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        completion = await self.inner.complete(messages, settings)
        if self.sink.journal is not None:
            key = self._key(self.name, messages, settings)
            self.sink.record_lm(key, self.name, call_scope.get(), completion)
        return completion


class CachedLM(WrapperLM):
    """Answers deterministic requests (:func:`recursa.cache.cacheable`) from the call cache and
    stores what the model answers, with its price (what a later hit saves)."""

    def __init__(
        self,
        inner: LM,
        cache: CallCache,
        prices: PriceTable,
        keys: Callable[..., str] = request_key,
    ) -> None:
        super().__init__(inner)
        self.cache = cache
        self.prices = prices
        self._key = keys

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        from recursa.cache import cacheable

        if not cacheable(self.inner, settings):
            return await self.inner.complete(messages, settings)
        key = self._key(self.name, messages, settings)
        hit = self.cache.get(key)
        if hit is not None:
            return replace(hit, source="cache")
        completion = await self.inner.complete(messages, settings)
        cost = self.prices.cost(self.name, completion.usage)
        self.cache.put(key, self.name, completion, cost)
        return completion


class FairLimiter:
    """At most ``capacity`` holders at once; waiters are let in by priority, then in order.

    Priority 0 (root turns, at any depth) goes before priority 1 (sub-calls): a turn is what a
    whole RLM waits on, a sub-call only one item of a batch. A slot freed while someone waits
    passes straight to them, so ``in_flight`` never dips below the cap while work is queued.
    It belongs to one event loop (see :class:`ProviderLimits`).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self._waiting: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())

    async def acquire(self, priority: int = 1) -> None:
        if self.in_flight < self.capacity and not any(self._waiting):
            self.in_flight += 1
            return
        queue = self._waiting[min(max(priority, 0), len(self._waiting) - 1)]
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(slot)
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            elif slot in queue:  # release() may have dropped it already
                queue.remove(slot)
            raise

    def release(self) -> bool:
        """Free a slot; ``True`` when it passed straight to a waiter."""
        for queue in self._waiting:
            while queue:
                slot = queue.popleft()
                if not slot.done():
                    slot.set_result(None)  # the slot passes on; in_flight stays the same
                    return True
        self.in_flight -= 1
        return False


def provider_key(lm: LM) -> str:
    """Which provider ``lm``'s calls count against: an HTTP backend's endpoint (scheme, host
    and port of its base URL), else the provider prefix of its name (``local``, ``litellm``)."""
    base = getattr(lm, "base_url", None)
    if isinstance(base, str) and base:
        parts = urlsplit(base)
        return f"{parts.scheme}://{parts.netloc}" if parts.netloc else base
    return lm.name.partition(":")[0] or lm.name


# One limiter per (provider, cap) and event loop: asyncio futures belong to one loop, and runs
# on other loops (other threads) cannot wait on them. A closed loop's limiters go with it.
_LIMITERS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int], FairLimiter]
] = weakref.WeakKeyDictionary()


class ProviderLimits:
    """The concurrency caps a run's models wait on: one per provider, shared by every run of
    this process (on one event loop) that calls it with the same cap, because a provider's rate
    limit is per endpoint, not per run. ``caps`` maps a :func:`provider_key` to its own cap;
    other providers get ``default``."""

    def __init__(self, default: int, caps: dict[str, int] | None = None) -> None:
        self.default = default
        self.caps = dict(caps or {})

    def limiter(self, lm: LM) -> FairLimiter:
        key = provider_key(lm)
        cap = self.caps.get(key, self.default)
        per_loop = _LIMITERS.setdefault(asyncio.get_running_loop(), {})
        found = per_loop.get((key, cap))
        if found is None:
            found = per_loop[(key, cap)] = FairLimiter(cap)
        return found


class ConcurrencyLimitedLM(WrapperLM):
    """Holds a slot of ``limit`` while the model call is in flight: of a plain semaphore, or
    of the model's provider limiter (:class:`ProviderLimits`), root turns first."""

    def __init__(self, inner: LM, limit: asyncio.Semaphore | ProviderLimits) -> None:
        super().__init__(inner)
        self.limit = limit
        self._limiter: tuple[asyncio.AbstractEventLoop, FairLimiter] | None = None

    def _provider_limiter(self, limits: ProviderLimits) -> FairLimiter:
        """The provider's limiter on the running loop (looked up once per loop)."""
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._limiter[0] is not loop:
            self._limiter = (loop, limits.limiter(self.inner))
        return self._limiter[1]

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        if isinstance(self.limit, asyncio.Semaphore):
            async with self.limit:
                return await self.inner.complete(messages, settings)
        limiter = self._provider_limiter(self.limit)
        await limiter.acquire(0 if call_scope.get().role == "root" else 1)
        try:
            completion = await self.inner.complete(messages, settings)
        except BaseException:
            limiter.release()
            raise
        if limiter.release():
            await _let_waiter_send()
        return completion


async def _let_waiter_send() -> None:
    """Yield once, so that the call just handed this call's slot sends its request before this
    call's bookkeeping (journal, trace, budget) runs. Answers that arrive together would
    otherwise all be booked before any freed slot is used, and each wave of a batch would
    start late by that much.

    A cancellation that lands here is put back for the caller's next await: the answer is paid
    for, and the journal must still see it."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None:
            raise
        task.uncancel()
        task.cancel()


def compose(
    lm: LM,
    *,
    limit: asyncio.Semaphore | ProviderLimits,
    cache: CallCache | None = None,
    prices: PriceTable | None = None,
    journal: JournalSink | None = None,
    replay: Replay | None = None,
    rate_limiter: RateLimiter | None = None,
) -> LM:
    """``lm`` with a run's concerns around it: replay, journal, cache, concurrency, model.
    A batch's shared ``rate_limiter`` goes next to the model: only real calls ask it."""
    keys = _Keys()
    out: LM = lm
    if rate_limiter is not None:
        from recursa.batch.ratelimit import RateLimitedLM

        out = RateLimitedLM(out, rate_limiter, prices)
    out = ConcurrencyLimitedLM(out, limit)
    if cache is not None:
        from recursa.pricing import PriceTable

        out = CachedLM(out, cache, prices or PriceTable(), keys)
    if journal is not None:
        out = JournalingLM(out, journal, keys)
    if replay is not None:
        out = ReplayLM(out, replay, keys)
    return out
