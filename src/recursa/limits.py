"""Limits (plain data) and Budget (the one place that checks and charges them).

The whole tree of calls shares one :class:`Budget`: the root, its sub-calls, every child RLM and
their sub-calls all draw on the same LM calls, tokens, money and wall clock. Iterations and
consecutive errors are counted per RLM (a child has the same ``max_iterations`` as its parent
and its own count), and ``max_depth`` bounds how deep children may nest.

A call is *reserved* before it is sent (so concurrent calls cannot overshoot ``max_llm_calls``,
and a call whose estimated prompt alone would pass ``max_tokens`` is refused) and *charged*
after it returns. Tokens and cost can still overshoot by what calls already in flight spend;
the next reservation after that is refused.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace

from recursa.errors import ConfigError
from recursa.pricing import PriceTable
from recursa.types import StopReason, Usage

__all__ = ["Budget", "BudgetExhausted", "Limits", "UsageMeter", "approx_tokens"]

CHARS_PER_TOKEN = 4
DEFAULT_OUTPUT_CHARS = 20_000


def approx_tokens(n_chars: int) -> int:
    """A provider-neutral estimate: about four characters per token for English text and code."""
    return (n_chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds for a run. ``None`` means unbounded.

    Attributes:
        max_iterations: root turns per RLM (the root and each child count their own).
        max_depth: how deep ``rlm_query`` may nest children; past it, ``rlm_query`` is a plain call.
        max_llm_calls: LM calls across the whole tree (root turns and sub-calls alike).
        max_tokens: input + output tokens across the whole tree.
        max_cost_usd: money across the whole tree (only calls with a known price count).
        timeout_s: wall clock for the whole run, enforced while cells and sub-calls run too.
        max_consecutive_errors: iterations in a row whose code all failed before the run stops.
        max_output_chars: REPL output shown to the model per iteration; the rest is cut with a
            marker saying how much. ``None``: the root model's own suggestion
            (``recommended_output_chars``, lower for small local models), else 20 000.
        cell_timeout_s: compute time of one code cell (time spent waiting for sub-calls does not
            count); past it the worker is killed and restarted.
        max_concurrency: LM calls in flight at once across the tree.
        final_answer_turn: when iterations run out, give the root one last "answer now" turn.
        raise_on_limit: raise :class:`~recursa.errors.LimitExceeded` instead of returning a
            partial result.
    """

    max_iterations: int = 30
    max_depth: int = 1
    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    timeout_s: float | None = None
    max_consecutive_errors: int = 5
    max_output_chars: int | None = None
    cell_timeout_s: float = 120.0
    max_concurrency: int = 16
    final_answer_turn: bool = True
    raise_on_limit: bool = False

    def __post_init__(self) -> None:
        positive = {
            "max_iterations": self.max_iterations,
            "max_consecutive_errors": self.max_consecutive_errors,
            "max_concurrency": self.max_concurrency,
        }
        optional = {
            "max_llm_calls": self.max_llm_calls,
            "max_tokens": self.max_tokens,
            "max_cost_usd": self.max_cost_usd,
            "timeout_s": self.timeout_s,
            "cell_timeout_s": self.cell_timeout_s,
            "max_output_chars": self.max_output_chars,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"Limits.{name} must be at least 1 (got {value})")
        for name, value in optional.items():
            if value is not None and value <= 0:
                raise ConfigError(f"Limits.{name} must be positive (got {value})")
        if self.max_depth < 0:
            raise ConfigError(f"Limits.max_depth must be 0 or more (got {self.max_depth})")


class BudgetExhausted(Exception):
    """Internal signal: a limit shared by the tree is used up."""

    def __init__(self, reason: StopReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


@dataclass
class Budget:
    """Counts what the tree has spent against its :class:`Limits`."""

    limits: Limits
    prices: PriceTable = field(default_factory=PriceTable)
    started: float = field(default_factory=time.monotonic)
    calls_reserved: int = 0
    usage: Usage = field(default_factory=Usage)
    by_model: dict[str, Usage] = field(default_factory=lambda: defaultdict(Usage))
    by_depth: dict[int, Usage] = field(default_factory=lambda: defaultdict(Usage))
    exhausted: BudgetExhausted | None = None
    cache_hits: int = 0
    saved_usd: float = 0.0
    replayed: int = 0
    warnings: list[str] = field(default_factory=list)

    # ---- time -------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining_time(self) -> float | None:
        if self.limits.timeout_s is None:
            return None
        return max(0.0, self.limits.timeout_s - self.elapsed())

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

    def reserve_call(self, prompt_chars: int = 0) -> None:
        """Reserve one LM call before sending it; raise if the tree may not make it."""
        self.check()
        lim = self.limits
        if lim.max_tokens is not None:
            projected = self.usage.total_tokens + approx_tokens(prompt_chars)
            if projected > lim.max_tokens:
                raise self._stop(
                    StopReason.MAX_TOKENS,
                    f"max_tokens={lim.max_tokens}: a prompt of ~{approx_tokens(prompt_chars)} "
                    "tokens would pass it",
                )
        self.calls_reserved += 1

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
