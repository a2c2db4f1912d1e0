"""The sandbox seam: where model-written code runs.

A sandbox has a small async surface (:class:`Sandbox`) and two kinds of failure only:

- recoverable: the code raised; the traceback is in ``CellResult.error`` and shown to the model;
- fatal: the worker died (crash, kill, timeout, protocol violation); ``CellResult.fatal`` is set,
  and :meth:`Sandbox.restart` brings up a fresh worker with the context reloaded but every other
  variable lost.

Sub-calls made by the code (``llm_query`` and friends) reach the host through the ``on_call``
handler the engine passes in. A handler refuses a call by raising :class:`CallRefused`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from recursa.sandbox.functions import DEFAULT_FUNCTIONS, FunctionTable
from recursa.types import CellResult

__all__ = [
    "CallHandler",
    "CallRefused",
    "HasWorkerProcess",
    "Sandbox",
    "SandboxConfig",
    "SandboxWarning",
]

CallHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class SandboxWarning(UserWarning):
    """A protection the chosen sandbox tier would apply is missing on this machine."""


class CallRefused(Exception):
    """Raised by a call handler to refuse a sub-call.

    ``kind`` is ``"budget"`` when the run's budget is used up (the model's code then gets a
    ``BudgetExhaustedError``) and ``"error"`` otherwise. ``kill`` asks the sandbox to kill the
    worker (for code that keeps calling after being refused).
    """

    def __init__(self, message: str, *, kind: str = "error", kill: bool = False) -> None:
        self.kind = kind
        self.kill = kill
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Resource limits and knobs for a sandbox. ``None`` disables a limit.

    Attributes:
        memory_limit_mb: address-space limit of the worker (allocations past it raise
            MemoryError inside the worker).
        file_size_limit_mb: largest file the worker may write.
        max_open_files: file descriptors the worker may hold.
        max_frame_bytes: largest frame the host accepts from the worker; a larger one kills it.
        max_captured_chars: output kept per cell inside the worker (the rest is only counted).
        start_timeout_s: how long the worker may take to say it is ready.
        python: the interpreter to run the worker with (default: the host's).
        workdir: where per-run temporary folders are made (default: the system's temp dir).
        hardening: apply the OS-level protections the tier offers (seccomp, Landlock).
        protect_host: mark the host process non-dumpable (Linux ``PR_SET_DUMPABLE``) when a
            worker starts, so no process without CAP_SYS_PTRACE can read its memory or
            environment through ``/proc``. Also stops core dumps and unprivileged debuggers.
        env: extra environment variables for the worker. Nothing from the host's environment is
            passed unless named here.
        docker_image: the image the ``docker`` tier runs the worker in (it needs ``python3``).
        max_pids: threads (and processes) the worker may hold, its own included. ``docker``:
            ``--pids-limit``. ``process``: a pids cgroup where the host can make one, else
            RLIMIT_NPROC for a worker that is not root, and a cap inside the worker always
            (see ``isolation()["thread_cap"]`` for what holds on this machine).
        max_pending_frames: frames from the worker the host holds unanswered (sub-calls being
            served or waiting for the worker to read their reply); one more kills the worker.
        max_pending_bytes: the same bound in bytes (at least two frames' worth is allowed).
        scratch_limit_mb: bytes on disk the worker's ``scratch/`` folder may hold in total
            (checked every half second while the worker lives; see ``docs/sandbox.md``).
        max_scratch_files: files and folders ``scratch/`` may hold.
        functions: the host functions the worker offers and the host answers (the default
            table, plus an engine's tools: see :meth:`SubCalls.sandbox_config`).
    """

    memory_limit_mb: int | None = 4096
    file_size_limit_mb: int | None = 256
    max_open_files: int | None = 256
    max_frame_bytes: int = 64 * 1024 * 1024
    max_captured_chars: int = 200_000
    start_timeout_s: float = 20.0
    python: str | None = None
    workdir: Path | None = None
    hardening: bool = True
    protect_host: bool = True
    env: Mapping[str, str] = field(default_factory=dict)
    docker_image: str = "python:3.12-slim"
    max_pids: int = 64
    max_pending_frames: int = 16
    max_pending_bytes: int = 128 * 1024 * 1024
    scratch_limit_mb: int | None = 1024
    max_scratch_files: int | None = 100_000
    functions: FunctionTable = field(default=DEFAULT_FUNCTIONS, compare=False, repr=False)


@runtime_checkable
class Sandbox(Protocol):
    """Where model code runs. One instance serves one RLM (the root or one child).

    Every tier has all of this; optional features are their own protocols
    (:class:`HasWorkerProcess`), checked with ``isinstance``.
    """

    @property
    def alive(self) -> bool:
        """True while the sandbox can run a cell (started, not shut down, worker not dead)."""
        ...

    async def start(self) -> None: ...

    async def load_context(
        self, value: Any, *, name: str = "context", alias_parts: bool = False
    ) -> None:
        """Put ``value`` into the REPL as ``name`` (kept across restarts).

        With ``alias_parts`` and a list value, ``name_0 .. name_N`` are bound to its items too.
        """
        ...

    async def execute(
        self, code: str, *, timeout_s: float | None = None, deadline: float | None = None
    ) -> CellResult:
        """Run one cell. ``timeout_s`` bounds its compute time (waiting on sub-calls excluded);
        ``deadline`` (a ``time.monotonic()`` value) bounds its wall clock."""
        ...

    async def get_var(self, name: str) -> str | None:
        """The variable ``name`` as text, or ``None`` if it does not exist."""
        ...

    async def set_var(self, name: str, value: Any) -> None:
        """Bind ``name`` to ``value`` (JSON-able: str, numbers, lists, dicts) in the REPL.
        Unlike a context it is not restored after a restart."""
        ...

    async def restart(self) -> None:
        """Replace a dead (or live) worker with a fresh one; contexts are reloaded."""
        ...

    async def shutdown(self) -> None: ...

    def isolation(self) -> dict[str, Any]:
        """What this sandbox protects against on this machine (for ``recursa doctor``)."""
        ...


@runtime_checkable
class HasWorkerProcess(Protocol):
    """A sandbox whose code runs in a worker process of this machine (``process``, ``docker``
    and ``wasm`` tiers): its pid, and what it last wrote to stderr (for crash reports)."""

    @property
    def worker_pid(self) -> int | None: ...

    def stderr_tail(self) -> str: ...
