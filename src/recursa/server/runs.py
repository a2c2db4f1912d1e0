"""Runs started by the servers: slots, tasks, progress queues, and what is kept on disk.

Every request gets its own :class:`~recursa.rlm.RLM` (so its own models, budget and sandbox
worker), run as its own asyncio task. The task, not the request, owns the run slot: a run that
is cancelled keeps its slot until its sandbox is shut down, so the cap on concurrent runs is
also a cap on live sandbox workers.

Stored runs live in ``<data dir>/server-runs/<run_id>/``: ``trace.jsonl`` (the JSONL trace, as
the run goes) and ``summary.json`` (written when the run ends, however it ends). Only the newest
``keep_runs`` are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recursa.context import Context
from recursa.errors import ConfigError, RecursaError, TraceError
from recursa.limits import Limits
from recursa.lm.base import LM
from recursa.lm.registry import resolve_model
from recursa.paths import private_dir, write_private
from recursa.rlm import RLM, new_run_id
from recursa.server.chat import scrub
from recursa.server.config import ModelChoice, ServerConfig
from recursa.server.errors import ModelNotFound, RunNotFound, ServerBusy
from recursa.server.progress import ProgressEvent, ProgressTracker
from recursa.server.sessions import SessionEntry, SessionPool
from recursa.types import Result

if TYPE_CHECKING:
    from recursa.trace.jsonl import TraceFile

__all__ = ["RunHandle", "RunManager", "RunStore", "build_models"]

log = logging.getLogger("recursa.server")

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TREE_CHARS = 12_000
# Longer than a sandbox takes to shut down (about 6 s at worst), so only a lost cancellation
# is repeated, never a cleanup in progress interrupted.
RECANCEL_S = 10.0


class RunStore:
    """Traces and summaries of past runs, one folder per run."""

    def __init__(self, root: Path, keep: int = 1000) -> None:
        self.root = Path(root)
        self.keep = keep

    def folder(self, run_id: str) -> Path:
        # Run ids come from clients (ask_trace): never let one name a path outside the store.
        if not _RUN_ID.match(run_id) or ".." in run_id:
            raise RunNotFound(f"{run_id!r} is not a run id (e.g. 20261123-142501-9f3a1c)")
        return self.root / run_id

    def trace_path(self, run_id: str) -> Path:
        return self.folder(run_id) / "trace.jsonl"

    def save(
        self, run_id: str, summary: dict[str, Any], *, active: AbstractSet[str] = frozenset()
    ) -> None:
        folder = private_dir(self.folder(run_id))
        tmp = folder / "summary.json.tmp"
        text = json.dumps(summary, ensure_ascii=False, indent=1, default=str)
        # A lone surrogate (a model can answer with one) must not cost the run its summary.
        write_private(tmp, scrub(text).encode("utf-8"))
        os.replace(tmp, folder / "summary.json")  # readers never see half a summary
        self.prune(active | {run_id})

    def prune(self, keep_ids: AbstractSet[str] = frozenset()) -> None:
        """Remove the oldest runs past ``keep`` (run ids sort by creation time)."""
        try:
            names = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return
        for name in names[: max(0, len(names) - self.keep)]:
            if name not in keep_ids:
                shutil.rmtree(self.root / name, ignore_errors=True)

    def load(self, run_id: str) -> dict[str, Any]:
        path = self.folder(run_id) / "summary.json"
        try:
            summary: dict[str, Any] = json.loads(path.read_text("utf-8"))
            return summary
        except FileNotFoundError:
            if path.parent.is_dir():
                return {"run_id": run_id, "status": "running"}
            raise RunNotFound(f"no stored run {run_id!r} (it may have been pruned)") from None
        except (OSError, ValueError) as exc:
            raise RunNotFound(f"run {run_id!r} has an unreadable summary: {exc}") from None

    def describe(self, run_id: str) -> dict[str, Any]:
        """The summary plus what the trace says: span counts and the run as an indented tree."""
        summary = self.load(run_id)
        try:
            from recursa.trace.jsonl import read_trace

            trace = read_trace(self.trace_path(run_id))
        except TraceError as exc:
            summary["trace"] = {"error": str(exc)}
            return summary
        counts: dict[str, int] = {}
        for span in trace.spans:
            counts[span.kind] = counts.get(span.kind, 0) + 1
        summary["trace"] = {
            "path": str(trace.path),
            "spans": counts,
            "errors": sum(s.status != "ok" for s in trace.spans),
            "tree": _render(trace),
        }
        return summary


def _render(trace: TraceFile) -> str:
    from rich.console import Console

    from recursa.trace.show import render_tree

    out = io.StringIO()
    Console(file=out, width=110, color_system=None, highlight=False).print(render_tree(trace))
    text = out.getvalue()
    if len(text) > _TREE_CHARS:
        text = text[:_TREE_CHARS] + f"\n[... {len(text) - _TREE_CHARS:,} characters cut ...]"
    return text


def build_models(config: ServerConfig, choice: ModelChoice) -> list[LM]:
    """The root model (and the sub model, when it differs) of ``choice``, each built with the
    options of its own provider: a base URL configured for one provider never receives another
    provider's key. The caller closes them (``aclose``) when the run is over."""
    specs = [choice.root] if choice.sub is None else [choice.root, choice.sub]
    return [resolve_model(spec, config.provider_options(spec)) for spec in specs]


