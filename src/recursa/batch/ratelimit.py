"""One rate limiter for every LM call of a batch: requests and tokens per minute, a global
pause on 429, and the batch's total calls and cost.

Providers limit an API key, not a process: OpenAI and Anthropic count requests per minute
(RPM) and tokens per minute (TPM, input + output, where the request's output cap counts when it
is sent), per model or organisation. A batch of many runs, each with sub-calls and children,
hits those limits together, so they are modelled once for the whole batch:

- :class:`LimiterCore` holds two token buckets (RPM and TPM, each refilled continuously and
  as deep as one minute's allowance), a "paused until" time and the batch totals. ``reserve``
  takes a request's share at once and says how long the caller must wait before sending it
  (reservations queue up in order without a lock held over the wait); ``settle`` corrects the
  token estimate with what the provider reported; ``pause`` stops every caller until a 429's
  ``Retry-After`` has passed (1 s when it gives none).
- :class:`LocalRateLimiter` is the core in the batch's own process (``executor="local"``); on
  Ray one actor holds the core and every worker asks it (:mod:`recursa.batch.ray_executor`).
  Both implement :class:`RateLimiter`.
- :class:`RateLimitedLM` is the wrapper in each run's LM stack (:func:`recursa.lm.wrappers
  .compose`) that asks before every real model call (root turns, sub-calls, children; not
  journal replays or cache hits) and reports usage after. While its call is in flight, the HTTP
  backends report each 429 they receive through :data:`recursa.lm.retry.rate_limit_hook`.

When the batch's total calls or cost are spent, ``acquire`` raises the same internal signal a
run's own budget does, so each run in flight stops with ``max_llm_calls`` / ``max_cost`` and its
best partial answer instead of failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from recursa.errors import ConfigError
from recursa.limits import BudgetExhausted, approx_tokens
from recursa.lm.base import LM
from recursa.lm.retry import rate_limit_hook
from recursa.lm.wrappers import WrapperLM
from recursa.pricing import PriceTable
from recursa.types import Completion, LMSettings, Message, StopReason

__all__ = [
    "DEFAULT_PAUSE_S",
    "Grant",
    "LimiterCore",
    "LocalRateLimiter",
    "RateLimitedLM",
    "RateLimiter",
    "RateLimits",
]

DEFAULT_PAUSE_S = 1.0  # a 429 without Retry-After pauses everyone this long


@dataclass(frozen=True)
class RateLimits:
    """What the limiter enforces across a batch (``None``: no limit).

    Attributes:
        requests_per_minute, tokens_per_minute: the provider's RPM and TPM for the key.
        max_llm_calls, max_cost_usd: the batch's total calls and money (calls of earlier
            invocations of the same batch are passed in as ``spent_*``).
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_llm_calls: int | None = None
    max_cost_usd: float | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute", "max_llm_calls", "max_cost_usd"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive (got {value}); omit it for no limit")

    @property
    def active(self) -> bool:
        return any(
            v is not None
            for v in (
                self.requests_per_minute,
                self.tokens_per_minute,
                self.max_llm_calls,
                self.max_cost_usd,
            )
        )


class Grant(NamedTuple):
    """``reserve``'s answer: seconds to wait before sending, or the stop reason that refuses
    the call (a :class:`StopReason` value) and why."""

    delay: float
    refused: str | None = None
    detail: str = ""


