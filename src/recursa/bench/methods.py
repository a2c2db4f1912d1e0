"""The methods a benchmark compares, all run on the same tasks with the same models.

- ``direct``: the whole context in one prompt, cut in the middle to the model's window when it
  is too long (the row says so);
- ``rag``: BM25 (``bm25s``) picks the best chunks, then one call;
- ``summarize``: a note per chunk on what matters for the question, notes compacted until they
  fit, then one answer;
- ``rlm-nosub``: the RLM with its REPL only (no sub-calls);
- ``rlm``: the RLM, children one level deep; ``rlm-depth2``: two levels;
- ``auto``: the RLM with ``strategy="auto"``: one direct call when the context fits the root
  model's window with room to spare, else ``rlm`` (the row's notes say which, and why).

The baselines send their calls through the same :class:`~recursa.gate.LMGate` and
:class:`~recursa.limits.Budget` the RLM uses, so tokens, cost, cache hits and traces are
counted the same way. Every method writes a trace whose root ``run`` span carries the task's
``score`` (``recursa trace export --min-score`` uses it).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recursa.bench.tasks import Task
from recursa.cache import CallCache
from recursa.errors import ConfigError
from recursa.limits import Limits
from recursa.lm.base import LM, BaseLM, ProviderOptions
from recursa.lm.registry import parse_model, resolve_model
from recursa.pricing import PriceTable
from recursa.trace.spans import Span
from recursa.types import Completion, LMSettings, Message, Usage

__all__ = [
    "DEFAULT_WINDOW",
    "METHODS",
    "MethodEnv",
    "Outcome",
    "ScoreProcessor",
    "build_env",
    "model_window",
    "run_method",
]

# The window assumed for a model whose backend does not say (most API models hold more).
DEFAULT_WINDOW = 128_000

ScoreFn = Callable[[str], float]


@dataclass
class Outcome:
    """What one method produced for one task."""

    answer: str
    stop_reason: str
    usage: Usage
    wall_time_s: float
    iterations: int = 0
    cache_hits: int = 0
    saved_usd: float = 0.0
    trace_path: Path | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodEnv:
    """Models, settings and per-run state shared by every task of a bench run."""

    root_lm: LM  # the RLM's root model
    sub_lm: LM  # llm_query and child RLMs
    plain_lm: LM  # the baselines' model: the root model, set up for plain answers
    window_tokens: int
    window_source: str
    limits: Limits = field(default_factory=Limits)
    prices: PriceTable = field(default_factory=PriceTable)
    cache: CallCache | None = None
    temperature: float = 0.0
    max_output_tokens: int | None = None
    rag_tokens: int = 2048
    chunk_tokens: int = 256
    sandbox: str = "process"
    trace_dir: Path = Path("traces")
    # Per-window state that lets one window's questions share work (a prompt prefix, an index).
    kept_chars: dict[str, int] = field(default_factory=dict)
    # context sha256 -> (its chunks, a bm25s.BM25 index over them)
    indexes: dict[str, tuple[list[str], Any]] = field(default_factory=dict)
    owned: list[LM] = field(default_factory=list)

    async def aclose(self) -> None:
        for lm in self.owned:
            await lm.aclose()
        if self.cache is not None:
            self.cache.close()


def model_window(
    lm: LM, override: int | None = None, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """The model's context window in tokens, and where the figure comes from."""
    if override:
        return override, "--window"
    window = lm.capabilities.context_window
    if window is not None and window > 0:
        return window, "backend"
    if lm.name.startswith("local:"):
        # The local backend declares its window (n_ctx, which local_from_env reads from
        # RECURSA_LOCAL_CTX); this covers a "local:" model that declares none (a test double,
        # a wrapper): its window is the backend's default unless RECURSA_LOCAL_CTX says.
        from recursa.lm.local import DEFAULT_N_CTX

        raw = (os.environ if env is None else env).get("RECURSA_LOCAL_CTX", "").strip()
        return (int(raw) if raw.isdigit() else DEFAULT_N_CTX), "local backend n_ctx"
    return DEFAULT_WINDOW, "assumed"


def _plain_options(spec: str, options: ProviderOptions) -> ProviderOptions:
    """Options for the baselines' model. The local backend starts every conversation turn with a
    code block (right for an RLM root, wrong for a plain answer), so it is turned off there."""
    if parse_model(spec)[0] == "local":
        return dataclasses.replace(options, extra={**options.extra, "code_turns": False})
    return options


def build_env(
    model: str | LM,
    sub_model: str | LM | None = None,
    *,
    window: int | None = None,
    options: ProviderOptions | None = None,
    **settings: Any,
) -> MethodEnv:
    """Resolve the models once for a whole run; ``settings`` fill :class:`MethodEnv`."""
    options = options or ProviderOptions()
    owned: list[LM] = []

    def resolve(spec: str | LM, opts: ProviderOptions) -> LM:
        lm = resolve_model(spec, opts)
        if isinstance(spec, str):
            owned.append(lm)
        return lm

    root = resolve(model, options)
    sub = root if sub_model is None else resolve(sub_model, options)
    plain = resolve(model, _plain_options(model, options)) if isinstance(model, str) else root
    tokens, source = model_window(plain, window)
    return MethodEnv(root, sub, plain, tokens, source, owned=owned, **settings)


