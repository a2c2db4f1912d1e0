"""Server sessions: a conversation that names a session continues in the same REPL.

A chat-completions request with ``"recursa": {"session": ID}`` (an id the client picks) is
answered in the REPL of session ``ID``: the first such request starts it with that request's
context, later ones ask their question there, so variables and earlier answers stay (the
client may keep resending the whole conversation: only the new question, and the attachments
of the last message as one more context, are used). A session answers one question at a time
(409 while it is busy), must be asked for with the model that started it, ends after
``session_idle_s`` without a question, and the server keeps at most ``max_sessions`` (the one
idle longest is closed to make room; 429 when every one is busy).

Server sessions are not journaled (as server runs are not): they end with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recursa.context import Context
from recursa.lm.base import LM
from recursa.rlm import RLM
from recursa.server.errors import RequestError, ServerBusy
from recursa.session import AsyncSession

__all__ = ["SessionBusy", "SessionEntry", "SessionPool", "check_session_id"]

log = logging.getLogger("recursa.server")

_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class SessionBusy(RequestError):
    """The session is answering another question."""

    status = 409
    code = "session_busy"


def check_session_id(value: object) -> str:
    """The session id a request gave, or :class:`RequestError` if it is not a usable one."""
    if not isinstance(value, str) or not _SESSION_ID.match(value):
        raise RequestError(
            "recursa.session must be a string of 1-128 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit",
            param="recursa.session",
        )
    return value


@dataclass
class SessionEntry:
    """One live session: its RLM, the models the server built for it, and its REPL."""

    session_id: str
    model: str  # the model name the client asked for
    rlm: RLM
    models: list[LM]
    context: Context
    session: AsyncSession | None = None  # opened with the first question
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)

    def open(self, trace: Path | None) -> AsyncSession:
        if self.session is None:
            self.session = self.rlm.asession(self.context, trace=trace)
        return self.session

    async def aclose(self) -> None:
        try:
            if self.session is not None:
                await self.session.aclose()
        finally:
            for lm in self.models:
                with contextlib.suppress(Exception):
                    await lm.aclose()


class SessionPool:
    """The server's live sessions, bounded in number and in idle time."""

    def __init__(self, max_sessions: int, idle_s: float, retry_after_s: int) -> None:
        self.max_sessions = max_sessions
        self.idle_s = idle_s
        self.retry_after_s = retry_after_s
        self.entries: dict[str, SessionEntry] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, session_id: str) -> SessionEntry | None:
        return self.entries.get(session_id)

    def acquire(
        self,
        session_id: str,
        model: str,
        build: Callable[[], tuple[RLM, list[LM]]],
        context: Context,
    ) -> tuple[SessionEntry, bool]:
        """The session ``session_id`` marked busy (``True`` if it was created now). No await
        in here: two requests cannot both take one session or the last free place."""
        self._sweep()
        entry = self.entries.get(session_id)
        if entry is not None:
            if entry.busy:
                raise SessionBusy(
                    f"session {session_id!r} is answering another question: send the next "
                    "one when that answer has come",
                    param="recursa.session",
                )
            if entry.model != model:
                raise RequestError(
                    f"session {session_id!r} was started with model {entry.model!r}: ask it "
                    "with that model, or start another session",
                    param="model",
                )
            entry.busy, entry.last_used = True, time.monotonic()
            return entry, False
        if len(self.entries) >= self.max_sessions:
            self._evict_one()
        rlm, models = build()
        entry = SessionEntry(session_id, model, rlm, models, context, busy=True)
        self.entries[session_id] = entry
        self._start_sweeper()
        return entry, True

    def release(self, entry: SessionEntry) -> None:
        entry.busy, entry.last_used = False, time.monotonic()

    def _evict_one(self) -> None:
        idle = [e for e in self.entries.values() if not e.busy]
        if not idle:
            raise ServerBusy(self.max_sessions, self.retry_after_s)
        oldest = min(idle, key=lambda e: e.last_used)
        log.info("closing session %s to make room for a new one", oldest.session_id)
        self._close(oldest)

    def _sweep(self) -> None:
        """Close every session idle for longer than ``idle_s``."""
        now = time.monotonic()
        for entry in list(self.entries.values()):
            if not entry.busy and now - entry.last_used > self.idle_s:
                log.info("session %s expired after %.0fs idle", entry.session_id, self.idle_s)
                self._close(entry)

    def _close(self, entry: SessionEntry) -> None:
        self.entries.pop(entry.session_id, None)
        task = asyncio.get_running_loop().create_task(entry.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while self.entries:
            await asyncio.sleep(max(0.05, min(60.0, self.idle_s / 2)))
            self._sweep()

    async def aclose(self) -> None:
        """Close every session (the server is stopping)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        entries, self.entries = list(self.entries.values()), {}
        await asyncio.gather(*(e.aclose() for e in entries), return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)