class _Bucket:
    """A token bucket one minute deep, refilled continuously; its level may go below zero
    (reservations made ahead of time), which is how callers queue in order."""

    def __init__(self, per_minute: float, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.t = now

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def take(self, n: float, now: float) -> float:
        """Take ``n`` (a request larger than the bucket counts as a full bucket); return how
        long until the level is back to zero, i.e. until the taken share is really free."""
        self._refill(now)
        self.level -= min(n, self.capacity)
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def adjust(self, n: float, now: float) -> None:
        """Charge ``n`` more (or give back ``-n``) after the provider reported the real use."""
        self._refill(now)
        self.level = min(self.capacity, self.level - n)


class LimiterCore:
    """The limiter's state and arithmetic, with no waiting of its own (the caller waits), so
    one instance serves a thread, an event loop or a Ray actor alike."""

    def __init__(
        self,
        limits: RateLimits,
        *,
        spent_calls: int = 0,
        spent_cost: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.clock = clock
        now = clock()
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self._rpm = _Bucket(rpm, now) if rpm else None
        self._tpm = _Bucket(tpm, now) if tpm else None
        self.paused_until = now
        self.calls = spent_calls
        self.cost = spent_cost
        self.tokens = 0
        self.pauses = 0

    def _refusal(self) -> Grant | None:
        lim = self.limits
        if lim.max_llm_calls is not None and self.calls >= lim.max_llm_calls:
            detail = f"the batch's {lim.max_llm_calls} LM calls (--max-calls-total) are spent"
            return Grant(0.0, StopReason.MAX_LLM_CALLS.value, detail)
        if lim.max_cost_usd is not None and self.cost >= lim.max_cost_usd:
            detail = f"the batch's ${lim.max_cost_usd:g} (--max-cost-total) is spent"
            return Grant(0.0, StopReason.MAX_COST.value, detail)
        return None

    def reserve(self, tokens: int) -> Grant:
        """Reserve one request of about ``tokens`` tokens: how long to wait before sending it,
        or a refusal when the batch's calls or money are spent."""
        refused = self._refusal()
        if refused is not None:
            return refused
        now = self.clock()
        delay = max(0.0, self.paused_until - now)
        if self._rpm is not None:
            delay = max(delay, self._rpm.take(1, now))
        if self._tpm is not None:
            delay = max(delay, self._tpm.take(tokens, now))
        self.calls += 1
        return Grant(delay)

    def paused_for(self) -> float:
        """Seconds left of a 429 pause (0 when none)."""
        return max(0.0, self.paused_until - self.clock())

    def settle(self, estimated: int, used: int, cost: float) -> None:
        """A call came back having used ``used`` tokens (``estimated`` were reserved) and cost
        ``cost`` dollars."""
        self.tokens += used
        self.cost += cost
        if self._tpm is not None:
            self._tpm.adjust(used - estimated, self.clock())

    def pause(self, seconds: float | None) -> None:
        """A provider answered 429: nobody sends until ``seconds`` (its Retry-After) pass."""
        wait = DEFAULT_PAUSE_S if seconds is None else max(0.0, seconds)
        self.paused_until = max(self.paused_until, self.clock() + wait)
        self.pauses += 1

    def snapshot(self) -> dict[str, Any]:
        return {"calls": self.calls, "cost_usd": self.cost, "tokens": self.tokens,
                "pauses_429": self.pauses}  # fmt: skip


class RateLimiter(Protocol):
    """What a run's :class:`RateLimitedLM` asks; local and Ray limiters implement it."""

    async def acquire(self, tokens: int) -> None:
        """Wait until a request of about ``tokens`` tokens may be sent. Raises
        :class:`~recursa.limits.BudgetExhausted` when the batch's calls or cost are spent."""
        ...

    def settle(self, estimated: int, used: int, cost: float) -> None: ...

    def pause(self, seconds: float | None) -> None: ...


async def wait_granted(
    grant: Grant, paused_for: Callable[[], Awaitable[float]], sleep: Callable[[float], Any]
) -> None:
    """Wait out ``grant`` (or raise its refusal), then any 429 pause begun meanwhile."""
    if grant.refused is not None:
        raise BudgetExhausted(StopReason(grant.refused), grant.detail)
    delay = grant.delay
    while delay > 0:
        await sleep(delay)
        delay = await paused_for()


class LocalRateLimiter:
    """The limiter of a batch that runs in this process (one event loop)."""

    def __init__(
        self,
        limits: RateLimits,
        *,
        spent_calls: int = 0,
        spent_cost: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.core = LimiterCore(limits, spent_calls=spent_calls, spent_cost=spent_cost, clock=clock)
        self._sleep = sleep

    async def acquire(self, tokens: int) -> None:
        async def paused_for() -> float:
            return self.core.paused_for()

        await wait_granted(self.core.reserve(tokens), paused_for, self._sleep)

    def settle(self, estimated: int, used: int, cost: float) -> None:
        self.core.settle(estimated, used, cost)

    def pause(self, seconds: float | None) -> None:
        self.core.pause(seconds)


def estimate_tokens(lm: LM, messages: Sequence[Message], settings: LMSettings | None) -> int:
    """A request's tokens as providers count them against TPM: the prompt (~4 characters a
    token) plus the output cap it sends (or the backend's default cap)."""
    cap = settings.max_output_tokens if settings is not None else None
    cap = cap or lm.capabilities.default_max_output_tokens or 0
    return approx_tokens(sum(len(m.content) for m in messages)) + cap


class RateLimitedLM(WrapperLM):
    """Asks the batch's limiter before each model call and tells it what the call used."""

    def __init__(self, inner: LM, limiter: RateLimiter, prices: PriceTable | None = None) -> None:
        super().__init__(inner)
        self.limiter = limiter
        self.prices = prices or PriceTable()

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        estimated = estimate_tokens(self.inner, messages, settings)
        await self.limiter.acquire(estimated)
        hook = rate_limit_hook.set(self.limiter.pause)
        try:
            completion = await self.inner.complete(messages, settings)
        except BaseException:
            self.limiter.settle(estimated, estimated, 0.0)  # sent: assume it counted in full
            raise
        finally:
            rate_limit_hook.reset(hook)
        cost = self.prices.cost(self.name, completion.usage) or 0.0
        self.limiter.settle(estimated, completion.usage.total_tokens, cost)
        return completion
