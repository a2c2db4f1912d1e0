"""The result and error types of rlms 0.1.3, rebuilt on recursa's :class:`~recursa.types.Result`.

Scripts written for rlms read ``completion.response``, ``completion.usage_summary.total_cost``,
``usage_summary.model_usage_summaries[model].total_input_tokens`` and catch
``BudgetExceededError`` and friends; these classes keep those names and attributes. Each error is
also a :class:`~recursa.errors.LimitExceeded` (so a :class:`~recursa.errors.RecursaError`) whose
``result`` holds the whole recursa :class:`Result` (trace, usage per depth, stop reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recursa.errors import LimitExceeded
from recursa.types import Result, StopReason, Usage

__all__ = [
    "BudgetExceededError",
    "CancellationError",
    "ErrorThresholdExceededError",
    "ModelUsageSummary",
    "RLMChatCompletion",
    "TimeoutExceededError",
    "TokenLimitExceededError",
    "UsageSummary",
]


@dataclass
class ModelUsageSummary:
    """One model's calls and tokens; ``total_cost`` is ``None`` when no call had a known price."""

    total_calls: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost: float | None = None

    @classmethod
    def from_usage(cls, usage: Usage) -> ModelUsageSummary:
        priced = usage.calls == 0 or usage.unpriced_calls < usage.calls
        return cls(
            total_calls=usage.calls,
            total_input_tokens=usage.input_tokens,
            total_output_tokens=usage.output_tokens,
            total_cost=usage.cost_usd if priced else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "total_calls": self.total_calls,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
        }
        if self.total_cost is not None:
            out["total_cost"] = self.total_cost
        return out


@dataclass
class UsageSummary:
    """Usage per model name (rlms' ``model_name``, without recursa's ``provider:`` prefix)."""

    model_usage_summaries: dict[str, ModelUsageSummary]

    @classmethod
    def from_usage(cls, by_model: Mapping[str, Usage], names: Mapping[str, str]) -> UsageSummary:
        """``by_model`` is keyed by recursa model names; ``names`` maps them to rlms' names."""
        merged: dict[str, Usage] = {}
        for model, usage in by_model.items():
            name = names.get(model) or model.partition(":")[2] or model
            merged[name] = merged.get(name, Usage()) + usage
        return cls({k: ModelUsageSummary.from_usage(v) for k, v in merged.items()})

    @property
    def total_cost(self) -> float | None:
        costs = [s.total_cost for s in self.model_usage_summaries.values()]
        known = [c for c in costs if c is not None]
        return sum(known) if known else None

    @property
    def total_input_tokens(self) -> int:
        return sum(s.total_input_tokens for s in self.model_usage_summaries.values())

    @property
    def total_output_tokens(self) -> int:
        return sum(s.total_output_tokens for s in self.model_usage_summaries.values())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_usage_summaries": {k: v.to_dict() for k, v in self.model_usage_summaries.items()}
        }
        if self.total_cost is not None:
            out["total_cost"] = self.total_cost
        return out


@dataclass
class RLMChatCompletion:
    """What ``RLM.completion()`` returns: rlms' fields, plus ``result``, recursa's own record
    of the run (``stop_reason``, ``trace_path``, ``run_id``, usage per depth)."""

    root_model: str
    prompt: Any
    response: str
    usage_summary: UsageSummary
    execution_time: float
    metadata: dict[str, Any] | None = None
    error: str | None = None
    result: Result | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "root_model": self.root_model,
            "prompt": self.prompt,
            "response": self.response,
            "usage_summary": self.usage_summary.to_dict(),
            "execution_time": self.execution_time,
        }
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.error is not None:
            out["error"] = self.error
        return out


class _RLMSLimit(LimitExceeded):
    """An rlms limit error. ``result`` is recursa's record of the stopped run (or ``None``)."""

    stop: StopReason = StopReason.ERROR

    def _setup(self, message: str, result: Result | None) -> None:
        LimitExceeded.__init__(self, self.stop, result)
        self.args = (message,)  # rlms' own wording, which scripts may log or show


class BudgetExceededError(_RLMSLimit):
    """The run spent more than ``max_budget`` US dollars."""

    stop = StopReason.MAX_COST

    def __init__(
        self,
        spent: float,
        budget: float,
        message: str | None = None,
        *,
        result: Result | None = None,
    ) -> None:
        self.spent, self.budget = spent, budget
        default = (
            f"Budget exceeded: spent ${spent:.6f} of ${budget:.6f} budget; "
            "raise max_budget or use a cheaper model"
        )
        self._setup(message or default, result)


class TimeoutExceededError(_RLMSLimit):
    """The run took longer than ``max_timeout`` seconds."""

    stop = StopReason.TIMEOUT

    def __init__(
        self,
        elapsed: float,
        timeout: float,
        partial_answer: str | None = None,
        message: str | None = None,
        *,
        result: Result | None = None,
    ) -> None:
        self.elapsed, self.timeout, self.partial_answer = elapsed, timeout, partial_answer
        default = f"Timeout exceeded: {elapsed:.1f}s of {timeout:.1f}s limit; raise max_timeout"
        self._setup(message or default, result)


class TokenLimitExceededError(_RLMSLimit):
    """The run used more than ``max_tokens`` tokens (input + output, all models)."""

    stop = StopReason.MAX_TOKENS

    def __init__(
        self,
        tokens_used: int,
        token_limit: int,
        partial_answer: str | None = None,
        message: str | None = None,
        *,
        result: Result | None = None,
    ) -> None:
        self.tokens_used, self.token_limit = tokens_used, token_limit
        self.partial_answer = partial_answer
        default = (
            f"Token limit exceeded: {tokens_used:,} of {token_limit:,} tokens; raise max_tokens"
        )
        self._setup(message or default, result)


class ErrorThresholdExceededError(_RLMSLimit):
    """``max_errors`` iterations in a row ran code that failed."""

    stop = StopReason.MAX_CONSECUTIVE_ERRORS

    def __init__(
        self,
        error_count: int,
        threshold: int,
        last_error: str | None = None,
        partial_answer: str | None = None,
        message: str | None = None,
        *,
        result: Result | None = None,
    ) -> None:
        self.error_count, self.threshold = error_count, threshold
        self.last_error, self.partial_answer = last_error, partial_answer
        default = (
            f"Error threshold exceeded: {error_count} consecutive errors (limit: {threshold}); "
            "raise max_errors or read last_error"
        )
        self._setup(message or default, result)


class CancellationError(_RLMSLimit):
    """The run was interrupted (Ctrl-C)."""

    stop = StopReason.CANCELLED

    def __init__(
        self,
        partial_answer: str | None = None,
        message: str | None = None,
        *,
        result: Result | None = None,
    ) -> None:
        self.partial_answer = partial_answer
        self._setup(message or "Execution cancelled by user", result)
