"""Small frozen value types shared by every layer."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from recursa.sampling import EMPTY_OPTIONS, OptionMap, check_reasoning_effort, option_map

__all__ = [
    "CellResult",
    "Completion",
    "LMSettings",
    "Message",
    "Result",
    "Role",
    "StopReason",
    "Usage",
]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}

    @classmethod
    def system(cls, content: str) -> Message:
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str) -> Message:
        return cls("assistant", content)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts and money for one or more LM calls.

    ``cached_tokens`` is the part of ``input_tokens`` served from a provider's prompt cache (or the
    local model's KV cache); it is reported apart, never added on top. ``cost_usd`` sums the calls
    whose price is known; ``unpriced_calls`` counts the others, so a total is never silently low.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    calls: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            calls=self.calls + other.calls,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced_calls=self.unpriced_calls + other.unpriced_calls,
        )

    def with_cost(self, cost_usd: float | None) -> Usage:
        """This usage with its price attached (``None`` marks every call as unpriced)."""
        if cost_usd is None:
            return replace(self, cost_usd=0.0, unpriced_calls=self.calls)
        return replace(self, cost_usd=cost_usd, unpriced_calls=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "total_tokens": self.total_tokens,
            "calls": self.calls,
            "cost_usd": round(self.cost_usd, 8),
            "unpriced_calls": self.unpriced_calls,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        return cls(
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cached_tokens=int(data.get("cached_tokens", 0)),
            calls=int(data.get("calls", 0)),
            cost_usd=float(data.get("cost_usd", 0.0)),
            unpriced_calls=int(data.get("unpriced_calls", 0)),
        )


@dataclass(frozen=True, slots=True)
class LMSettings:
    """Sampling and transport settings for one call. ``None`` means the backend's default."""

    temperature: float | None = None
    max_output_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    timeout_s: float | None = None
    # Whether the reply is expected to be code (an RLM's root turn) or plain text (a direct
    # answer). ``None``: the backend decides as it always has; the embedded local model, which
    # starts conversation replies with a code block, starts none when this is ``False``.
    expect_code: bool | None = None
    # Reply with exactly one of these, picked by the model's own probabilities (only backends
    # whose capabilities declare ``choices``; see recursa.lm.base.Capabilities).
    choices: tuple[str, ...] | None = None
    top_p: float | None = None
    # One of recursa.sampling.REASONING_EFFORTS; what each backend makes of it is in its module.
    reasoning_effort: str | None = None
    # JSON merged into the provider's request body; a dict is stored as a frozen, hashable
    # recursa.sampling.OptionMap, and keys recursa sets itself are refused (ConfigError).
    provider_options: Mapping[str, Any] = EMPTY_OPTIONS

    def __post_init__(self) -> None:
        if not isinstance(self.provider_options, OptionMap):
            object.__setattr__(self, "provider_options", option_map(self.provider_options))
        if self.reasoning_effort is not None:
            object.__setattr__(
                self, "reasoning_effort", check_reasoning_effort(self.reasoning_effort)
            )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "temperature": self.temperature,
            "max_output_tokens": self.max_output_tokens,
            "stop": list(self.stop) if self.stop else None,
            "seed": self.seed,
        }
        # The rest only when set: the call cache keys on this dict, so the keys of requests
        # made before a field existed stay valid.
        if self.expect_code is not None:
            data["expect_code"] = self.expect_code
        if self.choices is not None:
            data["choices"] = list(self.choices)
        if self.top_p is not None:
            data["top_p"] = self.top_p
        if self.reasoning_effort is not None:
            data["reasoning_effort"] = self.reasoning_effort
        if self.provider_options:
            data["provider_options"] = option_map(self.provider_options).to_dict()
        return data


@dataclass(frozen=True, slots=True)
class Completion:
    """What a backend returns for one call. ``source`` says where the answer came from: the
    ``model``, a resumed run's ``journal`` or the call ``cache`` (set by the LM wrappers)."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None
    source: Literal["model", "journal", "cache"] = "model"


@dataclass(frozen=True, slots=True)
class CellResult:
    """The outcome of running one code block in the sandbox.

    ``error`` holds the traceback text when the code raised. ``final`` holds the answer when the
    code called ``FINAL``/``FINAL_VAR`` (or set ``answer = {"ready": True, ...}``). ``fatal`` is set
    when the worker died (crash, kill, timeout): the REPL's variables are gone.
    """

    stdout: str = ""
    error: str | None = None
    final: str | None = None
    elapsed_s: float = 0.0
    fatal: bool = False
    fatal_reason: str | None = None
    output_cut_chars: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.fatal


class StopReason(enum.StrEnum):
    """Why a run ended. Only ``FINAL`` means the model gave its answer."""

    FINAL = "final"
    MAX_ITERATIONS = "max_iterations"
    MAX_LLM_CALLS = "max_llm_calls"
    MAX_TOOL_CALLS = "max_tool_calls"
    MAX_TOKENS = "max_tokens"
    MAX_COST = "max_cost"
    TIMEOUT = "timeout"
    MAX_CONSECUTIVE_ERRORS = "max_consecutive_errors"
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class Result:
    """Everything a run produced.

    ``answer`` is the final answer when ``stop_reason`` is ``FINAL``; otherwise it is the best
    partial answer the run had (possibly empty) and ``partial`` is true. ``strategy`` says how
    the run answered (``"rlm"``: the REPL loop, ``"direct"``: one plain call with the context
    in the prompt) and ``strategy_reason`` why (see :mod:`recursa.strategy`).
    """

    answer: str
    stop_reason: StopReason
    iterations: int
    usage: Usage
    usage_by_model: Mapping[str, Usage]
    usage_by_depth: Mapping[int, Usage]
    wall_time_s: float
    run_id: str
    detail: str = ""
    trace_path: Path | None = None
    spans: tuple[Any, ...] = ()
    warnings: tuple[str, ...] = ()
    cache_hits: int = 0
    saved_usd: float = 0.0
    replayed_calls: int = 0
    retries: int = 0  # requests re-sent after 429/5xx/timeouts (counted in max_llm_calls)
    strategy: str = "rlm"
    strategy_reason: str = ""

    @property
    def partial(self) -> bool:
        return self.stop_reason is not StopReason.FINAL

    @property
    def cost_usd(self) -> float | None:
        """Total cost in USD; ``None`` when no call had a known price."""
        if self.usage.calls and self.usage.unpriced_calls == self.usage.calls:
            return None
        return self.usage.cost_usd

    @property
    def cost_complete(self) -> bool:
        """True when every call's price was known, so ``cost_usd`` is the whole cost."""
        return self.usage.unpriced_calls == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "stop_reason": self.stop_reason.value,
            "partial": self.partial,
            "detail": self.detail,
            "iterations": self.iterations,
            "usage": self.usage.to_dict(),
            "usage_by_model": {k: v.to_dict() for k, v in self.usage_by_model.items()},
            "usage_by_depth": {str(k): v.to_dict() for k, v in self.usage_by_depth.items()},
            "cost_usd": self.cost_usd,
            "cost_complete": self.cost_complete,
            "wall_time_s": round(self.wall_time_s, 4),
            "run_id": self.run_id,
            "trace_path": str(self.trace_path) if self.trace_path else None,
            "warnings": list(self.warnings),
            "cache_hits": self.cache_hits,
            "saved_usd": round(self.saved_usd, 8),
            "replayed_calls": self.replayed_calls,
            "retries": self.retries,
            "strategy": self.strategy,
            "strategy_reason": self.strategy_reason,
        }
