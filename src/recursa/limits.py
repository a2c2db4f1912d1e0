"""Limits (plain data), Budget (named checks against them), Ledger (what was spent) and
SandboxSlots.

The whole tree of calls shares one :class:`Budget`: the root, its sub-calls, every child RLM and
their sub-calls all draw on the same LM calls, tokens, money and wall clock. Iterations and
consecutive errors are counted per RLM (a child has the same ``max_iterations`` as its parent
and its own count), and ``max_depth`` bounds how deep children may nest.

A call is *reserved* before it is sent and *settled* after it returns. The reservation holds the
call's worst case: one request against ``max_llm_calls``, and, under ``max_tokens`` or
``max_cost_usd``, its estimated prompt tokens plus its output cap (lowered to what the budget can
still pay for, and sent to the provider so it holds). A call that does not fit beside the calls
already in flight waits for them to settle; one that cannot fit at all is refused and the run
stops. Settling releases the reservation and charges what the provider reported to the
:class:`Ledger`, where usage accumulates apart from the checks. Each retry a backend wants to send
is reserved as one more call (see :data:`recursa.lm.base.retry_guard`). The budget's one caller
is the run's LM gate (:mod:`recursa.gate`): that is where a call is charged.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from recursa.errors import ConfigError
from recursa.pricing import ModelPrice, PriceTable
from recursa.types import StopReason, Usage

__all__ = [
    "Budget",
    "BudgetExhausted",
    "Ledger",
    "Limits",
    "Reservation",
    "SandboxSlots",
    "UsageMeter",
    "approx_tokens",
]

CHARS_PER_TOKEN = 4
DEFAULT_OUTPUT_CHARS = 20_000
DEFAULT_TIMEOUT_S = 3600.0
# A worker is ~15 MB; 8 lets a batch of children (7 beside the root) run at once.
DEFAULT_MAX_SANDBOXES = 8
# The output cap a call gets under max_tokens/max_cost_usd when neither its settings nor its
# backend name one: a worst case must be finite to be reserved.
DEFAULT_OUTPUT_RESERVE = 4096


def approx_tokens(n_chars: int) -> int:
    """A provider-neutral estimate: about four characters per token for English text and code."""
    return (n_chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds for a run. ``None`` means unbounded.

    What each shared limit guarantees (the whole tree: root, sub-calls, children):

    Attributes:
        max_iterations: root turns per RLM that may run code (the root and each child count
            their own); ``final_answer_turn`` may add one more that never runs code.
        max_depth: how deep ``rlm_query`` may nest children; past it, ``rlm_query`` is a plain call.
        max_llm_calls: model calls, and for the HTTP backends every retry too: none is sent
            past it (each is reserved before it goes out; failed calls count).
        max_tokens: input + output tokens. A call is sent only if its estimated prompt
            (~4 characters a token) plus its output cap fits beside every call in flight, and
            the cap is sent to the provider; so the total can pass it only by what a provider
            counts beyond the estimate, or by a server that ignores the output cap.
        max_cost_usd: money, on the same terms as ``max_tokens`` (worst case priced with the
            prompt uncached). Calls of models without a known price are not counted.
        timeout_s: wall clock for the whole run (default one hour), enforced while cells,
            sub-calls and sandbox starts wait too. ``None``: no limit.
        max_sandboxes: sandboxes (worker processes) alive at once in the run's tree, the root's
            included; children wait for a free one. Must be at least ``max_depth + 1``.
        max_consecutive_errors: iterations in a row whose code all failed before the run stops.
        max_output_chars: REPL output shown to the model per iteration; the rest is cut with a
            marker saying how much. ``None``: the root model's own suggestion
            (``recommended_output_chars``, lower for small local models), else 20 000.
        cell_timeout_s: compute time of one code cell (time spent waiting for sub-calls does not
            count); past it the worker is killed and restarted.
        max_concurrency: LM calls in flight at once per provider (one endpoint: an HTTP
            backend's host and port, else the provider prefix of the model's name), shared by
            every run of the process on the same event loop that uses this cap; a root or child
            RLM's turn is let in before waiting sub-calls.
        final_answer_turn: when iterations run out, give the root one last "answer now" turn:
            its code never runs, it is not counted in ``iterations`` and is traced as
            "answer now (no code)".
        raise_on_limit: raise :class:`~recursa.errors.LimitExceeded` instead of returning a
            partial result.
        max_tool_calls: calls of the caller's tools (``RLM(tools=...)``) across the tree,
            journal replays included; the first call past it is refused and stops the run, as
            ``max_llm_calls`` does. Calls whose arguments the host refuses do not count.
        tool_timeout_s: wall clock of one tool call; past it the model's code gets a
            ``ToolError`` (a sync tool's thread cannot be stopped and finishes on its own).
    """

    max_iterations: int = 30
    max_depth: int = 1
    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    max_consecutive_errors: int = 5
    max_output_chars: int | None = None
    cell_timeout_s: float = 120.0
    max_concurrency: int = 16
    final_answer_turn: bool = True
    raise_on_limit: bool = False
    max_sandboxes: int | None = None  # None: max(8, max_depth + 1), set in __post_init__
    max_tool_calls: int | None = None
    tool_timeout_s: float | None = 30.0

    def __post_init__(self) -> None:
        sandboxes = self.max_sandboxes
        if sandboxes is None:
            # The default grows with a deep max_depth: one sandbox per level of the chain.
            sandboxes = max(DEFAULT_MAX_SANDBOXES, max(self.max_depth, 0) + 1)
            object.__setattr__(self, "max_sandboxes", sandboxes)
        positive = {
            "max_iterations": self.max_iterations,
            "max_consecutive_errors": self.max_consecutive_errors,
            "max_concurrency": self.max_concurrency,
            "max_sandboxes": sandboxes,
        }
        optional: dict[str, float | None] = {
            "max_llm_calls": self.max_llm_calls,
            "max_tokens": self.max_tokens,
            "max_cost_usd": self.max_cost_usd,
            "timeout_s": self.timeout_s,
            "cell_timeout_s": self.cell_timeout_s,
            "max_output_chars": self.max_output_chars,
            "max_tool_calls": self.max_tool_calls,
            "tool_timeout_s": self.tool_timeout_s,
        }
        for name, count in positive.items():
            if count < 1:
                raise ConfigError(f"Limits.{name} must be at least 1 (got {count})")
        for name, value in optional.items():
            if value is not None and value <= 0:
                raise ConfigError(f"Limits.{name} must be positive (got {value})")
        if self.max_depth < 0:
            raise ConfigError(f"Limits.max_depth must be 0 or more (got {self.max_depth})")
        if sandboxes < self.max_depth + 1:
            # A chain root -> child -> ... at max_depth holds one sandbox per level.
            raise ConfigError(
                f"Limits.max_sandboxes={sandboxes} cannot run children "
                f"{self.max_depth} deep: raise it to at least {self.max_depth + 1} "
                "(--max-sandboxes) or lower max_depth"
            )