class ScoreProcessor:
    """Writes the task's score into the root ``run`` span before the trace writer stores it
    (an RLM's processors see a span before its JSONL writer does)."""

    def __init__(self, score: ScoreFn) -> None:
        self._score = score

    def on_start(self, span: Span) -> None:
        return None

    def on_end(self, span: Span) -> None:
        if span.kind == "run" and span.parent_id is None:
            try:
                span.attrs["score"] = self._score(str(span.attrs.get("answer") or ""))
            except Exception:  # a processor must never break the run it watches
                span.attrs["score"] = None


def trace_path(env: MethodEnv, task: Task, method: str) -> Path:
    return env.trace_dir / task.benchmark / f"{task.task_id}.{method}.jsonl"


# ---- the RLM methods -------------------------------------------------------------------------


class _Windowed(BaseLM):
    """``lm`` declaring the window ``--window`` gave, for ``auto`` to choose with (calls go to
    ``lm``; closing is left to the env that owns it)."""

    def __init__(self, lm: LM, window: int) -> None:
        self.lm = lm
        self.name = lm.name
        self.capabilities = dataclasses.replace(lm.capabilities, context_window=window)

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        return await self.lm.complete(messages, settings)


def _auto_root(env: MethodEnv) -> LM:
    """The root model for ``auto``: ``env.root_lm``, declaring the window ``--window`` gave when
    the backend declares none (an assumed window is not enough: ``auto`` then takes ``rlm``)."""
    if env.window_source == "--window" and env.root_lm.capabilities.context_window is None:
        return _Windowed(env.root_lm, env.window_tokens)
    return env.root_lm


async def _rlm(
    task: Task,
    env: MethodEnv,
    score: ScoreFn,
    *,
    depth: int,
    sub: bool,
    strategy: str = "rlm",
) -> Outcome:
    from recursa.rlm import RLM

    name = "auto" if strategy == "auto" else _rlm_name(depth, sub)
    rlm = RLM(
        _auto_root(env) if strategy == "auto" else env.root_lm,
        env.sub_lm,
        limits=dataclasses.replace(env.limits, max_depth=depth),
        sandbox=env.sandbox,
        prices=env.prices,
        temperature=env.temperature,
        max_output_tokens=env.max_output_tokens,
        sub_calls=sub,
        journal=False,  # bench resumes whole rows; a per-task journal would only cost time
        cache=env.cache or False,
        # The local model's direct answer is not started as a code block: the direct call
        # says expect_code=False (recursa.strategy), which the local backend honours.
        strategy=strategy,
    )
    started = time.monotonic()
    result = await rlm.arun(
        task.question,
        task.context,
        trace=trace_path(env, task, name),
        processors=[ScoreProcessor(score)],
    )
    notes: dict[str, Any] = {}
    if strategy == "auto":
        notes.update(strategy=result.strategy, strategy_reason=result.strategy_reason)
    if result.partial and result.detail:
        notes["detail"] = result.detail
    return Outcome(
        answer=result.answer,
        stop_reason=result.stop_reason.value,
        usage=result.usage,
        wall_time_s=time.monotonic() - started,
        iterations=result.iterations,
        cache_hits=result.cache_hits,
        saved_usd=result.saved_usd,
        trace_path=result.trace_path,
        notes=notes,
    )


def _rlm_name(depth: int, sub: bool) -> str:
    return "rlm-nosub" if not sub else ("rlm" if depth == 1 else f"rlm-depth{depth}")


_MethodFn = Callable[[Task, MethodEnv, ScoreFn], Awaitable[Outcome]]


def _rlm_method(depth: int, sub: bool) -> _MethodFn:
    async def method(task: Task, env: MethodEnv, score: ScoreFn) -> Outcome:
        return await _rlm(task, env, score, depth=depth, sub=sub)

    return method


async def _auto(task: Task, env: MethodEnv, score: ScoreFn) -> Outcome:
    """The RLM with ``strategy="auto"`` (sub-calls on, children one level deep, as ``rlm``)."""
    return await _rlm(task, env, score, depth=1, sub=True, strategy="auto")


def _baseline(name: str) -> _MethodFn:
    async def method(task: Task, env: MethodEnv, score: ScoreFn) -> Outcome:
        from recursa.bench import baselines

        run: _MethodFn = getattr(baselines, name)
        return await run(task, env, score)

    return method


METHODS: dict[str, _MethodFn] = {
    "direct": _baseline("direct"),
    "rag": _baseline("rag"),
    "summarize": _baseline("summarize"),
    "rlm-nosub": _rlm_method(1, False),
    "rlm": _rlm_method(1, True),
    "rlm-depth2": _rlm_method(2, True),
    "auto": _auto,
}


def parse_methods(spec: str) -> list[str]:
    names = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ConfigError(
            f"--methods: unknown method(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from: {', '.join(METHODS)}"
        )
    return list(dict.fromkeys(names))


async def run_method(method: str, task: Task, env: MethodEnv, score: ScoreFn) -> Outcome:
    """Run ``method`` on ``task``."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")
    return await METHODS[method](task, env, score)
