"""``executor="local"``: the batch's items in this process, a bounded number at a time.

The runs share one event loop (in a helper thread, so :func:`recursa.batch.batch` stays a
plain generator that also works inside Jupyter), one set of model clients and one
:class:`~recursa.batch.ratelimit.LocalRateLimiter`. Each run still has its own sandbox process.
Closing the generator early (``break``, Ctrl-C) cancels the runs in flight: their journals
stay resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from recursa.batch.job import run_item
from recursa.batch.ratelimit import LocalRateLimiter
from recursa.errors import ConfigError

if TYPE_CHECKING:
    from recursa.batch.run import Event, Plan
    from recursa.rlm import RLM

__all__ = ["DEFAULT_WORKERS", "LocalExecutor"]

DEFAULT_WORKERS = 8
_DONE = object()
_POLL_S = 0.2  # how often the waiting generator lets Ctrl-C in


class LocalExecutor:
    """Runs up to ``workers`` items at once in one process."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or DEFAULT_WORKERS
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1 (got {self.workers})")

    def run(self, rlm: RLM, plan: Plan) -> Iterator[Event]:
        """Events (``("start", job)``, ``("result", record)``) as items start and finish."""
        events: queue.Queue[Any] = queue.Queue()
        loop = asyncio.new_event_loop()
        main: list[asyncio.Task[None]] = []

        async def serve() -> None:
            main.append(asyncio.current_task())  # type: ignore[arg-type]
            limits = plan.rate_limits
            limiter = LocalRateLimiter(limits, **plan.spent()) if limits.active else None
            try:
                await asyncio.gather(
                    *(self._worker(rlm, plan, limiter, events) for _ in range(self.workers))
                )
            finally:
                await rlm.aclose()

        def thread_main() -> None:
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # handed to the caller's thread
                events.put(exc)
            finally:
                events.put(_DONE)
                loop.close()

        thread = threading.Thread(target=thread_main, name="recursa-batch", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    event = events.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if event is _DONE:
                    return
                if isinstance(event, BaseException):
                    if isinstance(event, asyncio.CancelledError):
                        return
                    raise event
                yield event
        finally:
            if thread.is_alive():
                with contextlib.suppress(RuntimeError):  # the loop may close meanwhile
                    for task in main:
                        loop.call_soon_threadsafe(task.cancel)
                thread.join()

    @staticmethod
    async def _worker(
        rlm: RLM, plan: Plan, limiter: LocalRateLimiter | None, events: queue.Queue[Any]
    ) -> None:
        while (job := plan.take()) is not None:
            events.put(("start", job))
            record = await run_item(rlm, job, limiter)
            plan.finished(record)
            events.put(("result", record))
