"""Sandboxes ready before they are needed: started in the background, or kept warm for children.

Two things take a worker's start off an RLM's critical path:

- :class:`StartingSandbox` starts an engine's sandbox (and loads its context) in the background,
  so the first root request goes out at once: the first turn needs no REPL until its code runs,
  and every method of the sandbox waits for the start first.
- :class:`WorkerPool` keeps a few workers started for the children a cell is about to spawn
  (``rlm_query``): the engine asks it to :meth:`~WorkerPool.warm` before such a cell runs, and a
  child :meth:`~WorkerPool.take` s one instead of starting its own.

A pooled worker is fresh (it has run nothing), started with the very configuration and function
table the child asked for, and used by one child only; its sub-calls reach that child through a
relay bound when it is taken. The pool is bounded (``size``, and never more warm workers than
``Limits.max_sandboxes`` leaves room for beside the live ones) and shut down, warm workers and
workers still starting alike, when the tree's root run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from recursa.errors import SandboxError
from recursa.limits import SandboxSlots
from recursa.sandbox.base import CallHandler, CallRefused, Sandbox, SandboxConfig
from recursa.types import CellResult

__all__ = ["WARM_DELAY_S", "WARM_WORKERS", "StartingSandbox", "WorkerPool"]

WARM_WORKERS = 4  # most warm workers a tree keeps (a batch of children takes them in parallel)
WARM_DELAY_S = 0.03  # how long a warm worker's start waits for its children's first requests

SandboxFactory = Callable[[SandboxConfig, CallHandler], Sandbox]


class _Relay:
    """A warm worker's call handler: refuses calls until a child takes the worker."""

    def __init__(self) -> None:
        self.target: CallHandler | None = None

    async def __call__(self, fn: str, args: dict[str, Any]) -> Any:
        if self.target is None:
            raise CallRefused(f"{fn}: this worker is not serving a run yet")
        return await self.target(fn, args)


def _table(config: SandboxConfig) -> str:
    """The function table a worker offers, comparable (``SandboxConfig`` equality leaves it
    out, and a worker must offer exactly the functions its child's host answers)."""
    return json.dumps(config.functions.wire(), sort_keys=True, default=str)


class _Warm:
    """One pooled worker: its sandbox, its relay and the task starting it.

    The start waits ``delay_s`` first (or until a child asks for the worker): the cell that
    asked for warm workers is about to start children, and their first requests should go out
    before a process start holds the event loop (spawning a worker blocks it for milliseconds,
    more in a large host process). A child's first turn takes longer than the delay, so the
    worker is still ready when it is wanted."""

    def __init__(self, sandbox: Sandbox, relay: _Relay, delay_s: float) -> None:
        self.sandbox, self.relay = sandbox, relay
        self.wanted = asyncio.Event()
        self.started = False  # the process start began (it must not be cut short)
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._start(delay_s))

    async def _start(self, delay_s: float) -> None:
        if delay_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self.wanted.wait()
        self.started = True
        await self.sandbox.start()


class WorkerPool:
    """Warm workers for one run tree's children (see the module docstring)."""

    def __init__(
        self,
        factory: SandboxFactory,
        slots: SandboxSlots,
        size: int = WARM_WORKERS,
        delay_s: float = WARM_DELAY_S,
    ) -> None:
        self.factory = factory
        self.slots = slots
        self.size = size
        self.delay_s = delay_s
        # Per configuration (compared with ==: a config holds a dict, so it is no dict key).
        self._warm: list[tuple[SandboxConfig, str, deque[_Warm]]] = []
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def warm_count(self) -> int:
        return sum(len(q) for _, _, q in self._warm)

    def _queue(self, config: SandboxConfig, *, make: bool) -> deque[_Warm] | None:
        table = _table(config)
        for have, have_table, queue in self._warm:
            if have == config and have_table == table:
                return queue
        if not make:
            return None
        queue = deque()
        self._warm.append((config, table, queue))
        return queue

    def warm(self, config: SandboxConfig, n: int) -> int:
        """Start up to ``n`` workers for ``config`` in the background (fewer when the pool is
        full, or when live and warm workers would pass ``max_sandboxes``); how many it started."""
        if self._closed:
            return 0
        queue = self._queue(config, make=True)
        assert queue is not None
        count = 0
        while (
            count < n
            and len(queue) < self.size
            and self.warm_count < self.size
            and self.slots.live + self.warm_count < self.slots.capacity
        ):
            relay = _Relay()
            queue.append(_Warm(self.factory(config, relay), relay, self.delay_s))
            count += 1
        return count

    async def take(self, config: SandboxConfig, handler: CallHandler) -> Sandbox | None:
        """A started worker for ``config``, now serving ``handler``; ``None`` if there is none
        (or its start failed): the caller starts its own."""
        queue = self._queue(config, make=False)
        while queue:
            warm = queue.popleft()
            warm.wanted.set()  # start now if it has not yet
            try:
                await asyncio.shield(warm.task)
            except Exception:  # a failed warm start: the child starts its own and sees why
                await _stop(warm.sandbox)
                continue
            except asyncio.CancelledError:
                await asyncio.shield(_stop_after(warm))
                raise
            warm.relay.target = handler
            return warm.sandbox
        return None

    def retire(self, sandbox: Sandbox, done: Callable[[], None]) -> None:
        """Shut a child's sandbox down in the background, then call ``done`` (which frees its
        slot): the child's answer reaches its parent without waiting for its worker to exit,
        and :meth:`aclose` waits for every retiring worker, so none outlives the run."""
        task = asyncio.ensure_future(_retire(sandbox, done))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def aclose(self) -> None:
        """Shut every warm worker down (those still starting once they have started), and wait
        for the children's workers being shut down."""
        self._closed = True
        # Until none is left: a cancelled child may retire its worker while we wait.
        while True:
            queues, self._warm = [q for _, _, q in self._warm], []
            waits: list[Awaitable[None]] = [_stop_after(w) for q in queues for w in q]
            waits += [t for t in self._retiring if not t.done()]
            if not waits:
                return
            await asyncio.gather(*waits)