@dataclass
class RunHandle:
    """One running RLM: its id, its task, and (when asked for) its progress events."""

    run_id: str
    task: asyncio.Task[Result] = field(init=False)
    meta: dict[str, Any] = field(default_factory=dict)  # what the stored summary starts from
    # Progress events, then None when the run has ended.
    events: asyncio.Queue[ProgressEvent | None] = field(default_factory=asyncio.Queue)
    _cancelled: bool = False

    async def progress(self) -> AsyncIterator[ProgressEvent]:
        """Progress events until the run ends (nothing unless started with ``progress``)."""
        while (event := await self.events.get()) is not None:
            yield event

    async def result(self) -> Result:
        """Wait for the run. If the waiter is cancelled, the run is cancelled too."""
        try:
            return await asyncio.shield(self.task)
        except asyncio.CancelledError:
            self.cancel()
            raise

    def cancel(self) -> None:
        """Stop the run; its engine shuts the sandbox down on the way out. Calling it again
        does nothing, so the engine's cleanup is not interrupted by a second cancellation."""
        if not self._cancelled and not self.task.done():
            self._cancelled = True
            self.task.cancel()
            self.task.get_loop().call_later(RECANCEL_S, self._recancel)

    def _recancel(self) -> None:
        # On Python 3.11, asyncio.wait_for swallows a cancellation that arrives in the same
        # tick as its result, and the run goes on as if never cancelled. A run still going
        # well after any cleanup would have finished is cancelled again.
        if not self.task.done():
            log.warning("run %s outlived its cancellation; cancelling it again", self.run_id)
            self.task.cancel()
            self.task.get_loop().call_later(RECANCEL_S, self._recancel)


