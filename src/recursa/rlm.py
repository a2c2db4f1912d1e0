"""``RLM``: the public entry point. An async core (:meth:`RLM.arun`) with a thin sync facade."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import secrets
import sqlite3
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from recursa.cache import CallCache
from recursa.config import RunConfig
from recursa.context import Context, ContextSource, load_context
from recursa.engine import Engine, SandboxFactory, Tree
from recursa.errors import ConfigError, RecursaError
from recursa.gate import LMGate
from recursa.journal import Journal, Replay, trace_writer
from recursa.limits import Budget, Limits, SandboxSlots
from recursa.lm.base import LM, ProviderOptions
from recursa.lm.registry import DEFAULT_MODEL, default_model_spec, parse_model, resolve_model
from recursa.lm.wrappers import JournalSink, ProviderLimits, compose
from recursa.pricing import PriceTable
from recursa.prompts import PROFILES, PromptProfile, read_prompt
from recursa.sampling import Sampling
from recursa.sandbox import sandbox_factory
from recursa.sandbox.base import SandboxConfig
from recursa.session import AsyncSession, Session, open_session, resume_session
from recursa.strategy import Strategy, answer_directly, plan
from recursa.tools import ToolSet, ToolSpec
from recursa.trace.spans import Span, TraceProcessor, Tracer
from recursa.types import Result

if TYPE_CHECKING:
    from recursa.batch.ratelimit import RateLimiter

__all__ = ["DEFAULT_MODEL", "RLM", "default_model_spec", "new_run_id"]

T = TypeVar("T")


def _clip(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _name_of(model: str | LM | None) -> str | None:
    return model if isinstance(model, str) or model is None else model.name


def new_run_id() -> str:
    """Sortable and unique enough: ``20261123-142501-9f3a1c``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, even when a loop is already running
    (Jupyter): then it runs on a fresh loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="recursa") as pool:
        return pool.submit(asyncio.run, coro).result()


class _InstanceOrClassMethod:
    """A method that also works on the class: ``RLM.resume(run_id)`` builds the RLM from the
    run's journal (:meth:`RLM.from_journal`) first; ``rlm.resume(run_id)`` uses ``rlm``."""

    def __init__(self, method: Any) -> None:
        self._method = method
        functools.update_wrapper(cast(Any, self), method)

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is not None:
            return self._method.__get__(obj, owner)
        method = self._method

        @functools.wraps(method)
        def on_class(
            run_id: str, *args: Any, runs_root: str | Path | None = None, **kw: Any
        ) -> Any:
            own = {k: kw.pop(k) for k in ("trace", "processors", "question") if k in kw}
            rlm = owner.from_journal(run_id, runs_root=runs_root, **kw)  # type: ignore[union-attr]
            return method(rlm, run_id, *args, **own)

        return on_class


def _check_tools(config: RunConfig, objects: Mapping[str, Any]) -> None:
    """A :class:`ConfigError` when a run used tools (journaled by name only) that ``objects``
    do not give again: without them its prompts, and so its replay, would differ."""
    given = set(ToolSet.of(objects.get("tools")))
    subs = objects.get("sub_tools", objects.get("tools"))
    missing = [n for n in config.tools if n not in given]
    if config.sub_tools is not None:
        missing += [n for n in config.sub_tools if n not in set(ToolSet.of(subs))]
    if missing:
        raise ConfigError(
            f"the run used the tools {', '.join(sorted(set(missing)))}: pass them again "
            "(tools=..., sub_tools=...; --tools/--sub-tools module:attr on the command line)"
        )


def _noted(result: Result, strategy: str, reason: str) -> Result:
    """``result`` with the run's strategy and the reason it was chosen."""
    return dataclasses.replace(result, strategy=strategy, strategy_reason=reason)


class _StrategyNote:
    """Writes the chosen strategy into the root ``run`` span when it starts."""

    def __init__(self, strategy: str, reason: str) -> None:
        self.strategy, self.reason = strategy, reason

    def on_start(self, span: Span) -> None:
        if span.kind == "run" and span.parent_id is None:
            span.attrs.setdefault("strategy", self.strategy)
            span.attrs.setdefault("strategy_reason", self.reason)

    def on_end(self, span: Span) -> None:
        return None


