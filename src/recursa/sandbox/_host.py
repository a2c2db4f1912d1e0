r"""The host half of every worker-process tier: spawn, frames, cells, sub-calls, restarts.

:class:`WorkerHost` runs a worker command (``python -I worker.py``, ``deno run ...``,
``docker run ...``) in its own session, talks the frame protocol over its stdin/stdout, and
turns what happens into :class:`~recursa.types.CellResult`\ s. Every frame goes through one
reader task: a frame that arrives while no request is outstanding (a thread the model left
running after its cell), an oversized frame or a malformed one gets the worker killed, and
the next cell runs in a fresh one. Subclasses say what to run (:meth:`_command`,
:meth:`_worker_env`, :meth:`_init_message`) and may adjust the boot and context frames.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from recursa.errors import ProtocolError, SandboxCrashed, SandboxStartError
from recursa.sandbox import isolation
from recursa.sandbox._support import Dead as _Dead
from recursa.sandbox._support import Loaded as _Loaded
from recursa.sandbox._support import exit_detail as _exit_detail
from recursa.sandbox._support import make_run_dir as _make_run_dir
from recursa.sandbox._support import refuse_all as _refuse_all
from recursa.sandbox._support import within
from recursa.sandbox._support import write_context_file as _write_context_file
from recursa.sandbox.base import CallHandler, CallRefused, SandboxConfig
from recursa.sandbox.protocol import encode_frame, read_frame
from recursa.types import CellResult

__all__ = ["WorkerHost"]

_STDERR_TAIL = 8192


class WorkerHost:
    """Drives one worker over the frame protocol (see the module docstring)."""

    tier = "worker"

    def __init__(self, config: SandboxConfig | None = None, on_call: CallHandler | None = None):
        self.config = config or SandboxConfig()
        self.on_call: CallHandler = on_call or _refuse_all
        self._proc: asyncio.subprocess.Process | None = None
        self._root: Path | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[dict[str, Any] | _Dead] = asyncio.Queue()
        self._busy = False
        self._dead: _Dead | None = None
        self._kill_reason: tuple[str, str] | None = None
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_len = 0
        self._loaded: list[_Loaded] = []
        self._seq = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self.protections: list[str] = []
        self.hardening_s: float | None = None  # what applying seccomp/Landlock took, if any
        self.worker_pid: int | None = None
        self.restarts = 0

    async def start(self) -> None:
        if self._root is None:
            self._root = await asyncio.to_thread(_make_run_dir, self.config.workdir)
        await self._spawn()

    # ---- what subclasses provide ----------------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _worker_env(self) -> dict[str, str]:
        raise NotImplementedError

    def _init_message(self) -> dict[str, Any]:
        raise NotImplementedError

    def isolation(self) -> dict[str, Any]:
        raise NotImplementedError

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def scratch(self) -> Path:
        if self._root is None:
            raise SandboxStartError("the sandbox is not started")
        return self._root / "scratch"

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._dead is None and self._proc.returncode is None

    def _boot_frames(self) -> list[dict[str, Any]]:
        """Frames sent before ``init`` (the wasm runner takes the worker's source this way)."""
        return []

    def _load_message(self, item: _Loaded) -> dict[str, Any]:
        return {
            "type": "load_var",
            "name": item.name,
            "path": str(item.path),
            "format": item.fmt,
            "alias_parts": item.alias_parts,
        }

    async def _spawn(self) -> None:
        self._dead = None
        self._kill_reason = None
        self._busy = True
        self._inbox = asyncio.Queue()
        self._stderr.clear()
        self._stderr_len = 0
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=str(self.scratch),
                env=self._worker_env(),
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxStartError(f"cannot start the sandbox worker: {exc}") from exc
        self.worker_pid = self._proc.pid
        self._reader_task = asyncio.create_task(self._read_loop(self._proc))
        self._stderr_task = asyncio.create_task(self._drain_stderr(self._proc))
        try:
            for frame in self._boot_frames():
                await self._send(frame)
            await self._send(self._init_message())
            ready = await self._expect("ready", self.config.start_timeout_s)
        except SandboxCrashed as exc:
            await self._kill()
            raise SandboxStartError(
                f"the sandbox worker did not start: {exc}. {exc.stderr_tail}".strip()
            ) from exc
        self.protections = [str(p) for p in ready.get("protections", [])]
        took = ready.get("hardening_s")
        self.hardening_s = float(took) if isinstance(took, (int, float)) else None
        isolation.warn_once(self.isolation()["warnings"])
        for item in self._loaded:
            await self._send_load(item)
        self._busy = False

    async def restart(self) -> None:
        await self._kill()
        self.restarts += 1
        await self._spawn()

    async def shutdown(self) -> None:
        if self._proc is not None and self.alive:
            with contextlib.suppress(Exception):
                await self._send({"type": "shutdown"})
                await within(self._proc.wait(), 1.0)
        await self._kill()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    async def _kill(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await within(proc.wait(), 5.0)
            # The group may hold stragglers (forks) after the leader is reaped.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for task in (self._reader_task, self._stderr_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._dead is None:
            reason, detail = self._kill_reason or ("killed", "the worker was stopped")
            self._dead = _Dead(reason, detail)
        # Whoever waits on the inbox (a running cell) must learn that the worker is gone, even
        # though the reader task that would have said so was just cancelled.
        self._inbox.put_nowait(self._dead)

    # ---- I/O ------------------------------------------------------------------------------------
    async def _send(self, msg: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise SandboxCrashed("the sandbox is not running")
        data = encode_frame(msg)
        async with self._write_lock:
            try:
                proc.stdin.write(data)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise SandboxCrashed("the worker is gone", stderr_tail=self.stderr_tail()) from exc

    async def _read_loop(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        dead: _Dead
        try:
            while True:
                msg = await read_frame(proc.stdout, self.config.max_frame_bytes)
                if not self._busy:
                    raise ProtocolError(f"unsolicited '{msg.get('type')}' frame from the worker")
                self._inbox.put_nowait(msg)
        except EOFError:
            with contextlib.suppress(Exception):
                await within(proc.wait(), 2.0)
            reason, detail = self._kill_reason or ("crash", _exit_detail(proc.returncode))
            dead = _Dead(reason, detail)
        except ProtocolError as exc:
            dead = _Dead("protocol", f"protocol violation: {exc}; the worker was killed")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._dead is None:
            self._dead = dead
        self._inbox.put_nowait(dead)

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            self._stderr.append(chunk)
            self._stderr_len += len(chunk)
            while self._stderr_len > _STDERR_TAIL and len(self._stderr) > 1:
                self._stderr_len -= len(self._stderr.popleft())

    def stderr_tail(self) -> str:
        return b"".join(self._stderr)[-_STDERR_TAIL:].decode("utf-8", errors="replace").strip()

    async def _expect(self, kind: str, timeout_s: float | None) -> dict[str, Any]:
        """The next frame, which must be of ``kind``; a dead worker raises SandboxCrashed."""
        try:
            msg = await within(self._inbox.get(), timeout_s)
        except TimeoutError:
            await self._kill()
            raise SandboxCrashed(
                f"the worker did not answer within {timeout_s:g}s", reason="timeout"
            ) from None
        if isinstance(msg, _Dead):
            raise SandboxCrashed(msg.detail, reason=msg.reason, stderr_tail=self.stderr_tail())
        if msg.get("type") != kind:
            await self._kill()
            raise SandboxCrashed(
                f"protocol violation: expected '{kind}', got '{msg.get('type')}'",
                reason="protocol",
            )
        return msg

    async def _request(self, msg: dict[str, Any], kind: str, timeout_s: float | None) -> dict:
        if not self.alive:
            raise SandboxCrashed("the worker is not running; restart the sandbox", reason="dead")
        self._busy = True
        try:
            await self._send(msg)
            return await self._expect(kind, timeout_s)
        finally:
            self._busy = False

    # ---- the Sandbox surface --------------------------------------------------------------------
    async def _send_load(self, item: _Loaded) -> None:
        size_mb = item.path.stat().st_size / 1e6
        msg = await asyncio.to_thread(self._load_message, item)
        self._busy = True
        await self._send(msg)
        await self._expect("var", 60.0 + size_mb)

    async def load_context(
        self, value: Any, *, name: str = "context", alias_parts: bool = False
    ) -> None:
        assert self._root is not None, "start() the sandbox first"
        path = self._root / "inputs" / f"{name}.{len(self._loaded)}.data"
        fmt = await asyncio.to_thread(_write_context_file, value, path)
        item = _Loaded(name, path, fmt, alias_parts)
        self._loaded = [x for x in self._loaded if x.name != name] + [item]
        try:
            await self._send_load(item)
        finally:
            self._busy = False

    async def set_var(self, name: str, value: Any) -> None:
        await self._request({"type": "set_var", "name": name, "value": value}, "var", 30.0)

    async def get_var(self, name: str) -> str | None:
        msg = await self._request({"type": "get_var", "name": name}, "var", 30.0)
        return msg.get("value") if msg.get("found") else None

    async def _serve_call(self, msg: dict[str, Any]) -> None:
        cid = msg["id"]
        try:
            value = await self.on_call(msg["fn"], msg["args"])
            reply: dict[str, Any] = {"type": "response", "id": cid, "ok": True, "value": value}
        except CallRefused as exc:
            reply = {"type": "response", "id": cid, "ok": False, "error": str(exc)}
            reply["kind"] = exc.kind
            if exc.kill:
                self._kill_reason = ("budget", f"killed: {exc}")
                await self._kill()
                return
        except Exception as exc:  # a failed sub-call is the model's problem, not the host's
            reply = {"type": "response", "id": cid, "ok": False, "kind": "error"}
            reply["error"] = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(SandboxCrashed):
            await self._send(reply)

    async def execute(
        self, code: str, *, timeout_s: float | None = None, deadline: float | None = None
    ) -> CellResult:
        if not self.alive:
            raise SandboxCrashed("the worker is not running; restart the sandbox", reason="dead")
        cid = next(self._seq)
        started = time.monotonic()
        compute_left = timeout_s if timeout_s is not None else math.inf
        inflight: set[asyncio.Task[None]] = set()
        self._busy = True
        get_task: asyncio.Task[Any] = asyncio.create_task(self._inbox.get())
        try:
            await self._send({"type": "exec", "id": cid, "code": code})
            while True:
                now = time.monotonic()
                waits = [math.inf if inflight else compute_left]
                if deadline is not None:
                    waits.append(deadline - now)
                wait_s = max(0.0, min(waits))
                done, _ = await asyncio.wait(
                    {get_task, *inflight},
                    timeout=None if math.isinf(wait_s) else wait_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not inflight:  # time spent waiting on the host's sub-calls is not compute
                    compute_left -= time.monotonic() - now
                if not done:
                    over_deadline = deadline is not None and time.monotonic() >= deadline
                    reason = "run_timeout" if over_deadline else "cell_timeout"
                    detail = (
                        "the run's time limit was reached while the cell ran"
                        if over_deadline
                        else f"the cell ran longer than {timeout_s:g}s of compute time"
                    )
                    await self._kill()
                    return self._fatal(reason, detail, started)
                inflight -= done
                if get_task not in done:
                    continue
                msg = get_task.result()
                get_task = asyncio.create_task(self._inbox.get())
                if isinstance(msg, _Dead):
                    return self._fatal(msg.reason, msg.detail, started)
                kind = msg.get("type")
                if kind == "call":
                    inflight.add(asyncio.create_task(self._serve_call(msg)))
                elif kind == "result" and msg.get("id") == cid:
                    return CellResult(
                        stdout=msg["stdout"],
                        error=msg.get("error"),
                        final=msg.get("final"),
                        elapsed_s=time.monotonic() - started,
                        output_cut_chars=max(0, msg["stdout_chars"] - len(msg["stdout"])),
                    )
                else:
                    await self._kill()
                    return self._fatal(
                        "protocol", f"protocol violation: unexpected '{kind}' frame", started
                    )
        except SandboxCrashed:
            await self._kill()
            return self._fatal("crash", _exit_detail(self._proc and self._proc.returncode), started)
        except BaseException:
            # Cancelled (run timeout, Ctrl-C, client gone): the cell's state is unknown.
            await self._kill()
            raise
        finally:
            self._busy = False
            get_task.cancel()
            for task in inflight:
                task.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)

    def _fatal(self, reason: str, detail: str, started: float) -> CellResult:
        tail = self.stderr_tail()
        text = detail + (f"\n{tail[-2000:]}" if tail and reason == "crash" else "")
        return CellResult(
            error=text,
            fatal=True,
            fatal_reason=reason,
            elapsed_s=time.monotonic() - started,
        )