class BudgetExhausted(Exception):
    """Internal signal: a limit shared by the tree is used up."""

    def __init__(self, reason: StopReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


class _Signal:
    """Wakes every waiter at once; each then looks again at what it waits for."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    async def wait(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


@dataclass(eq=False)
class Reservation:
    """One call's claim on the budget, from before it is sent until it is settled.

    ``output_tokens`` is the output cap the call must be sent with (``None``: its own settings
    unchanged); ``tokens`` and ``usd`` are its worst case, held while it is in flight.
    """

    tokens: int = 0
    usd: float = 0.0
    output_tokens: int | None = None
    held: bool = False
    sent: bool = False  # the call went out (or was answered from the journal or cache)
    settled: bool = False
    prompt_chars: int = 0  # the prompt's size, measured once when the call was reserved


@dataclass
class Ledger:
    """What a run's tree spent: usage in all, by model and by depth, priced by ``prices``, and
    the calls that cost nothing (cache hits, journal replays) or more than one request (retries).
    """

    prices: PriceTable = field(default_factory=PriceTable)
    usage: Usage = field(default_factory=Usage)
    by_model: dict[str, Usage] = field(default_factory=lambda: defaultdict(Usage))
    by_depth: dict[int, Usage] = field(default_factory=lambda: defaultdict(Usage))
    cache_hits: int = 0
    saved_usd: float = 0.0
    replayed: int = 0
    retries: int = 0  # re-sent requests (429, 5xx, timeouts...), each counted as a call

    def charge(self, model: str, depth: int, usage: Usage, *, free: bool = False) -> Usage:
        """Add one call's usage (priced here) to the totals; return the priced usage.

        ``free`` marks a call answered from the call cache: its tokens count, its price is
        recorded as money saved instead of spent.
        """
        if usage.calls != 1:  # one charge is one call, whatever a backend left in Usage.calls
            usage = replace(usage, calls=1)
        priced = self.prices.price(model, usage)
        if free:
            self.cache_hits += 1
            self.saved_usd += priced.cost_usd
            priced = priced.with_cost(0.0)
        self.usage = self.usage + priced
        self.by_model[model] = self.by_model[model] + priced
        self.by_depth[depth] = self.by_depth[depth] + priced
        return priced


class Budget:
    """The tree's :class:`Limits` as named checks against its :class:`Ledger`, and the
    reservations of the calls in flight.

    ``warn`` receives a note the budget wants the run to show (a cost cap it cannot enforce).
    """

    def __init__(
        self,
        limits: Limits,
        prices: PriceTable | None = None,
        *,
        ledger: Ledger | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.limits = limits
        self.ledger = ledger if ledger is not None else Ledger(prices or PriceTable())
        self.started = time.monotonic()
        self.calls_reserved = 0
        self.tool_calls = 0
        self.exhausted: BudgetExhausted | None = None
        self.reserved_tokens = 0
        self.reserved_usd = 0.0
        self.open_reservations = 0
        self._warned: set[str] = set()
        self._warn = warn or (lambda _note: None)
        self._settled = _Signal()

    @property
    def usage(self) -> Usage:
        return self.ledger.usage

    # ---- time -------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining_time(self) -> float | None:
        if self.limits.timeout_s is None:
            return None
        return max(0.0, self.limits.timeout_s - self.elapsed())

    def expire(self, where: str = "") -> BudgetExhausted:
        """The run's wall clock ran out (``where``: while doing what); sticky like every stop."""
        return self._stop(
            StopReason.TIMEOUT, f"timeout of {self.limits.timeout_s:g}s reached{where}"
        )

    # ---- checks -----------------------------------------------------------------------------
    def _stop(self, reason: StopReason, detail: str) -> BudgetExhausted:
        if self.exhausted is None:
            self.exhausted = BudgetExhausted(reason, detail)
        return self.exhausted

    def check(self) -> None:
        """Raise :class:`BudgetExhausted` if any shared limit is used up."""
        if self.exhausted is not None:
            raise self.exhausted
        lim = self.limits
        if lim.timeout_s is not None and self.elapsed() >= lim.timeout_s:
            raise self._stop(StopReason.TIMEOUT, f"timeout of {lim.timeout_s:g}s reached")
        if lim.max_llm_calls is not None and self.calls_reserved >= lim.max_llm_calls:
            raise self._stop(StopReason.MAX_LLM_CALLS, f"max_llm_calls={lim.max_llm_calls} reached")
        if lim.max_tokens is not None and self.usage.total_tokens >= lim.max_tokens:
            raise self._stop(StopReason.MAX_TOKENS, f"max_tokens={lim.max_tokens} reached")
        if lim.max_cost_usd is not None and self.usage.cost_usd >= lim.max_cost_usd:
            raise self._stop(StopReason.MAX_COST, f"max_cost_usd={lim.max_cost_usd:g} reached")

    def _room(self, prompt: int, price: ModelPrice | None, *, now: bool) -> tuple[float, str]:
        """The most output tokens the budget can still pay for after a prompt of ``prompt``
        tokens (``inf``: unbounded), beside the calls in flight when ``now``; and which limit
        binds ("" when none)."""
        lim = self.limits
        best, why = math.inf, ""
        if lim.max_tokens is not None:
            free = lim.max_tokens - self.usage.total_tokens - (self.reserved_tokens if now else 0)
            if free - prompt < best:
                best, why = free - prompt, "tokens"
        if lim.max_cost_usd is not None and price is not None:
            free_usd = lim.max_cost_usd - self.usage.cost_usd - (self.reserved_usd if now else 0)
            left = free_usd - prompt * price.input / 1e6
            per_out = price.output / 1e6
            room = math.floor(left / per_out) if per_out > 0 else math.inf if left >= 0 else -1
            if room < best:
                best, why = room, "cost"
        return best, why

    def _warn_unpriced(self, model: str) -> None:
        """Say once per model that max_cost_usd cannot bound a model without a known price."""
        text = (
            f"max_cost_usd={self.limits.max_cost_usd:g} is not enforced for {model or 'a model'}: "
            "it has no known price, so its calls cost nothing against the cap "
            "(add it with --prices or $RECURSA_PRICES)"
        )
        if text not in self._warned:
            self._warned.add(text)
            self._warn(text)

    def _refuse(self, why: str, prompt: int) -> BudgetExhausted:
        lim = self.limits
        if why == "cost":
            return self._stop(
                StopReason.MAX_COST,
                f"max_cost_usd={lim.max_cost_usd:g}: a call with a prompt of ~{prompt} tokens "
                "could pass it",
            )
        return self._stop(
            StopReason.MAX_TOKENS,
            f"max_tokens={lim.max_tokens}: a prompt of ~{prompt} tokens would pass it",
        )

    def try_reserve(
        self, prompt_chars: int = 0, *, model: str = "", max_output_tokens: int | None = None
    ) -> Reservation | None:
        """Reserve one call's worst case before it is sent.

        Returns ``None`` when it fits only once calls in flight settle (wait on
        :meth:`wait_settled`, then ask again); raises :class:`BudgetExhausted` when it cannot
        fit at all. ``max_output_tokens`` is the call's own output cap, if it has one.
        """
        self.check()
        lim = self.limits
        price = self.ledger.prices.lookup(model) if lim.max_cost_usd is not None else None
        if lim.max_cost_usd is not None and price is None:
            self._warn_unpriced(model)
        if lim.max_tokens is None and price is None:
            self.calls_reserved += 1
            return Reservation(output_tokens=max_output_tokens, prompt_chars=prompt_chars)
        prompt = approx_tokens(prompt_chars)
        want = max_output_tokens or DEFAULT_OUTPUT_RESERVE
        ever, why = self._room(prompt, price, now=False)
        if ever < 1:  # not even one output token, with nothing else in flight
            raise self._refuse(why, prompt)
        now, _ = self._room(prompt, price, now=True)
        if want <= now:
            out = want
        elif self.open_reservations:
            return None  # what calls in flight do not use comes back when they settle
        else:
            out = int(now)  # the last call the budget allows: its output cap is lowered
        usd = price.cost(Usage(input_tokens=prompt, output_tokens=out, calls=1)) if price else 0.0
        res = Reservation(
            tokens=prompt + out, usd=usd, output_tokens=out, held=True, prompt_chars=prompt_chars
        )
        self.reserved_tokens += res.tokens
        self.reserved_usd += res.usd
        self.open_reservations += 1
        self.calls_reserved += 1
        return res

    def reserve_call(
        self, prompt_chars: int = 0, *, model: str = "", max_output_tokens: int | None = None
    ) -> Reservation:
        """:meth:`try_reserve` for callers that cannot wait: a call that does not fit beside
        the calls in flight is refused (without stopping the run)."""
        res = self.try_reserve(prompt_chars, model=model, max_output_tokens=max_output_tokens)
        if res is None:
            raise BudgetExhausted(
                StopReason.MAX_TOKENS if self.limits.max_tokens else StopReason.MAX_COST,
                "the calls in flight hold what is left of the budget",
            )
        return res

    def release(self, res: Reservation) -> None:
        """Give back a reservation (once; later calls do nothing). A call that never went out
        (``res.sent`` false) does not count against ``max_llm_calls`` either."""
        if res.settled:
            return
        res.settled = True
        if not res.sent:
            self.calls_reserved -= 1
        if res.held:
            self.open_reservations -= 1
            self.reserved_tokens -= res.tokens
            self.reserved_usd -= res.usd
            if self.open_reservations == 0:  # no float drift left behind
                self.reserved_tokens, self.reserved_usd = 0, 0.0
        self._settled.notify()

    async def wait_settled(self) -> None:
        """Wait until some reservation is released."""
        await self._settled.wait()

    def reserve_tool_call(self, tool: str) -> None:
        """Count one call of ``tool`` (a caller's tool); raise :class:`BudgetExhausted` when
        the run is stopped, out of time, or past ``max_tool_calls`` (which stops the run).
        Unlike :meth:`check`, spent LM calls do not refuse it: a tool costs no LM call."""
        if self.exhausted is not None:
            raise self.exhausted
        lim = self.limits
        if lim.timeout_s is not None and self.elapsed() >= lim.timeout_s:
            raise self.expire()
        if lim.max_tool_calls is not None and self.tool_calls >= lim.max_tool_calls:
            raise self._stop(
                StopReason.MAX_TOOL_CALLS,
                f"max_tool_calls={lim.max_tool_calls} reached (refused a call of {tool})",
            )
        self.tool_calls += 1

    def reserve_retry(self) -> None:
        """Count a retry a backend is about to send as one more call; raise if there is none
        left (or the run is out of time)."""
        self.check()
        self.calls_reserved += 1
        self.ledger.retries += 1


@dataclass
class UsageMeter:
    """What one RLM's subtree spent: its own turns, its sub-calls and its children's meters.

    The :class:`Budget` stays the one place that prices and limits; a meter only adds up what
    the budget charged, so a child run can report its own usage rather than the tree's.
    """

    parent: UsageMeter | None = None
    usage: Usage = field(default_factory=Usage)

    def add(self, priced: Usage) -> None:
        meter: UsageMeter | None = self
        while meter is not None:
            meter.usage = meter.usage + priced
            meter = meter.parent


class SandboxSlots:
    """How many sandboxes may be alive at once: one pool per run tree (or shared by several
    trees, if all of them have ``max_depth`` no greater than this pool's).

    An engine at depth ``d`` may need a chain of ``max_depth - d`` deeper sandboxes to finish
    (its child, that child's child...), so it takes a slot only while that many more stay free.
    The deepest waiting child can then always start, and children that wait on grandchildren
    never take the last slots those grandchildren need: no deadlock.
    """

    @classmethod
    def for_limits(cls, limits: Limits) -> SandboxSlots:
        """One run tree's pool, as its limits say."""
        return cls(limits.max_sandboxes or limits.max_depth + 1, limits.max_depth)

    def __init__(self, capacity: int, max_depth: int = 0) -> None:
        if capacity < max_depth + 1:
            raise ConfigError(f"{capacity} sandbox slots cannot run children {max_depth} deep")
        self.capacity = capacity
        self.max_depth = max_depth
        self.live = 0
        self.peak = 0
        self._freed = _Signal()

    async def acquire(self, depth: int) -> None:
        need = 1 + max(0, self.max_depth - depth)
        while self.capacity - self.live < need:
            await self._freed.wait()
        self.live += 1
        self.peak = max(self.peak, self.live)

    def release(self) -> None:
        self.live -= 1
        self._freed.notify()