class RLM:
    """A Recursive Language Model: answers questions over contexts far larger than a prompt.

    Args:
        model: root model, as ``provider:model`` or an :class:`~recursa.lm.base.LM`. Default:
            ``RECURSA_MODEL``, else the embedded local model.
        sub_model: model for ``llm_query`` and child RLMs (default: the root model).
        limits: bounds for the run (iterations, depth, calls, tokens, cost, time...).
        base_url, api_key: passed to the providers that take them (else their env variables).
        sandbox: isolation tier for model code: ``"process"`` (default: a worker process with
            seccomp and Landlock on Linux), ``"wasm"`` (Pyodide under Deno, extra ``wasm``) or
            ``"docker"``. ``recursa doctor`` shows what each protects on this machine.
        sandbox_config: resource limits for the sandbox.
        trusted: run model code inside this process, with no isolation. Only for code you trust.
        prompt_profile: ``"standard"``, ``"strict"``, a :class:`PromptProfile`, or ``None`` to
            choose from the root model's name.
        system_prompt: a system prompt of your own, as text or a ``Path`` to a UTF-8 file
            (``None``: the profile's). It replaces the profile's system text for the root and
            child RLMs; the profile's turn messages and rules stay. It may use the placeholders
            ``${context_hint}``, ``${subcall_doc}``, ``${subcall_method}``,
            ``${subcall_example}`` and ``${tools_doc}`` (see :mod:`recursa.prompts`); others
            are a ConfigError.
        prologue: text (or a ``Path`` to a file) put before the question in the first user
            turn of the top-level RLM: standing instructions or tips for the task.
        prices: the price table (default: built-in list prices).
        temperature, max_output_tokens, top_p, reasoning_effort, provider_options: sampling
            for both roles (root turns, and sub-calls with child RLMs). ``provider_options``
            is JSON merged into each request body (``{"top_k": 20}``); ``reasoning_effort`` is
            one of none, minimal, low, medium, high (see :mod:`recursa.sampling`).
        root_sampling, sub_sampling: one role's sampling, a dict of those five keys or a
            :class:`~recursa.sampling.Sampling` (``sub_sampling={"temperature": 0.7}``); its
            values win over the shorthand for both roles.
        sub_calls: allow ``llm_query``/``rlm_query`` (``False``: the REPL alone).
        models: extra models ``llm_query(prompt, model=...)`` may pick by name.
        processors: trace processors that see every span of every run.
        call_timeout_s, max_retries: per-call HTTP timeout and retry count.
        journal: record each run under ``runs_root`` so it can be resumed (default on).
        cache: answer repeated deterministic requests from a shared call cache: ``True`` for
            the default file in the cache folder, a path, or a :class:`CallCache`.
        runs_root: where run folders go (default: the data folder, see :mod:`recursa.paths`).
        strategy: ``"rlm"`` (default: the REPL loop), ``"direct"`` (one plain call to the root
            model with the whole context in the prompt, cut in the middle if the model's window
            is too small) or ``"auto"`` (direct when the context fits the root model's declared
            window with room to spare, else rlm); see :mod:`recursa.strategy`.
        compaction: when the root conversation nears the model's window, replace its older
            turns with a summary and keep the whole transcript in the REPL as
            ``history_transcript`` (see :mod:`recursa.compaction`). ``None`` (default): on when
            the window is known; ``True``: on, with a warning if no window is known; ``False``:
            off.
        compaction_threshold: the fraction of the window at which it compacts (default 0.85).
        root_window: the root model's context window in tokens, for models that declare none.
        tools: functions the model's code may call, run on the host with this process's rights
            (the sandbox has no network or files): ``{"search": search}``, a list of functions,
            or :class:`~recursa.tools.Tool` objects. Each is listed in the system prompt with
            its signature and docstring; arguments and results are JSON (see
            :mod:`recursa.tools`, ``Limits.max_tool_calls`` and ``Limits.tool_timeout_s``).
        sub_tools: the tools of child RLMs (``rlm_query``) instead of ``tools`` (``None``: the
            same as the root; ``{}``: none), so a root can hand tool-heavy work to children.
        rate_limiter: a limiter every real LM call of every run asks first (requests and tokens
            per minute, a global pause on 429); :func:`recursa.batch.batch` sets one.
    """

    def __init__(
        self,
        model: str | LM | None = None,
        sub_model: str | LM | None = None,
        *,
        limits: Limits | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        sandbox: str | SandboxFactory = "process",
        sandbox_config: SandboxConfig | None = None,
        trusted: bool = False,
        prompt_profile: str | PromptProfile | None = None,
        system_prompt: str | Path | None = None,
        prologue: str | Path | None = None,
        prices: PriceTable | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        top_p: float | None = None,
        reasoning_effort: str | None = None,
        provider_options: Mapping[str, Any] | None = None,
        root_sampling: Sampling | Mapping[str, Any] | None = None,
        sub_sampling: Sampling | Mapping[str, Any] | None = None,
        sub_calls: bool = True,
        models: Iterable[str | LM] = (),
        tools: ToolSpec | None = None,
        sub_tools: ToolSpec | None = None,
        processors: Sequence[TraceProcessor] = (),
        call_timeout_s: float | None = None,
        max_retries: int | None = None,
        journal: bool = True,
        cache: bool | str | Path | CallCache = False,
        runs_root: str | Path | None = None,
        strategy: Strategy | str = "rlm",
        compaction: bool | None = None,
        compaction_threshold: float = 0.85,
        root_window: int | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        models = tuple(models)
        self.tools = ToolSet.of(tools)
        self.sub_tools = None if sub_tools is None else ToolSet.of(sub_tools)
        # Everything that is data goes into one frozen RunConfig (journaled with each run);
        # objects (LM instances, a sandbox factory, a custom profile) are kept beside it.
        self.config = RunConfig(
            model=_name_of(model),
            sub_model=_name_of(sub_model),
            models=tuple(n for m in models if (n := _name_of(m)) is not None),
            base_url=base_url,
            sandbox=sandbox if isinstance(sandbox, str) else None,
            prompt_profile=prompt_profile
            if isinstance(prompt_profile, str) or prompt_profile is None
            else prompt_profile.name,
            system_prompt=None
            if system_prompt is None
            else read_prompt(system_prompt, what="system prompt"),
            prologue=None if prologue is None else read_prompt(prologue, what="prologue"),
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            top_p=top_p,
            reasoning_effort=reasoning_effort,
            provider_options=provider_options or {},
            root_sampling=Sampling.of(root_sampling, where="root_sampling"),
            sub_sampling=Sampling.of(sub_sampling, where="sub_sampling"),
            sub_calls=sub_calls,
            limits=limits or Limits(),
            call_timeout_s=call_timeout_s,
            max_retries=max_retries,
            journal=journal,
            strategy=strategy,
            compaction=compaction,
            compaction_threshold=compaction_threshold,
            root_window=root_window,
            tools=tuple(self.tools),
            sub_tools=None if self.sub_tools is None else tuple(self.sub_tools),
        )
        options = ProviderOptions(
            base_url=base_url, api_key=api_key, timeout_s=call_timeout_s, max_retries=max_retries
        )
        self._owned: list[LM] = []
        root_spec = model if model is not None else default_model_spec()
        # base_url and api_key belong to the root model's provider: a sub model of another
        # provider must not send its own key to that URL (nor that key to its own server).
        self._home = parse_model(root_spec)[0] if isinstance(root_spec, str) else None
        self.root_lm = self._resolve(root_spec, options)
        self.sub_lm = self.root_lm if sub_model is None else self._resolve(sub_model, options)
        extra = [self._resolve(m, options) for m in models]
        self.models: dict[str, LM] = {}
        for lm in (self.root_lm, self.sub_lm, *extra):
            self.models[lm.name] = lm
            self.models.setdefault(lm.name.partition(":")[2] or lm.name, lm)
        self.limits = self.config.limits
        if isinstance(prompt_profile, str):
            if prompt_profile not in PROFILES:
                raise ConfigError(
                    f"unknown prompt profile {prompt_profile!r}; choose one of: "
                    f"{', '.join(PROFILES)}"
                )
            prompt_profile = PROFILES[prompt_profile]
        self.profile: PromptProfile | None = prompt_profile
        self.sandbox_factory: SandboxFactory = (
            sandbox if callable(sandbox) else sandbox_factory(sandbox, trusted=trusted)
        )
        self.sandbox_config = sandbox_config or SandboxConfig()
        if self.tools:  # a sandbox built from it (a session's) offers the root's tools
            functions = self.tools.table(self.sandbox_config.functions)
            self.sandbox_config = dataclasses.replace(self.sandbox_config, functions=functions)
        self.prices = prices or PriceTable()
        self.processors = list(processors)
        self.journal = journal
        self.runs_root = Path(runs_root) if runs_root else None
        if cache is True:
            cache = CallCache()
        elif isinstance(cache, (str, Path)):
            cache = CallCache(Path(cache))
        self.cache: CallCache | None = cache or None
        # A batch's limiter, shared by every run of the batch (recursa.batch.ratelimit).
        self.rate_limiter = rate_limiter

    def _resolve(self, spec: str | LM, options: ProviderOptions) -> LM:
        if isinstance(spec, str) and self._home is not None and parse_model(spec)[0] != self._home:
            options = dataclasses.replace(options, base_url=None, api_key=None)
        lm = resolve_model(spec, options)
        if isinstance(spec, str):
            self._owned.append(lm)
        return lm

    async def arun(
        self,
        question: str,
        context: ContextSource | Context | None = None,
        *more: ContextSource,
        trace: str | Path | None = None,
        run_id: str | None = None,
        processors: Sequence[TraceProcessor] = (),
    ) -> Result:
        """Answer ``question`` over ``context`` (several sources make a list context).

        With journaling on (the default) the run is recorded under ``runs_root`` (default:
        the data folder) as it happens, and its trace is written there unless ``trace`` names
        another file; :meth:`resume` continues it if it is interrupted.
        """
        if not question or not question.strip():
            raise ConfigError("the question is empty: say what you want to know")
        if context is None:
            raise ConfigError("no context given: pass text, a Path to a file or a folder")
        ctx = context if isinstance(context, Context) and not more else load_context(context, *more)
        run_id = run_id or new_run_id()
        journal = None
        if self.journal:
            journal = Journal.create(
                run_id,
                question=question,
                context=ctx,
                config=self.config.to_dict(),
                root=self.runs_root,
            )
        return await self._execute(question, ctx, run_id, journal, None, trace, processors)

    @_InstanceOrClassMethod
    async def aresume(
        self,
        run_id: str,
        *,
        trace: str | Path | None = None,
        processors: Sequence[TraceProcessor] = (),
        question: str | None = None,
    ) -> Result:
        """Continue run ``run_id`` from its journal: journaled responses are replayed, the
        REPL is rebuilt by re-running the journaled cells, and the run goes on from there.

        Works on the class too (``await RLM.aresume(run_id)``): the RLM is then built with the
        run's own settings. ``question``, if given, must be the run's question. Raises
        :class:`ConfigError` while another live process is running the same run."""
        journal = Journal.open(run_id, root=self.runs_root)
        try:
            if journal.meta("session") is not None:
                raise ConfigError(
                    f"{run_id} is a session: continue it with `recursa chat --resume {run_id}` "
                    "or recursa.session.resume_session()"
                )
            journaled = str(journal.meta("question"))
            asked = " ".join((question or "").split())
            if asked and asked != " ".join(journaled.split()):
                raise ConfigError(
                    f"run {run_id} asked {_clip(journaled)!r}, not {_clip(asked)!r}: "
                    "resume it without a question, or start a new run"
                )
            journal.claim()
            ctx = journal.context()
            replay = journal.replay()
        except BaseException:
            journal.close()
            raise
        question = journaled
        return await self._execute(question, ctx, run_id, journal, replay, trace, processors)

    async def _execute(
        self,
        question: str,
        ctx: Context,
        run_id: str,
        journal: Journal | None,
        replay: Replay | None,
        trace: str | Path | None,
        processors: Sequence[TraceProcessor],
    ) -> Result:
        strategy, reason = plan(
            self.config.strategy,
            question,
            ctx,
            self.root_lm,
            self.config.root_settings.max_output_tokens,
            window=self.config.root_window,
        )
        # An RLM's root span is the engine's: the note adds the choice to it before any other
        # processor (progress, trace writer) sees it. A direct run's span carries it already.
        note: list[TraceProcessor] = [_StrategyNote(strategy, reason)] if strategy == "rlm" else []
        writer = trace_writer(trace, journal, run_id)
        tracer = Tracer([*note, *self.processors, *processors], run_id=run_id)
        if writer is not None:
            tracer.add_processor(writer)
        tree = self._tree(run_id, tracer, journal, replay)
        status, summary = "interrupted", {}
        try:
            try:
                if strategy == "direct":
                    result = await answer_directly(tree, question, ctx, reason=reason)
                else:
                    result = _noted(
                        await Engine(tree, depth=0, lm=self.root_lm).run(question, ctx),
                        strategy,
                        reason,
                    )
            except RecursaError as exc:
                if exc.result is not None:
                    exc.result = _noted(exc.result, strategy, reason)
                raise
            status = "final" if not result.partial else "stopped"
            summary = result.to_dict()
        except RecursaError as exc:
            partial = exc.result
            status, summary = "failed", (partial.to_dict() if partial else {"error": str(exc)})
            raise
        finally:
            if writer is not None:
                writer.close()
            # The journal's last write and its checkpoint (milliseconds of disk work) run in a
            # thread while the HTTP connections close; both are done before the run returns.
            closing = (
                asyncio.ensure_future(asyncio.to_thread(_close_journal, journal, status, summary))
                if journal is not None
                else None
            )
            try:
                await self.aclose()
            finally:
                if closing is not None:
                    await asyncio.shield(closing)
        if writer is not None:
            object.__setattr__(result, "trace_path", writer.path)
        return result

    def _tree(
        self,
        run_id: str,
        tracer: Tracer,
        journal: Journal | None,
        replay: Replay | None,
    ) -> Tree:
        """What one run's engines share: a fresh budget and gate over this RLM's models, the
        journal's writer and the responses to replay."""
        warnings: list[str] = []
        budget = Budget(self.limits, self.prices, warn=warnings.append)
        sink = JournalSink(journal, warnings.append) if journal is not None else None
        # Per provider, shared with the process's other runs; root turns before sub-calls.
        limit = ProviderLimits(self.limits.max_concurrency)

        def wrap(lm: LM) -> LM:
            return compose(
                lm,
                limit=limit,
                cache=self.cache,
                prices=self.prices,
                journal=sink,
                replay=replay,
                rate_limiter=self.rate_limiter,
            )

        return Tree(
            root_lm=self.root_lm,
            sub_lm=self.sub_lm,
            models=self.models,
            config=self.config,
            sandbox_factory=self.sandbox_factory,
            sandbox_config=self.sandbox_config,
            profile=self.profile,
            budget=budget,
            tracer=tracer,
            gate=LMGate(budget, tracer, wrap),
            run_id=run_id,
            slots=SandboxSlots.for_limits(self.limits),
            journal=sink,
            warnings=warnings,
            tools=self.tools,
            sub_tools=self.sub_tools,
            replay=replay,
        )

    @classmethod
    def from_journal(
        cls, run_id: str, *, runs_root: str | Path | None = None, **overrides: Any
    ) -> RLM:
        """An RLM configured as run ``run_id`` was (models by name, limits, sandbox...), for
        resuming it from another process. Keyword arguments override the stored settings."""
        journal = Journal.open(run_id, root=Path(runs_root) if runs_root else None)
        try:
            config = RunConfig.from_dict(journal.meta("config") or {})
        finally:
            journal.close()
        return cls.from_config(config, runs_root=runs_root, **overrides)

    @classmethod
    def from_config(cls, config: RunConfig, **objects: Any) -> RLM:
        """An RLM built from ``config``; keyword arguments (objects such as ``api_key``,
        ``prices``, ``cache``, ``processors``, or any setting) override or complete it."""
        kwargs: dict[str, Any] = {
            "limits": config.limits,
            "base_url": config.base_url,
            "prompt_profile": config.prompt_profile,
            "system_prompt": config.system_prompt,
            "prologue": config.prologue,
            "temperature": config.temperature,
            "max_output_tokens": config.max_output_tokens,
            "top_p": config.top_p,
            "reasoning_effort": config.reasoning_effort,
            "provider_options": config.provider_options,
            "root_sampling": config.root_sampling,
            "sub_sampling": config.sub_sampling,
            "sub_calls": config.sub_calls,
            "models": config.models,
            "call_timeout_s": config.call_timeout_s,
            "max_retries": config.max_retries,
            "journal": config.journal,
            "strategy": config.strategy,
            "compaction": config.compaction,
            "compaction_threshold": config.compaction_threshold,
            "root_window": config.root_window,
        }
        if config.sandbox is not None:
            kwargs["sandbox"] = config.sandbox
        _check_tools(config, objects)
        kwargs.update(objects)
        model = kwargs.pop("model", config.model)
        sub_model = kwargs.pop("sub_model", config.sub_model)
        return cls(model, sub_model, **kwargs)

    def run(
        self,
        question: str,
        context: ContextSource | Context | None = None,
        *more: ContextSource,
        trace: str | Path | None = None,
        run_id: str | None = None,
        processors: Sequence[TraceProcessor] = (),
    ) -> Result:
        """Blocking :meth:`arun`."""
        return _run_sync(
            self.arun(question, context, *more, trace=trace, run_id=run_id, processors=processors)
        )

    @_InstanceOrClassMethod
    def resume(
        self,
        run_id: str,
        *,
        trace: str | Path | None = None,
        processors: Sequence[TraceProcessor] = (),
        question: str | None = None,
    ) -> Result:
        """Blocking :meth:`aresume`; ``RLM.resume(run_id)`` on the class works too."""
        resumed = self.aresume(run_id, trace=trace, processors=processors, question=question)
        return cast(Result, _run_sync(resumed))

    def session(
        self,
        *contexts: ContextSource | Context,
        session_id: str | None = None,
        trace: str | Path | None = None,
        processors: Sequence[TraceProcessor] = (),
    ) -> Session:
        """A session: questions one after another in ONE REPL (variables and earlier answers
        stay; see :mod:`recursa.session`). Each source is one context: ``context``, then
        ``context_1``... Use it as a context manager, or call ``close()``."""

        async def start() -> AsyncSession:
            return self.asession(
                *contexts, session_id=session_id, trace=trace, processors=processors
            )

        return Session(start())

    def asession(
        self,
        *contexts: ContextSource | Context,
        session_id: str | None = None,
        trace: str | Path | None = None,
        processors: Sequence[TraceProcessor] = (),
    ) -> AsyncSession:
        """:meth:`session` for async code: ``async with rlm.asession(ctx) as s: await
        s.ask(q)``. Use it from one event loop."""
        return open_session(
            self, contexts, session_id=session_id, trace=trace, processors=processors
        )

    def resume_session(
        self,
        session_id: str,
        *,
        trace: str | Path | None = None,
        processors: Sequence[TraceProcessor] = (),
    ) -> Session:
        """Rebuild a killed session from its journal with this RLM (see
        :func:`recursa.session.resume_session`, which also works without one)."""
        return resume_session(session_id, rlm=self, trace=trace, processors=processors)

    async def aclose(self) -> None:
        """Close the HTTP clients of the models this RLM created (they reopen on next use)."""
        for lm in self._owned:
            await lm.aclose()


def _close_journal(journal: Journal, status: str, summary: dict[str, Any]) -> None:
    """Record how the run ended (best effort) and close the journal."""
    try:
        with contextlib.suppress(sqlite3.Error):
            journal.finish(status, summary)
    finally:
        journal.close()