async def _retire(sandbox: Sandbox, done: Callable[[], None]) -> None:
    try:
        await _stop(sandbox)
    finally:
        done()


async def _stop(sandbox: Sandbox) -> None:
    with contextlib.suppress(Exception):
        await sandbox.shutdown()


async def _stop_after(warm: _Warm) -> None:
    """Shut a pooled worker down once its start is over (cutting a start short could leave a
    process behind); one whose start has not begun is simply not started."""
    if not warm.started:
        warm.task.cancel()
    with contextlib.suppress(BaseException):
        await warm.task
    if warm.started:
        await _stop(warm.sandbox)


class StartingSandbox:
    """A sandbox started (and its context loaded) in the background; every method waits for
    that first. ``open`` makes and starts the sandbox; :meth:`begin` runs it."""

    def __init__(self, open: Callable[[], Awaitable[Sandbox]]) -> None:
        self._open = open
        self._task: asyncio.Task[Sandbox] | None = None

    def begin(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._open())

    async def ready(self) -> Sandbox:
        """The started sandbox (raises what its start raised). Before :meth:`begin` there is
        none: a run stopped before its first turn starts no worker just to read a variable."""
        if self._task is None:
            raise SandboxError("the sandbox was never started")
        # Shielded: a cancelled run must not cut the start short; shutdown() waits for it.
        return await asyncio.shield(self._task)

    @property
    def alive(self) -> bool:
        task = self._task
        if task is None or not task.done() or task.cancelled() or task.exception():
            return False
        return task.result().alive

    async def start(self) -> None:
        self.begin()
        await self.ready()

    async def load_context(
        self, value: Any, *, name: str = "context", alias_parts: bool = False
    ) -> None:
        await (await self.ready()).load_context(value, name=name, alias_parts=alias_parts)

    async def execute(
        self, code: str, *, timeout_s: float | None = None, deadline: float | None = None
    ) -> CellResult:
        sandbox = await self.ready()
        return await sandbox.execute(code, timeout_s=timeout_s, deadline=deadline)

    async def get_var(self, name: str) -> str | None:
        return await (await self.ready()).get_var(name)

    async def set_var(self, name: str, value: Any) -> None:
        await (await self.ready()).set_var(name, value)

    async def restart(self) -> None:
        await (await self.ready()).restart()

    async def shutdown(self) -> None:
        """Shut the sandbox down once its start is over (nothing to do if it never began)."""
        if self._task is None:
            return
        with contextlib.suppress(BaseException):
            await self._task
        if not self._task.cancelled() and self._task.exception() is None:
            await self._task.result().shutdown()

    def isolation(self) -> dict[str, Any]:
        task = self._task
        if task is None or not task.done() or task.cancelled() or task.exception():
            return {}
        return task.result().isolation()


async def open_sandbox(
    factory: SandboxFactory,
    config: SandboxConfig,
    handler: CallHandler,
    context: Any,
    *,
    alias_parts: bool = False,
    pool: WorkerPool | None = None,
) -> Sandbox:
    """A sandbox serving ``handler`` with ``context`` loaded: a warm one from ``pool`` if one
    is ready, else a new one started here. One that fails on the way is shut down."""
    sandbox = await pool.take(config, handler) if pool is not None else None
    try:
        if sandbox is None:
            sandbox = factory(config, handler)
            await sandbox.start()
        await sandbox.load_context(context, alias_parts=alias_parts)
    except BaseException:
        if sandbox is not None:
            await asyncio.shield(_stop(sandbox))
        raise
    return sandbox
