"""One cell's bookkeeping on the host side: its compute clock and the tasks it waits on.

A cell's compute clock is its wall time minus the time the host spends running sub-call
handlers. While handlers run, the worker's CPU time beyond what the rest of the wall time
explains is charged as well (where the host can read it: ``/proc/<pid>/stat``), so a cell
cannot burn CPU for free behind slow or forged sub-calls. Replies the worker never reads count
as compute time. :class:`ComputeClock` does the arithmetic; ``WorkerHost.execute`` (in
``_host.py``) does the waiting.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

from recursa.sandbox._support import Dead

__all__ = ["CPU_POLL_S", "Cell", "ComputeClock", "Inbound"]

CPU_POLL_S = 0.25  # how often the worker's CPU time is read while sub-call handlers run

# What the host's inbox holds: a frame from the worker, or word that the worker is gone.
Inbound = dict[str, Any] | Dead


class ComputeClock:
    """How much of a cell's compute time is left (see the module docstring)."""

    def __init__(self, limit_s: float | None, now: float) -> None:
        self.left = math.inf if limit_s is None else limit_s
        # The worker's CPU seconds at the last reading (None until the cell's first sub-call
        # finds them readable), and the wall time with / without handlers running since then.
        self.cpu_last: float | None = None
        self.sampled_at = now
        self.handler_s = 0.0
        self.free_s = 0.0

    @property
    def spent(self) -> bool:
        return self.left <= 0

    @property
    def reading_cpu(self) -> bool:
        return self.cpu_last is not None

    def start_reading_cpu(self, cpu: float | None, now: float) -> None:
        """Take a first reading of the worker's CPU seconds (None: not readable this time)."""
        self.cpu_last = cpu
        self.sampled_at, self.handler_s, self.free_s = now, 0.0, 0.0

    def cpu_due(self, now: float) -> bool:
        """Whether handlers have run since the last CPU reading, at least ``CPU_POLL_S`` ago."""
        return (
            self.cpu_last is not None and self.handler_s > 0 and now - self.sampled_at >= CPU_POLL_S
        )

    def charge_cpu(self, cpu: float, now: float) -> None:
        """Charge CPU beyond what the handler-free wall time explains: it was spent while
        handlers ran, so it is compute, up to one CPU per wall second."""
        assert self.cpu_last is not None
        self.left -= min(self.handler_s, max(0.0, cpu - self.cpu_last - self.free_s))
        self.start_reading_cpu(cpu, now)

    def wait_s(self, *, serving: bool) -> float:
        """How long the host may wait before looking at this clock again: while handlers run,
        until the next CPU reading is due (for ever when the CPU cannot be read); otherwise
        until the compute time is spent."""
        if serving:
            return CPU_POLL_S if self.cpu_last is not None else math.inf
        return self.left

    def count(self, elapsed: float, *, serving: bool) -> None:
        """Account for ``elapsed`` wall seconds: time spent serving sub-calls is not compute."""
        if serving:
            self.handler_s += elapsed
        else:
            self.left -= elapsed
            self.free_s += elapsed


@dataclass(eq=False)
class Cell:
    """One cell in flight: what ``WorkerHost.execute`` carries from one step to the next."""

    id: int
    started: float
    timeout_s: float | None  # the cell's compute time limit, for the error message
    deadline: float | None  # the run's time limit (``time.monotonic()``), if any
    clock: ComputeClock
    next_frame: asyncio.Task[Inbound]  # the read of the host's inbox now under way
    serving: set[asyncio.Task[None]] = field(default_factory=set)  # sub-call handlers running
