"""``RLM`` with the constructor and ``completion()`` of rlms 0.1.3, running on recursa.

Switch with one import::

    # from rlm import RLM
    from recursa.compat.rlms import RLM

    rlm = RLM(backend="openai", backend_kwargs={"model_name": "gpt-5-mini"}, max_depth=2)
    print(rlm.completion(context, root_prompt="Who wrote it?").response)

Every argument keeps its rlms name, position and default, and means what it means in rlms:
``max_depth`` counts RLM levels (1: only the root runs a REPL), limits raise rlms' errors,
``custom_tools`` values may be data. ``docs/from-rlms.md`` maps each one to recursa's own API,
and lists where the two differ (model code runs in a separate process unless
``environment_kwargs={"trusted": True}``; usage counts the whole tree of calls).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from recursa.compat._rlms_backends import (
    BackendSpec,
    SandboxChoice,
    build_lm,
    choose_sandbox,
    split_sampling,
)
from recursa.compat._rlms_events import Callbacks, RLMLogger, RLMSEvents, metadata_record
from recursa.compat._rlms_tools import system_prompt_text, tool_kwargs
from recursa.compat._rlms_types import (
    BudgetExceededError,
    CancellationError,
    ErrorThresholdExceededError,
    ModelUsageSummary,
    RLMChatCompletion,
    TimeoutExceededError,
    TokenLimitExceededError,
    UsageSummary,
)
from recursa.errors import ConfigError
from recursa.limits import Limits
from recursa.lm.base import LM
from recursa.rlm import RLM as _RecursaRLM
from recursa.sandbox.base import SandboxConfig
from recursa.trace.spans import TraceProcessor
from recursa.types import Result, StopReason

__all__ = [
    "RLM",
    "BudgetExceededError",
    "CancellationError",
    "ErrorThresholdExceededError",
    "ModelUsageSummary",
    "RLMChatCompletion",
    "RLMLogger",
    "TimeoutExceededError",
    "TokenLimitExceededError",
    "UsageSummary",
]

#: The question when ``root_prompt`` is not given: as in rlms, the task is the context itself.
TASK_IN_CONTEXT = "The task is in `context` itself: read it and do what it asks."


class _OwningRLM(_RecursaRLM):
    """recursa's RLM that also closes the compat layer's models when it closes its own (after
    each run, and when a session ends), on the event loop that used them."""

    def __init__(self, *args: Any, owned: tuple[LM, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._compat_owned = owned

    async def aclose(self) -> None:
        await super().aclose()
        for lm in self._compat_owned:
            await lm.aclose()


class RLM:
    """rlms' ``RLM`` (0.1.3): same parameters, same order, same defaults. See the module doc
    and ``docs/from-rlms.md`` for what each becomes in recursa."""

    def __init__(
        self,
        backend: str = "openai",
        backend_kwargs: dict[str, Any] | None = None,
        environment: str = "local",
        environment_kwargs: dict[str, Any] | None = None,
        depth: int = 0,
        max_depth: int = 1,
        max_iterations: int = 30,
        max_budget: float | None = None,
        max_timeout: float | None = None,
        max_tokens: int | None = None,
        max_errors: int | None = None,
        custom_system_prompt: str | None = None,
        other_backends: list[str] | None = None,
        other_backend_kwargs: list[dict[str, Any]] | None = None,
        logger: Any | None = None,
        verbose: bool = False,
        persistent: bool = False,
        custom_tools: dict[str, Any] | None = None,
        custom_sub_tools: dict[str, Any] | None = None,
        compaction: bool = False,
        compaction_threshold_pct: float = 0.85,
        max_concurrent_subcalls: int = 4,
        on_subcall_start: Callable[[int, str, str], None] | None = None,
        on_subcall_complete: Callable[[int, str, float, str | None], None] | None = None,
        on_iteration_start: Callable[[int, int], None] | None = None,
        on_iteration_complete: Callable[[int, int, float], None] | None = None,
        sampling_args: dict[str, Any] | None = None,
        sub_sampling_args: dict[str, Any] | None = None,
        orchestrator: bool = True,
        user_prologue: str | None = None,
    ) -> None:
        if other_backends is not None and len(other_backends) != 1:
            raise ConfigError(
                "other_backends takes exactly one backend (the model for sub-calls), as in "
                "rlms; for more models pass recursa.RLM(models=[...])"
            )
        if max_errors is not None and max_errors < 1:
            raise ConfigError(f"max_errors must be at least 1 (got {max_errors})")
        self.backend, self.backend_kwargs = backend, dict(backend_kwargs or {})
        self.environment_type = environment
        self.environment_kwargs = dict(environment_kwargs or {})
        self.depth, self.max_depth, self.max_iterations = depth, max_depth, max_iterations
        self.max_budget, self.max_timeout = max_budget, max_timeout
        self.max_tokens, self.max_errors = max_tokens, max_errors
        self.persistent, self.logger, self.verbose = persistent, logger, verbose
        self.custom_tools = custom_tools
        self.custom_sub_tools = custom_sub_tools if custom_sub_tools is not None else custom_tools
        self._sandbox = choose_sandbox(environment, self.environment_kwargs)
        self._root = build_lm(backend, self.backend_kwargs)
        self._sub: BackendSpec | None = None
        if other_backends:
            kwargs = (other_backend_kwargs or [{}])[0]
            self._sub = build_lm(other_backends[0], kwargs)
        # recursa model names ("openai:gpt-5") -> the names rlms users gave ("gpt-5").
        self._names = {s.lm.name: s.model_name for s in (self._root, self._sub) if s}
        self._events = RLMSEvents(
            Callbacks(
                on_subcall_start, on_subcall_complete, on_iteration_start, on_iteration_complete
            ),
            self._names,
            logger,
        )
        options = {
            **self._limits_kwargs(max_concurrent_subcalls),
            **self._sandbox_kwargs(),
            **self._sampling_kwargs(sampling_args, sub_sampling_args),
            **tool_kwargs(custom_tools, self.custom_sub_tools),
            **self._prompt_kwargs(custom_system_prompt, user_prologue),
            # Always said: recursa compacts by default where the window is known, rlms never.
            "compaction": compaction,
            "compaction_threshold": compaction_threshold_pct,
        }
        self._rlm = self._build(options)
        self._session: Any = None
        if logger is not None and hasattr(logger, "log_metadata"):
            logger.log_metadata(metadata_record(self._run_metadata()))

    # ---- building the recursa RLM --------------------------------------------------------------
    def _levels(self) -> int:
        """RLM levels this instance may run, itself included (rlms: ``max_depth - depth``)."""
        return self.max_depth - self.depth

    def _limits_kwargs(self, max_concurrent_subcalls: int) -> dict[str, Any]:
        # rlms' max_depth counts levels, the root's included; recursa's counts children.
        child_depth = max(self._levels() - 1, 0)
        cell: dict[str, Any] = {}
        if self._sandbox.cell_timeout_s is not None:
            cell["cell_timeout_s"] = self._sandbox.cell_timeout_s
        limits = Limits(
            max_iterations=self.max_iterations,
            max_depth=child_depth,
            max_cost_usd=self.max_budget,
            timeout_s=self.max_timeout,  # None: no wall clock, as in rlms
            max_tokens=self.max_tokens,
            # rlms: no limit unless set. Past max_iterations the count cannot go anyway.
            max_consecutive_errors=self.max_errors or self.max_iterations + 1,
            max_sandboxes=max(max_concurrent_subcalls + 1, child_depth + 1),
            **cell,
        )
        return {"limits": limits}

    def _sandbox_kwargs(self) -> dict[str, Any]:
        choice: SandboxChoice = self._sandbox
        out: dict[str, Any] = {"sandbox": choice.tier, "trusted": choice.trusted}
        if choice.docker_image:
            out["sandbox_config"] = SandboxConfig(docker_image=choice.docker_image)
        if self._levels() <= 0:
            # rlms at max depth is a plain LM call on the prompt: recursa's direct strategy.
            out["strategy"] = "direct"
        return out

    def _sampling_kwargs(
        self, sampling_args: Mapping[str, Any] | None, sub_args: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """rlms' sampling per client: the root's (``backend_kwargs["sampling_args"]`` updated by
        ``sampling_args``) and the sub-calls' (the other backend's own, else a copy of the
        root's, updated by ``sub_sampling_args``)."""
        root = {**self._root.sampling, **(sampling_args or {})}
        sub = {**(self._sub.sampling if self._sub else root), **(sub_args or {})}
        out: dict[str, Any] = {}
        if root:
            out["root_sampling"] = split_sampling(root)
        if sub:
            out["sub_sampling"] = split_sampling(sub)
        return out

    def _prompt_kwargs(self, system: str | None, prologue: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if system:
            out["system_prompt"] = system_prompt_text(system)
        if prologue:
            out["prologue"] = prologue
        return out

    def _build(self, options: dict[str, Any]) -> _OwningRLM:
        owned = tuple({id(s.lm): s.lm for s in (self._root, self._sub) if s}.values())
        return _OwningRLM(
            self._root.lm,
            self._sub.lm if self._sub else None,
            owned=owned,
            processors=[self._events],
            **options,
        )

    def _run_metadata(self) -> dict[str, Any]:
        """rlms' ``RLMMetadata``, secrets left out."""
        secret = ("api_key", "token", "secret", "password")
        return {
            "root_model": self._root.model_name,
            "max_depth": self.max_depth,
            "max_iterations": self.max_iterations,
            "backend": self.backend,
            "backend_kwargs": {
                k: v for k, v in self.backend_kwargs.items() if not any(s in k for s in secret)
            },
            "environment_type": self.environment_type,
            "environment_kwargs": dict(self.environment_kwargs),
            "other_backends": [self._sub.lm.name] if self._sub else None,
        }

    # ---- completion ----------------------------------------------------------------------------
    def completion(self, prompt: Any, root_prompt: str | None = None) -> RLMChatCompletion:
        """Answer over ``prompt`` (the context: a string, a dict or a list), optionally with a
        question ``root_prompt``. Raises rlms' errors when a limit stops the run; returns the
        best answer when ``max_iterations`` runs out (one "answer now" turn, as in rlms)."""
        start = time.perf_counter()
        question = root_prompt if root_prompt and root_prompt.strip() else TASK_IN_CONTEXT
        if self.logger is not None and hasattr(self.logger, "clear_iterations"):
            self.logger.clear_iterations()
        try:
            if self.verbose:
                from recursa.cli.progress import LiveProgress

                with LiveProgress() as progress:
                    result = self._ask(prompt, question, [progress])
            else:
                result = self._ask(prompt, question, [])
        except KeyboardInterrupt:
            raise CancellationError(message="Execution cancelled by user (Ctrl+C)") from None
        _raise_for_limit(result, self)
        return self._completion(prompt, result, time.perf_counter() - start)

    def _ask(self, prompt: Any, question: str, processors: list[TraceProcessor]) -> Result:
        if not self.persistent or self._levels() <= 0:  # at max depth there is no REPL to keep
            return self._rlm.run(question, prompt, processors=processors)
        if self._session is None:
            self._session = self._rlm.session(prompt)
        else:
            self._session.add_context(prompt)
        result: Result = self._session.ask(question, processors=processors)
        return result

    def _completion(self, prompt: Any, result: Result, elapsed: float) -> RLMChatCompletion:
        metadata = None
        if self.logger is not None and hasattr(self.logger, "get_trajectory"):
            metadata = self.logger.get_trajectory()
        return RLMChatCompletion(
            root_model=self._root.model_name,
            prompt=prompt,
            response=result.answer,
            usage_summary=UsageSummary.from_usage(result.usage_by_model, self._names),
            execution_time=elapsed,
            metadata=metadata,
            result=result,
        )

    def close(self) -> None:
        """End the persistent session (its REPL), if one is open."""
        if self._session is not None:
            session, self._session = self._session, None
            session.close()

    def __enter__(self) -> RLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _last_error(result: Result) -> str | None:
    for span in reversed(result.spans):
        if getattr(span, "kind", None) == "cell" and getattr(span, "status", "") == "error":
            return str(span.attrs.get("traceback") or span.error)
    return None


def _raise_for_limit(result: Result, rlm: RLM) -> None:
    """rlms raises when its timeout, token, budget or error limit stops a run (and returns
    when iterations run out); recursa returns a partial result. Raise as rlms does."""
    partial = result.answer or None
    stop = result.stop_reason
    if stop is StopReason.TIMEOUT and rlm.max_timeout is not None:
        raise TimeoutExceededError(result.wall_time_s, rlm.max_timeout, partial, result=result)
    if stop is StopReason.MAX_TOKENS and rlm.max_tokens is not None:
        raise TokenLimitExceededError(
            result.usage.total_tokens, rlm.max_tokens, partial, result=result
        )
    if stop is StopReason.MAX_COST and rlm.max_budget is not None:
        raise BudgetExceededError(result.usage.cost_usd, rlm.max_budget, result=result)
    if stop is StopReason.MAX_CONSECUTIVE_ERRORS and rlm.max_errors is not None:
        raise ErrorThresholdExceededError(
            rlm.max_errors, rlm.max_errors, _last_error(result), partial, result=result
        )
    if stop is StopReason.CANCELLED:
        raise CancellationError(partial, result=result)
