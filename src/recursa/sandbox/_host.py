r"""The host half of every worker-process tier: spawn, frames, cells, sub-calls, restarts.

:class:`WorkerHost` runs a worker command (``python -I worker.py``, ``deno run ...``,
``docker run ...``) in its own session, talks the frame protocol over its stdin/stdout, and
turns what happens into :class:`~recursa.types.CellResult`\ s. Every frame goes through one
reader task: a frame that arrives while no request is outstanding (a thread the model left
running after its cell), an oversized frame, one the host cannot read for any reason, or one
frame too many held unanswered (``max_pending_frames``/``max_pending_bytes``) gets the worker
killed at once, and the next cell runs in a fresh one. Subclasses say what to run
(:meth:`_command`, :meth:`_worker_env`, :meth:`_init_message`) and may adjust the boot and
context frames.

One cell (:meth:`WorkerHost.execute`) is a few named steps: send ``exec``, then wait for the
result while serving sub-call frames and watching the run's deadline, ending the cell when its
compute time is spent. A cell's compute clock (``_cell.py``) is its wall time minus the time the
host spends running sub-call handlers, plus the worker's CPU time burnt while they ran (read
from ``/proc/<pid>/stat`` where the host can), so a cell cannot compute for free behind slow or
forged sub-calls. Replies the worker never reads count as compute time.

Tiers whose ``scratch/`` is on the host's disk watch its size (``scratch_limit_mb``,
``max_scratch_files``) every ``SCRATCH_POLL_S`` and kill a worker past it; the folder is
emptied and the run folder removed at shutdown by the iterative walker of ``_scratch.py``,
which never raises into the run.

Where a worker gets hardened: mostly not here. The host says what to apply in the ``init``
frame (``ProcessSandbox._init_message`` in ``process.py``: rlimits, the thread cap, the
Landlock paths), and the worker applies it to itself before any model code runs (``worker.py``:
``_apply_rlimits``, ``_cap_threads``, ``_die_with_host``, then ``harden.apply``, which sets
no-new-privs, ``landlock.restrict``, drops capabilities and ``seccomp.install``s its filter).
On the host side, ``ProcessSandbox._spawned`` moves each worker into a pids cgroup
(``_cgroup.py``), :meth:`WorkerHost._watch_scratch` below caps ``scratch/``,
``harden.protect_host`` makes the host non-dumpable, the docker tier adds the container's
limits (``docker.docker_command``) and the wasm tier Deno's permissions
(``wasm.deno_command``). ``isolation.py`` reports what took effect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from recursa.errors import ProtocolError, SandboxCrashed, SandboxStartError
from recursa.sandbox import isolation
from recursa.sandbox._cell import Cell, ComputeClock, Inbound
from recursa.sandbox._scratch import empty_dir, remove_tree, usage
from recursa.sandbox._support import Dead as _Dead
from recursa.sandbox._support import Loaded as _Loaded
from recursa.sandbox._support import exit_detail as _exit_detail
from recursa.sandbox._support import make_run_dir as _make_run_dir
from recursa.sandbox._support import refuse_all as _refuse_all
from recursa.sandbox._support import within
from recursa.sandbox._support import write_context_file as _write_context_file
from recursa.sandbox.base import CallHandler, CallRefused, SandboxConfig, SandboxWarning
from recursa.sandbox.protocol import encode_frame, read_frame_sized
from recursa.types import CellResult

__all__ = ["WorkerHost"]

_STDERR_TAIL = 8192
# A key no JSON object can hold: the size of a frame from the worker, until it is answered.
_BYTES = ("frame-bytes",)
SCRATCH_POLL_S = 0.5  # how often scratch/ is measured (longer when measuring takes long)
try:
    _CLK_TCK = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    _CLK_TCK = 100


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
        self._inbox: asyncio.Queue[Inbound] = asyncio.Queue()
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
        self._pending_frames = 0
        self._pending_bytes = 0
        self._replies: set[asyncio.Task[None]] = set()
        self._dead_reported = False
        self._scratch_task: asyncio.Task[None] | None = None
        self._scratch_lock = asyncio.Lock()

    # Whether this tier's scratch/ lies on the host's disk (watched and capped), and whether
    # the worker's CPU time can be read from /proc/<pid of the started command>/stat.
    scratch_on_host = False
    cpu_readable = False

    async def start(self) -> None:
        if self._root is None:
            self._root = await asyncio.to_thread(_make_run_dir, self.config.workdir)
        await self._spawn()
        if self.scratch_on_host and self._scratch_task is None and self._scratch_limited():
            self._scratch_task = asyncio.create_task(self._watch_scratch())

    # ---- what subclasses provide ----------------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _worker_env(self) -> dict[str, str]:
        raise NotImplementedError

    def _init_message(self) -> dict[str, Any]:
        raise NotImplementedError

    def isolation(self) -> dict[str, Any]:
        raise NotImplementedError

    async def _spawned(self, pid: int) -> None:
        """Called with the worker's pid right after it starts; runs while the worker boots and
        is awaited before the sandbox counts as started (before any cell)."""

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
        async with self._scratch_lock:  # never while scratch/ is being emptied
            await self._spawn_locked()

    async def _spawn_locked(self) -> None:
        self._dead = None
        self._dead_reported = False
        self._kill_reason = None
        self._busy = True
        self._inbox = asyncio.Queue()
        self._pending_frames = self._pending_bytes = 0
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
        confining = asyncio.create_task(self._spawned(self._proc.pid))
        self._reader_task = asyncio.create_task(self._read_loop(self._proc))
        self._stderr_task = asyncio.create_task(self._drain_stderr(self._proc))
        try:
            for frame in self._boot_frames():
                await self._send(frame)
            await self._send(self._init_message())
            ready = await self._expect("ready", self.config.start_timeout_s)
            # Confining the worker (a cgroup move can take milliseconds) ran while it booted;
            # no model code runs before this is done.
            await confining
        except SandboxCrashed as exc:
            await self._kill()
            raise SandboxStartError(
                f"the sandbox worker did not start: {exc}. {exc.stderr_tail}".strip()
            ) from exc
        finally:
            if not confining.done():
                confining.cancel()
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
        if self._scratch_task is not None:
            self._scratch_task.cancel()
            with contextlib.suppress(BaseException):
                await self._scratch_task
            self._scratch_task = None
        # Killed, not asked to exit: the worker holds nothing worth saving (its scratch folder
        # is removed below), and a polite exit runs the interpreter's teardown (tens of ms of
        # CPU, more with a large context) on the run's critical path.
        await self._kill()
        await self._released()
        if self._root is not None:
            root, self._root = self._root, None
            why = await asyncio.to_thread(remove_tree, root)
            if why is not None:
                warnings.warn(
                    f"the sandbox's run folder was not fully removed: {why}",
                    SandboxWarning,
                    stacklevel=2,
                )

    async def _released(self) -> None:
        """Called at shutdown once the worker is gone (subclasses free what they made)."""

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
        for task in (self._reader_task, self._stderr_task, *self._replies):
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
        cfg = self.config
        max_bytes = max(cfg.max_pending_bytes, 2 * (cfg.max_frame_bytes + 4))
        dead: _Dead
        try:
            while True:
                msg, size = await read_frame_sized(proc.stdout, cfg.max_frame_bytes, cfg.functions)
                if not self._busy:
                    raise ProtocolError(f"unsolicited '{msg.get('type')}' frame from the worker")
                self._pending_frames += 1
                self._pending_bytes += size
                msg[_BYTES] = size  # type: ignore[index]  # settled when answered
                if self._pending_frames > cfg.max_pending_frames or self._pending_bytes > max_bytes:
                    raise ProtocolError(
                        f"the worker has {self._pending_frames} frames "
                        f"({self._pending_bytes} bytes) the host has not answered yet (limit "
                        f"{cfg.max_pending_frames} frames, {max_bytes} bytes)"
                    )
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
        except Exception as exc:  # whatever a frame did to the reader, the cell must hear of it
            dead = _Dead(
                "protocol",
                f"protocol violation: the host could not read a frame ({type(exc).__name__}: "
                f"{exc}); the worker was killed",
            )
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

    def _settle(self, msg: dict[str, Any]) -> None:
        """A frame from the worker has been answered (or consumed): stop counting it."""
        size = msg.pop(_BYTES, 0)  # type: ignore[call-overload]
        if size:
            self._pending_frames -= 1
            self._pending_bytes -= size

    def _worker_cpu_s(self) -> float | None:
        """CPU seconds the worker process (all its threads) has used, where readable."""
        if not self.cpu_readable or self._proc is None or not sys.platform.startswith("linux"):
            return None
        try:
            with open(f"/proc/{self._proc.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
        except (OSError, IndexError, ValueError):
            return None

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
        self._settle(msg)
        if msg.get("type") != kind:
            await self._kill()
            raise SandboxCrashed(
                f"protocol violation: expected '{kind}', got '{msg.get('type')}'",
                reason="protocol",
            )
        return msg

    async def _request(
        self, msg: dict[str, Any], kind: str, timeout_s: float | None
    ) -> dict[str, Any]:
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
        """Run the handler; the reply goes out from a task of its own, so that a worker that
        does not read it stalls no handler and no compute clock (see :meth:`execute`)."""
        cid = msg["id"]
        reply: dict[str, Any] | None
        try:
            value = await self.on_call(msg["fn"], msg["args"])
            reply = {"type": "response", "id": cid, "ok": True, "value": value}
        except CallRefused as exc:
            reply = {"type": "response", "id": cid, "ok": False, "error": str(exc)}
            reply["kind"] = exc.kind
            if exc.kill:
                self._settle(msg)
                self._kill_reason = ("budget", f"killed: {exc}")
                await self._kill()
                return
        except Exception as exc:  # a failed sub-call is the model's problem, not the host's
            reply = {"type": "response", "id": cid, "ok": False, "kind": "error"}
            reply["error"] = f"{type(exc).__name__}: {exc}"
        except BaseException:
            self._settle(msg)
            raise
        proc = self._proc
        stdin = proc.stdin if proc is not None else None
        if stdin is not None and not self._write_lock.locked() and not stdin.is_closing():
            transport = stdin.transport
            if transport.get_write_buffer_size() == 0:
                stdin.write(encode_frame(reply))  # straight into the pipe when it has room
                if transport.get_write_buffer_size() == 0:
                    self._settle(msg)
                    return
                reply = None  # the rest is buffered: drain it in a task
        task = asyncio.create_task(self._send_reply(msg, reply))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _send_reply(self, msg: dict[str, Any], reply: dict[str, Any] | None) -> None:
        """Send ``reply`` (or, with None, wait until what was written is flushed), then stop
        counting the frame it answers."""
        try:
            with contextlib.suppress(SandboxCrashed):
                if reply is not None:
                    await self._send(reply)
                elif self._proc is not None and self._proc.stdin is not None:
                    async with self._write_lock:
                        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                            await self._proc.stdin.drain()
        finally:
            self._settle(msg)

    # ---- one cell -------------------------------------------------------------------------------
    async def execute(
        self, code: str, *, timeout_s: float | None = None, deadline: float | None = None
    ) -> CellResult:
        """Run one cell in the worker.

        :meth:`_send_exec` hands the cell over; :meth:`_await_result` serves its sub-calls until
        its ``result`` frame comes (:func:`_cell_result`), charging compute time and watching the
        run's ``deadline``. Whatever else ends the cell (its compute time spent, the deadline, a
        dead or misbehaving worker) comes back as a fatal result (:meth:`_fatal`), the worker
        killed if it still ran; only a cancellation propagates, after the worker is killed.
        """
        if not self.alive:
            return await self._report_dead_worker()
        now = time.monotonic()
        cell = Cell(
            id=next(self._seq),
            started=now,
            timeout_s=timeout_s,
            deadline=deadline,
            clock=ComputeClock(timeout_s, now),
            next_frame=asyncio.create_task(self._inbox.get()),
        )
        self._busy = True
        try:
            not_taken = await self._send_exec(cell, code)
            return not_taken if not_taken is not None else await self._await_result(cell)
        except SandboxCrashed:
            await self._kill()
            returncode = self._proc.returncode if self._proc is not None else None
            return self._fatal("crash", _exit_detail(returncode), cell.started)
        except BaseException:
            # Cancelled (run timeout, Ctrl-C, client gone): the cell's state is unknown.
            await self._kill()
            raise
        finally:
            self._end_cell(cell)
            if cell.serving:  # cancelled above: wait until they have stopped
                await asyncio.gather(*cell.serving, return_exceptions=True)

    async def _report_dead_worker(self) -> CellResult:
        """The worker was killed between cells (a late thread's frame, scratch/ over its
        limit...): the first cell after that hears of it as a fatal result, and the caller
        restarts as for any crash; a cell after that one raises SandboxCrashed."""
        dead = self._dead
        if dead is not None and not self._dead_reported:
            await self._scratch_emptied()
            return self._fatal(dead.reason, dead.detail, time.monotonic())
        raise SandboxCrashed("the worker is not running; restart the sandbox", reason="dead")

    async def _send_exec(self, cell: Cell, code: str) -> CellResult | None:
        """Send the ``exec`` frame. Waits (for the worker to read it) no longer than the cell's
        compute time or the run's deadline: a worker that does not even read its input is
        killed, and the fatal ``cell_timeout`` result is returned (None once the cell is sent)."""
        limits = [cell.clock.left]
        if cell.deadline is not None:
            limits.append(cell.deadline - cell.started)
        send_s = max(0.0, min(limits))
        sending = self._send({"type": "exec", "id": cell.id, "code": code})
        try:
            await (sending if math.isinf(send_s) else within(sending, send_s))
        except TimeoutError:
            return await self._end_fatally(cell, "cell_timeout", "the worker did not take the cell")
        return None

    async def _await_result(self, cell: Cell) -> CellResult:
        """Wait for the cell's ``result`` frame, serving the sub-calls it makes meanwhile.

        Every round charges the worker's CPU time (:meth:`_charge_worker_cpu`) and ends the cell
        (``cell_timeout``) once its compute time is spent, then waits for a frame or a handler
        (:meth:`_wait_for_worker`). A wait that saw nothing happen ends the cell at the run's
        deadline (``run_timeout``). A sub-call frame is served (:meth:`_start_call`) and the
        cell's result ends it; anything else goes to :meth:`_on_frame`.
        """
        clock = cell.clock
        while True:
            now = time.monotonic()
            if clock.reading_cpu:  # only once a sub-call has run: most cells make none
                self._charge_worker_cpu(clock, now)
            if clock.spent:
                detail = (
                    f"the cell ran longer than {cell.timeout_s:g}s of compute time "
                    "(CPU used while sub-calls ran included)"
                )
                return await self._end_fatally(cell, "cell_timeout", detail)
            done = await self._wait_for_worker(cell, now)
            if not done:
                if cell.deadline is not None and time.monotonic() >= cell.deadline:
                    detail = "the run's time limit was reached while the cell ran"
                    return await self._end_fatally(cell, "run_timeout", detail)
                continue  # out of compute time (checked above), or time to read the CPU
            cell.serving -= done
            if cell.next_frame not in done:
                continue  # only handlers finished
            msg = cell.next_frame.result()
            cell.next_frame = asyncio.create_task(self._inbox.get())
            # The two frames every cell sees are handled here, without a coroutine of their
            # own (this loop is on every cell's path); anything else ends the cell.
            if isinstance(msg, dict):
                kind = msg.get("type")
                if kind == "call":
                    self._start_call(cell, msg)
                    continue
                if kind == "result" and msg.get("id") == cell.id:
                    self._settle(msg)
                    return _cell_result(msg, cell.started)
            return await self._on_frame(cell, msg)

    def _charge_worker_cpu(self, clock: ComputeClock, now: float) -> None:
        """Charge the CPU the worker burnt while sub-call handlers ran (read from /proc every
        ``CPU_POLL_S`` while they run), so that a cell cannot compute for free behind slow or
        forged sub-calls."""
        if clock.cpu_due(now):
            cpu = self._worker_cpu_s()
            if cpu is not None:
                clock.charge_cpu(cpu, now)

    async def _wait_for_worker(self, cell: Cell, now: float) -> set[asyncio.Task[Any]]:
        """Wait for the next frame from the worker or for a sub-call handler to finish, but no
        longer than until the clock must be looked at again (compute time spent, CPU reading
        due) or the run's deadline; return what finished (nothing: the wait ran out). The time
        waited is charged to the cell's clock."""
        serving = bool(cell.serving)
        wait_s = cell.clock.wait_s(serving=serving)
        if cell.deadline is not None:
            wait_s = min(wait_s, cell.deadline - now)
        wait_s = max(0.0, wait_s)
        done, _ = await asyncio.wait(
            {cell.next_frame, *cell.serving},
            timeout=None if math.isinf(wait_s) else wait_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        cell.clock.count(time.monotonic() - now, serving=serving)
        return done

    async def _on_frame(self, cell: Cell, msg: Inbound) -> CellResult:
        """What ends a cell besides its result (which :meth:`_await_result` takes, as it
        serves sub-calls): word that the worker died, or any other frame (a protocol violation:
        the worker is killed); either way a fatal result."""
        if isinstance(msg, _Dead):
            if msg.reason == "disk":
                await self._scratch_emptied()
            return self._fatal(msg.reason, msg.detail, cell.started)
        kind = msg.get("type")
        self._settle(msg)
        detail = f"protocol violation: unexpected '{kind}' frame"
        return await self._end_fatally(cell, "protocol", detail)

    def _start_call(self, cell: Cell, msg: dict[str, Any]) -> None:
        """Serve a sub-call in a task of its own (the cell may make several at once). The
        cell's first sub-call takes the first reading of the worker's CPU time."""
        if not cell.clock.reading_cpu and self.cpu_readable:
            cell.clock.start_reading_cpu(self._worker_cpu_s(), time.monotonic())
        cell.serving.add(asyncio.create_task(self._serve_call(msg)))

    async def _scratch_emptied(self) -> None:
        """Wait until the scratch watcher has emptied scratch/ (it holds the lock while it
        kills the worker and empties the folder), so that a cell told its worker was killed
        for scratch/ is told so only once a fresh worker would find the folder clean."""
        async with self._scratch_lock:
            pass

    async def _end_fatally(self, cell: Cell, reason: str, detail: str) -> CellResult:
        """Kill the worker (the cell's state is unknown) and say why in a fatal result."""
        await self._kill()
        return self._fatal(reason, detail, cell.started)

    def _end_cell(self, cell: Cell) -> None:
        """However the cell ended: stop reading the inbox and cancel the sub-calls and the
        replies still in flight (their answers would go to no one)."""
        self._busy = False
        cell.next_frame.cancel()
        for task in (*cell.serving, *self._replies):
            task.cancel()

    # ---- scratch/ on the host's disk ------------------------------------------------------------
    def _scratch_limited(self) -> bool:
        cfg = self.config
        return cfg.scratch_limit_mb is not None or cfg.max_scratch_files is not None

    async def _watch_scratch(self) -> None:
        """Measure scratch/ while the worker lives; past a limit, kill it and empty the folder
        (the next cell runs in a fresh worker and learns why)."""
        cfg = self.config
        max_bytes = None if cfg.scratch_limit_mb is None else cfg.scratch_limit_mb * 1024 * 1024
        interval = SCRATCH_POLL_S
        while True:
            await asyncio.sleep(interval)
            if not self.alive or self._root is None:
                continue
            t0 = time.monotonic()
            used = await asyncio.to_thread(
                usage, self.scratch, max_bytes=max_bytes, max_entries=cfg.max_scratch_files
            )
            interval = max(SCRATCH_POLL_S, 10 * (time.monotonic() - t0))
            if not used.stopped or not self.alive:
                continue
            if used.unreadable:
                why = "it holds a folder the host cannot open (its rights were taken away)"
            elif max_bytes is not None and used.bytes > max_bytes:
                why = f"it grew past {cfg.scratch_limit_mb} MB"
            elif cfg.max_scratch_files is not None and used.entries > cfg.max_scratch_files:
                why = f"it holds more than {cfg.max_scratch_files} files and folders"
            else:
                why = "its folders are nested too deeply to measure"
            async with self._scratch_lock:
                self._kill_reason = (
                    "disk",
                    f"the worker was killed because its scratch folder broke its limits: {why}. "
                    "The folder was emptied; a fresh worker has the context but no files or "
                    "variables from before.",
                )
                await self._kill()
                problem = await asyncio.to_thread(empty_dir, self.scratch)
            if problem is not None:
                warnings.warn(
                    f"the sandbox could not empty its scratch folder: {problem}",
                    SandboxWarning,
                    stacklevel=1,
                )

    def _fatal(self, reason: str, detail: str, started: float) -> CellResult:
        self._dead_reported = True  # a cell has been told; the next call must restart first
        tail = self.stderr_tail()
        text = detail + (f"\n{tail[-2000:]}" if tail and reason == "crash" else "")
        return CellResult(
            error=text,
            fatal=True,
            fatal_reason=reason,
            elapsed_s=time.monotonic() - started,
        )


def _cell_result(msg: dict[str, Any], started: float) -> CellResult:
    """The CellResult a ``result`` frame describes (``stdout`` was cut to the output cap in the
    worker; ``stdout_chars`` says how long it was)."""
    return CellResult(
        stdout=msg["stdout"],
        error=msg.get("error"),
        final=msg.get("final"),
        elapsed_s=time.monotonic() - started,
        output_cut_chars=max(0, msg["stdout_chars"] - len(msg["stdout"])),
    )
