"""The in-process tier: model code runs inside the host process. **No isolation at all.**

Only for trusted code paths (debugging prompts, notebooks where you want to inspect the REPL's
variables directly). It is reachable only through ``RLM(..., trusted=True)``. The code runs in a
worker thread; a cell that never returns cannot be stopped (threads cannot be killed), so cell
timeouts are reported but the thread keeps running. Output capture swaps ``sys.stdout`` and
``sys.stderr`` for the whole process while a cell runs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from recursa.sandbox._support import refuse_all as _refuse_all
from recursa.sandbox._support import within
from recursa.sandbox.base import CallHandler, CallRefused, SandboxConfig
from recursa.sandbox.worker import BudgetExhaustedError, LLMQueryError, Repl, ToolError, _to_text
from recursa.types import CellResult

__all__ = ["InProcessSandbox"]


class InProcessSandbox:
    """Runs cells in a thread of the host process (see the module docstring)."""

    tier = "inprocess"

    def __init__(self, config: SandboxConfig | None = None, on_call: CallHandler | None = None):
        self.config = config or SandboxConfig()
        self.on_call = on_call or _refuse_all
        self._loop: asyncio.AbstractEventLoop | None = None
        self._repl: Repl | None = None
        self._contexts: dict[str, tuple[Any, bool]] = {}

    @property
    def alive(self) -> bool:
        """True from ``start()`` until ``shutdown()``: there is no worker that could die."""
        return self._repl is not None

    @property
    def namespace(self) -> dict[str, Any]:
        """The REPL's variables, for inspection."""
        assert self._repl is not None, "start() the sandbox first"
        return self._repl.namespace

    async def _on_call(self, fn: str, args: dict[str, Any]) -> Any:
        # A coroutine for run_coroutine_threadsafe, whatever awaitable the handler returns.
        return await self.on_call(fn, args)

    def _call(self, fn: str, args: dict[str, Any]) -> Any:
        """Run a sub-call on the host's loop from the cell's thread, and wait for it."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._on_call(fn, args), self._loop)
        try:
            return future.result()
        except CallRefused as exc:
            if exc.kind == "budget":
                raise BudgetExhaustedError(str(exc)) from None
            if exc.kind == "tool":
                raise ToolError(str(exc)) from None
            raise LLMQueryError(str(exc)) from None
        except Exception as exc:
            raise LLMQueryError(f"{type(exc).__name__}: {exc}") from None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._repl = Repl(self._call, self.config.max_captured_chars, self.config.functions.wire())
        for name, (value, alias) in self._contexts.items():
            self._bind(name, value, alias)

    def _bind(self, name: str, value: Any, alias_parts: bool) -> None:
        assert self._repl is not None
        self._repl.set_var(name, value)
        if alias_parts and isinstance(value, list):
            for i, part in enumerate(value):
                self._repl.set_var(f"{name}_{i}", part)

    async def load_context(
        self, value: Any, *, name: str = "context", alias_parts: bool = False
    ) -> None:
        self._contexts[name] = (value, alias_parts)
        self._bind(name, value, alias_parts)

    async def set_var(self, name: str, value: Any) -> None:
        assert self._repl is not None
        self._repl.set_var(name, value)

    async def execute(
        self, code: str, *, timeout_s: float | None = None, deadline: float | None = None
    ) -> CellResult:
        assert self._repl is not None, "start() the sandbox first"
        started = time.monotonic()
        limit = timeout_s
        if deadline is not None:
            left = max(0.0, deadline - started)
            limit = left if limit is None else min(limit, left)
        try:
            out = await within(asyncio.to_thread(self._repl.run_cell, code), limit)
        except TimeoutError:
            return CellResult(
                error="the cell timed out (in-process cells cannot be stopped; it keeps running)",
                fatal=True,
                fatal_reason="cell_timeout",
                elapsed_s=time.monotonic() - started,
            )
        return CellResult(
            stdout=out["stdout"],
            error=out["error"],
            final=out["final"],
            elapsed_s=time.monotonic() - started,
            output_cut_chars=max(0, out["stdout_chars"] - len(out["stdout"])),
        )

    async def get_var(self, name: str) -> str | None:
        assert self._repl is not None
        ns = self._repl.namespace
        return _to_text(ns[name]) if name in ns else None

    async def restart(self) -> None:
        await self.start()

    async def shutdown(self) -> None:
        self._repl = None

    def isolation(self) -> dict[str, Any]:
        return {"tier": self.tier, "process": False, "scrubbed_env": False, "protections": []}
