"""Sessions: questions one after another in ONE REPL.

``rlm.session(*contexts)`` starts one sandbox and loads the contexts into it once (``context``,
then ``context_1``, ``context_2``...). Each :meth:`Session.ask` is a run of its own (its own
budget, its own root conversation, its own ``run`` span) that uses that sandbox, so variables,
intermediate results and earlier answers stay: ``history`` in the REPL lists the earlier
questions and answers. The trace holds one ``session`` span with each question's run under it.

The journal covers sessions: one journal per session records every question, every LM response
and every cell, plus the contexts added on the way. :func:`resume_session` rebuilds a killed
session: it starts a sandbox, loads the contexts in the order they were added, and asks the
recorded questions again with every journaled response replayed (so the REPL is rebuilt by
re-running the model's cells and no paid call is repeated); a question that was cut off by the
kill is finished, with real calls from where the journal ends.

Everything that makes a root prompt (the question's number, how many earlier answers
``history`` holds, which contexts exist, whether the REPL was restarted) is recorded with the
question, so that a replayed prompt is byte for byte the prompt that was journaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from recursa.context import Context, ContextSource, load_context
from recursa.engine import Engine
from recursa.errors import ConfigError, RecursaError
from recursa.journal import Journal, Replay, trace_writer
from recursa.sandbox.base import CallHandler, CallRefused, Sandbox
from recursa.trace.spans import Span, TraceProcessor, Tracer
from recursa.types import Result, StopReason

if TYPE_CHECKING:
    from recursa.rlm import RLM

__all__ = ["AsyncSession", "Session", "Turn", "resume_session"]

T = TypeVar("T")

# Journal meta key holding the session's record (its questions, in order).
SESSION_KEY = "session"


@dataclass(frozen=True, slots=True)
class Turn:
    """One question of a session and what became of it."""

    index: int  # 1, 2, ... in the order asked (cancelled questions keep their number)
    question: str
    answer: str
    stop_reason: str  # a StopReason value, or "cancelled"
    result: Result | None = None  # None for a cancelled question

    @property
    def cancelled(self) -> bool:
        return self.stop_reason == "cancelled"


@dataclass(frozen=True, slots=True)
class _Asked:
    """What a question's root prompt was made of, as recorded (see the module's docstring)."""

    index: int
    question: str
    contexts: int  # contexts loaded when it was asked
    restarted: bool  # the REPL had been restarted (variables lost) just before it
    status: str = "running"  # running, final, stopped, failed, cancelled
    answer: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "question": self.question,
            "contexts": self.contexts,
            "restarted": self.restarted,
            "status": self.status,
            "answer": self.answer,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Asked:
        return cls(
            int(d["index"]),
            str(d["question"]),
            int(d["contexts"]),
            bool(d.get("restarted")),
            str(d.get("status", "running")),
            str(d.get("answer", "")),
        )


class _Relay:
    """The session sandbox's call handler: it forwards the REPL's calls (``llm_query``...) to
    the engine answering the current question; between questions there is none to serve."""

    def __init__(self) -> None:
        self.target: CallHandler | None = None

    async def __call__(self, fn: str, args: dict[str, Any]) -> Any:
        if self.target is None:
            raise CallRefused("no question is being answered: there is nothing to call for")
        return await self.target(fn, args)


def context_name(index: int) -> str:
    """The REPL name of a session's context number ``index`` (0: ``context``)."""
    return "context" if index == 0 else f"context_{index}"


def _session_note(asked: _Asked, contexts: Sequence[Context], answered: int) -> str:
    """What the root model is told, after the first context's metadata, about the session."""
    lines = [
        "",
        "",
        f"This is question {asked.index} of a session that keeps one REPL across questions.",
    ]
    if asked.restarted:
        lines.append(
            "The REPL was restarted before this question (an earlier question was cancelled "
            "or its worker died): variables from earlier questions are gone; the contexts "
            "and `history` are loaded again."
        )
    elif asked.index > 1:
        lines.append("Variables defined while answering earlier questions are still there.")
    lines.append(
        f"`history` is a list of the {answered} earlier answered question(s), each a dict with "
        '"question" and "answer".'
    )
    for i, ctx in enumerate(contexts[1 : asked.contexts], start=1):
        lines.append(
            f"`{context_name(i)}` is another context: a {ctx.python_type} of "
            f"{ctx.total_chars:,} characters ({', '.join(ctx.sources) or ctx.kind})."
        )
    return "\n".join(lines)