class RunManager:
    """Starts runs within the server's cap and keeps track of them until they end."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = (
            RunStore(config.stored_runs_dir, config.keep_runs) if config.store_runs else None
        )
        self.runs: dict[str, RunHandle] = {}
        self.sessions = SessionPool(
            config.max_sessions, config.session_idle_s, config.retry_after_s
        )

    @property
    def active(self) -> int:
        return len(self.runs)

    def build_rlm(
        self,
        choice: ModelChoice,
        limits: Limits,
        temperature: float | None,
        sampling: Mapping[str, Any] | None = None,
    ) -> tuple[RLM, list[LM]]:
        """An RLM for one request, and the models it runs (for the caller to close); any model
        that cannot be built is a 404 for the client. ``sampling`` holds the request's other
        sampling keywords (``top_p``, ``reasoning_effort``); they win over ``rlm_options``."""
        try:
            models = build_models(self.config, choice)
            # A request cannot be resumed once its client is gone, and a journal would keep a
            # copy of every client's context: server runs keep their trace and summary only.
            options = {"journal": False, **dict(self.config.rlm_options), **dict(sampling or {})}
            root, sub = models[0], (models[1] if len(models) > 1 else None)
            rlm = RLM(root, sub, limits=limits, temperature=temperature, **options)
        except ConfigError as exc:
            raise ModelNotFound(
                f"model {choice.name!r} is not available: {exc}", param="model"
            ) from exc
        return rlm, models

    def start(
        self,
        choice: ModelChoice,
        question: str,
        context: Context,
        *,
        limits: Limits | None = None,
        temperature: float | None = None,
        progress: bool = False,
        source: str = "api",
        built: tuple[RLM, list[LM]] | None = None,
        session: SessionEntry | None = None,
    ) -> RunHandle:
        """Start a run now or raise :class:`ServerBusy`; never waits for a slot.

        ``built`` is what :meth:`build_rlm` returned for this request, when the caller built
        it already (off the event loop); otherwise it is built here. With ``session`` (taken
        from :attr:`sessions`, busy), the question is asked in that session's REPL and the
        session is released when it is answered.
        """
        cfg = self.config
        # No await between this check and the insertion below, so two requests cannot both
        # take the last slot.
        if len(self.runs) >= cfg.max_concurrent_runs:
            raise ServerBusy(cfg.max_concurrent_runs, cfg.retry_after_s)
        limits = limits or cfg.limits
        models: list[LM]
        if session is not None:
            rlm, models = session.rlm, []  # the pool owns the session's models
        else:
            rlm, models = built or self.build_rlm(choice, limits, temperature)
        handle = RunHandle(new_run_id())
        while handle.run_id in self.runs:  # same second, same random suffix: draw again
            handle = RunHandle(new_run_id())
        tracker = [ProgressTracker(handle.events.put_nowait)] if progress else []
        handle.meta = {
            "run_id": handle.run_id,
            "source": source,
            "model": choice.name,
            "root_model": choice.root,
            "sub_model": choice.sub or choice.root,
            "question": question[:2000],
            "context": {
                "kind": context.kind,
                "chars": context.total_chars,
                "parts": len(context.parts),
            },
            "limits": dataclasses.asdict(limits),
            "session": session.session_id if session is not None else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.runs[handle.run_id] = handle
        handle.task = asyncio.create_task(
            self._execute(handle, rlm, models, question, context, tracker, session),
            name=handle.run_id,
        )
        # A task cancelled before it first ran never enters _execute's finally: end it here.
        handle.task.add_done_callback(lambda _: self._finish(handle, "cancelled"))
        return handle

    def _finish(
        self,
        handle: RunHandle,
        status: str,
        error: str | None = None,
        result: Result | None = None,
    ) -> None:
        """Free the slot, store the summary, end the progress stream. Once per run."""
        if self.runs.pop(handle.run_id, None) is None:
            return
        handle.events.put_nowait(None)
        if self.store is None:
            return
        summary = {**handle.meta, "status": status, "error": error}
        summary["result"] = result.to_dict() if result is not None else None
        try:
            self.store.save(handle.run_id, summary, active=set(self.runs))
        except OSError as exc:  # a full disk must not turn an answer into an error
            log.warning("could not store run %s: %s", handle.run_id, exc)

    async def _execute(
        self,
        handle: RunHandle,
        rlm: RLM,
        models: list[LM],
        question: str,
        context: Context,
        processors: list[ProgressTracker],
        session: SessionEntry | None = None,
    ) -> Result:
        trace = self.store.trace_path(handle.run_id) if self.store else None
        status, error, result = "failed", None, None
        try:
            if session is not None:
                # A new session's trace goes into its first question's run folder.
                result = await session.open(trace).ask(
                    question, processors=processors, run_id=handle.run_id
                )
            else:
                result = await rlm.arun(
                    question, context, trace=trace, run_id=handle.run_id, processors=processors
                )
            status = "final" if not result.partial else "stopped"
            return result
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except RecursaError as exc:
            error, result = str(exc), exc.result
            raise
        except Exception as exc:  # a bug: keep the server up, say what happened
            log.exception("run %s failed", handle.run_id)
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if session is not None:
                self.sessions.release(session)
            # Here rather than in a done callback, so that whoever awaits the run sees its
            # slot already free.
            self._finish(handle, status, error, result)
            # Built by the manager, not by the RLM, so closed here (their HTTP clients).
            for lm in models:
                with contextlib.suppress(Exception):
                    await lm.aclose()

    async def aclose(self) -> None:
        """Cancel every run and wait until their sandboxes are shut down."""
        handles = list(self.runs.values())
        for handle in handles:
            handle.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*(h.task for h in handles), return_exceptions=True)
        await self.sessions.aclose()