class AsyncSession:
    """A session on the caller's event loop (see the module's docstring). Use it from one
    event loop only; :class:`Session` is the blocking version for plain scripts.

    Build with :meth:`recursa.RLM.asession`; close with :meth:`aclose` or ``async with``.
    """

    def __init__(
        self,
        rlm: RLM,
        contexts: Sequence[Context],
        *,
        session_id: str,
        journal: Journal | None,
        trace: str | Path | None = None,
        processors: Sequence[TraceProcessor] = (),
        asked: Sequence[_Asked] = (),
    ) -> None:
        if not contexts:
            raise ConfigError("a session needs a context: pass text, a Path or a folder")
        self.rlm = rlm
        self.session_id = session_id
        self.contexts: list[Context] = list(contexts)
        self._journal = journal
        self._processors = list(processors)
        self._asked: list[_Asked] = list(asked)
        self.turns: list[Turn] = []
        self._relay = _Relay()
        self._sandbox: Sandbox | None = None
        self._loaded = 0  # contexts loaded into the sandbox so far
        self._restart_pending = False
        self._lock = asyncio.Lock()
        self._closed = False
        self._writer = trace_writer(trace, journal, session_id, meta={"session": session_id})
        self._tracer = self._new_tracer(())
        self._span: Span = self._tracer.start(
            "session", f"session {session_id}", None, session=session_id
        )

    # ---- the public surface --------------------------------------------------------------------
    @property
    def history(self) -> list[dict[str, str]]:
        """The answered questions, as the REPL's ``history`` holds them."""
        return [{"question": t.question, "answer": t.answer} for t in self.turns if not t.cancelled]

    @property
    def trace_path(self) -> Path | None:
        return self._writer.path if self._writer is not None else None

    async def ask(
        self,
        question: str,
        *,
        processors: Sequence[TraceProcessor] = (),
        run_id: str | None = None,
    ) -> Result:
        """Answer ``question`` in the session's REPL. Raises as :meth:`RLM.arun` does (a
        limit stops the run with a partial answer, unless ``raise_on_limit`` is set).
        ``run_id`` names this question's run in its result and spans (default: the
        session's id, under which it is journaled)."""
        if not question or not question.strip():
            raise ConfigError("the question is empty: say what you want to know")
        async with self._lock:
            self._check_open()
            await self._ensure_sandbox()
            asked = _Asked(
                index=len(self._asked) + 1,
                question=question,
                contexts=len(self.contexts),
                restarted=self._restart_pending,
            )
            self._asked.append(asked)
            self._record()
            return await self._answer(asked, None, processors, run_id)

    async def add_context(self, *sources: ContextSource) -> str:
        """Load one more context into the REPL (several sources: one list, as in
        :func:`~recursa.context.load_context`); returns its name there (``context_1``...)."""
        ctx = sources[0] if len(sources) == 1 and isinstance(sources[0], Context) else None
        ctx = ctx or load_context(*sources)
        async with self._lock:
            self._check_open()
            index = len(self.contexts)
            self.contexts.append(ctx)
            if self._journal is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._journal.add_context(index, ctx)
            if self._sandbox is not None:
                await self._load_pending()
        return context_name(index)

    async def aclose(self) -> None:
        """Stop the sandbox, write the end of the trace and close the journal (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._sandbox is not None:
                await asyncio.shield(self._sandbox.shutdown())
        finally:
            self._tracer.end(self._span, questions=len(self._asked))
            if self._writer is not None:
                self._writer.close()
            if self._journal is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._journal.finish("closed", {"questions": len(self._asked)})
                self._journal.close()
            await self.rlm.aclose()

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- one question --------------------------------------------------------------------------
    async def _answer(
        self,
        asked: _Asked,
        replay: Replay | None,
        processors: Sequence[TraceProcessor],
        run_id: str | None = None,
    ) -> Result:
        rlm = self.rlm
        assert self._sandbox is not None
        run_id = run_id or self.session_id
        tree = rlm._tree(run_id, self._new_tracer(processors, run_id), self._journal, replay)
        engine = Engine(
            tree, depth=0, lm=rlm.root_lm, parent_span=self._span, path=f"q{asked.index}"
        )
        answered = self.history
        engine.session_note = _session_note(asked, self.contexts, len(answered))
        self._relay.target = engine.calls
        result: Result | None = None
        status = "cancelled"
        try:
            await self._sandbox.set_var("history", answered)
            await self._sandbox.set_var("answer", {"content": "", "ready": False})
            self._restart_pending = False
            result = await engine.run(asked.question, self.contexts[0], sandbox=self._sandbox)
        except RecursaError as exc:
            result, status = exc.result, "failed"
            raise
        except BaseException:
            # Cancelled (Ctrl-C, a client gone): a cell cut off kills the worker; the next
            # question starts a fresh one and says so.
            self._restart_pending = True
            raise
        finally:
            self._relay.target = None
            self._settle(asked, result, status)
        if self._writer is not None:
            object.__setattr__(result, "trace_path", self._writer.path)
        return result

    def _settle(self, asked: _Asked, result: Result | None, status: str) -> None:
        """Record what became of ``asked`` (in the journal too): ``status`` says how it ended
        when there is no result (cancelled, or failed before a run began)."""
        answer, stop = "", status
        if result is not None:
            answer, stop = result.answer, result.stop_reason.value
            status = "final" if result.stop_reason is StopReason.FINAL else "stopped"
            if result.stop_reason is StopReason.CANCELLED:
                status = stop = "cancelled"
        i = self._asked.index(asked)
        self._asked[i] = dataclasses.replace(asked, status=status, answer=answer)
        self.turns.append(Turn(asked.index, asked.question, answer, stop, result))
        self._record()

    # ---- plumbing ------------------------------------------------------------------------------
    def _new_tracer(
        self, processors: Sequence[TraceProcessor], run_id: str | None = None
    ) -> Tracer:
        tracer = Tracer(
            [*self.rlm.processors, *self._processors, *processors],
            run_id=run_id or self.session_id,
        )
        if self._writer is not None:
            tracer.add_processor(self._writer)
        return tracer

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this session is closed: start a new one with rlm.session(...)")

    async def _ensure_sandbox(self, upto: int | None = None) -> None:
        """Start the session's sandbox on first use, or again after it died (loading the
        contexts, or the first ``upto`` of them)."""
        if self._sandbox is not None and self._sandbox.alive and not self._restart_pending:
            return
        if self._sandbox is not None:
            with contextlib.suppress(Exception):
                await self._sandbox.shutdown()
            self._restart_pending = True  # told to the model with the next question
        rlm = self.rlm
        self._sandbox = rlm.sandbox_factory(rlm.sandbox_config, self._relay)
        self._loaded = 0
        await self._sandbox.start()
        await self._load_pending(upto)

    async def _load_pending(self, upto: int | None = None) -> None:
        assert self._sandbox is not None
        upto = len(self.contexts) if upto is None else upto
        while self._loaded < upto:
            i = self._loaded
            await self._sandbox.load_context(self.contexts[i].value, name=context_name(i))
            self._loaded += 1

    def _record(self) -> None:
        if self._journal is None:
            return
        last = self._asked[-1].question if self._asked else ""
        with contextlib.suppress(sqlite3.Error):
            self._journal.set_meta(SESSION_KEY, {"asked": [a.to_dict() for a in self._asked]})
            self._journal.set_meta("question", f"[session, {len(self._asked)} asked] {last}")

    async def _replay_all(self, replay: Replay) -> Result | None:
        """Ask the recorded questions again with ``replay`` (see :func:`resume_session`); the
        result of a question the kill cut off, finished now, or None."""
        recorded, self._asked = self._asked, []
        finished: Result | None = None
        for asked in recorded:
            if asked.status == "cancelled":
                # Its cells were cut off: not replayed; its number stays taken.
                self._asked.append(asked)
                self.turns.append(Turn(asked.index, asked.question, "", "cancelled"))
                self._restart_pending = True
                continue
            await self._ensure_sandbox(asked.contexts)
            if asked.restarted and not self._restart_pending:
                await self._restart(asked.contexts)
            await self._load_pending(asked.contexts)
            self._asked.append(asked)
            try:
                result: Result | None = await self._answer(asked, replay, ())
            except RecursaError as exc:
                if exc.result is None:
                    raise
                result = exc.result
            if asked.status == "running":
                finished = result
        await self._load_pending()
        return finished

    async def _restart(self, upto: int) -> None:
        assert self._sandbox is not None
        await self._sandbox.shutdown()
        self._sandbox = None
        await self._ensure_sandbox(upto)


def _load_each(sources: Sequence[ContextSource | Context]) -> list[Context]:
    return [s if isinstance(s, Context) else load_context(s) for s in sources]


def open_session(
    rlm: RLM,
    sources: Sequence[ContextSource | Context],
    *,
    session_id: str | None = None,
    trace: str | Path | None = None,
    processors: Sequence[TraceProcessor] = (),
) -> AsyncSession:
    """A new :class:`AsyncSession` over ``sources`` (each one context: ``context``,
    ``context_1``...; load them yourself with :func:`~recursa.context.load_context` to set
    size limits), journaled when the RLM journals."""
    from recursa.rlm import new_run_id

    contexts = _load_each(sources)
    if not contexts:
        raise ConfigError("a session needs a context: pass text, a Path or a folder")
    session_id = session_id or new_run_id()
    journal = None
    if rlm.journal:
        journal = Journal.create(
            session_id,
            question="[session, 0 asked]",
            context=contexts[0],
            config=rlm.config.to_dict(),
            root=rlm.runs_root,
        )
        journal.set_meta(SESSION_KEY, {"asked": []})
        for i, ctx in enumerate(contexts[1:], start=1):
            journal.add_context(i, ctx)
    return AsyncSession(
        rlm,
        contexts,
        session_id=session_id,
        journal=journal,
        trace=trace,
        processors=processors,
    )


async def aresume_session(
    session_id: str,
    *,
    rlm: RLM | None = None,
    runs_root: str | Path | None = None,
    trace: str | Path | None = None,
    processors: Sequence[TraceProcessor] = (),
    **overrides: Any,
) -> tuple[AsyncSession, Result | None]:
    """Rebuild session ``session_id`` from its journal: the session, and the result of the
    question the interruption cut off (finished now), if one was."""
    from recursa.rlm import RLM

    root = Path(runs_root) if runs_root else (rlm.runs_root if rlm is not None else None)
    journal = Journal.open(session_id, root=root)
    try:
        record = journal.meta(SESSION_KEY)
        if not isinstance(record, dict):
            raise ConfigError(
                f"run {session_id} is not a session: continue it with "
                f"`recursa ask --resume {session_id}`"
            )
        if rlm is None:
            rlm = RLM.from_journal(session_id, runs_root=root, **overrides)
        journal.claim()
        contexts = [journal.context(), *journal.extra_contexts()]
        asked = [_Asked.from_dict(a) for a in record.get("asked", [])]
        replay = journal.replay()
    except BaseException:
        journal.close()
        raise
    session = AsyncSession(
        rlm,
        contexts,
        session_id=session_id,
        journal=journal,
        trace=trace,
        processors=processors,
        asked=asked,
    )
    try:
        async with session._lock:
            finished = await session._replay_all(replay)
    except BaseException:
        await session.aclose()
        raise
    return session, finished


class Session:
    """A blocking session for scripts (see the module's docstring): its sandbox and its
    calls live on a private event loop in a helper thread, so that one REPL outlives every
    :meth:`ask`. Build with :meth:`recursa.RLM.session`; close with :meth:`close` or ``with``.

    Ctrl-C during :meth:`ask` cancels that question only: the session stays usable (the REPL
    restarts if the cancelled code was still running).
    """

    def __init__(self, start: Coroutine[Any, Any, AsyncSession]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="recursa-session", daemon=True
        )
        self._thread.start()
        try:
            self._session = self._call(start)
        except BaseException:
            self._stop_loop()
            raise
        self.resumed: Result | None = None  # set by resume_session: the finished question

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def history(self) -> list[dict[str, str]]:
        return self._session.history

    @property
    def turns(self) -> list[Turn]:
        return self._session.turns

    @property
    def contexts(self) -> list[Context]:
        return self._session.contexts

    @property
    def trace_path(self) -> Path | None:
        return self._session.trace_path

    def ask(self, question: str, *, processors: Sequence[TraceProcessor] = ()) -> Result:
        """Answer ``question`` in the session's REPL (see :meth:`AsyncSession.ask`)."""
        return self._call(self._session.ask(question, processors=processors))

    def add_context(self, *sources: ContextSource) -> str:
        """Load one more context; returns its REPL name (``context_1``...)."""
        return self._call(self._session.add_context(*sources))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._session.aclose())
        finally:
            self._stop_loop()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise ConfigError("this session is closed: start a new one with rlm.session(...)")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            # Cancel the question on its loop and wait until it has cleaned up (the worker
            # killed if a cell ran), so the session is usable for the next one.
            self._loop.call_soon_threadsafe(future.cancel)
            with contextlib.suppress(BaseException):
                future.result(timeout=30)
            raise

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


def resume_session(
    session_id: str,
    *,
    rlm: RLM | None = None,
    runs_root: str | Path | None = None,
    trace: str | Path | None = None,
    processors: Sequence[TraceProcessor] = (),
    **overrides: Any,
) -> Session:
    """The blocking :func:`aresume_session`: the session, with the result of a question the
    interruption cut off (finished now) in ``session.resumed``."""
    resumed: list[Result | None] = []

    async def start() -> AsyncSession:
        session, finished = await aresume_session(
            session_id,
            rlm=rlm,
            runs_root=runs_root,
            trace=trace,
            processors=processors,
            **overrides,
        )
        resumed.append(finished)
        return session

    session = Session(start())
    session.resumed = resumed[0] if resumed else None
    return session
