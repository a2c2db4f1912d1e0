"""The REPL server that runs inside every sandbox. Standard library only, one file, no recursa
imports: it is started as ``python -I worker.py`` and must also run unchanged inside other
isolation tiers (WebAssembly, containers).

Protocol: each frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON
(an object with a ``type``). Never pickle: the host must be able to check every message.

    host -> worker: init, exec, set_var, load_var, get_var, response, shutdown
    worker -> host: ready, result, call, var

The worker keeps the protocol on private duplicates of fds 0 and 1; fd 0 becomes /dev/null and
fd 1 is pointed at fd 2 (a pipe the host drains), so nothing model code writes to the raw file
descriptors can forge a frame. Python-level output (print, sys.stdout, sys.stderr) is captured
per cell with a cap.
"""

from __future__ import annotations

import ast
import io
import itertools
import json
import keyword
import os
import re
import struct
import sys
import threading
import time
import traceback

# Types for the checker only: importing `typing` would cost every worker start ~5 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    JSON = dict[str, Any]  # one frame, or the arguments of a call
    Call = Callable[[str, JSON], Any]

_HEADER = struct.Struct(">I")
_REPL_FILENAME = "<repl>"


class LLMQueryError(RuntimeError):
    """A sub-call failed; the message says why."""


class BudgetExhaustedError(RuntimeError):
    """The run's budget (calls, tokens, cost or time) is used up: no more sub-calls."""


class ToolError(RuntimeError):
    """A tool (a function the application runs on the host) failed, refused its arguments or
    timed out; the message names the tool and says why (with the tool's own error type)."""


# ---- output capture ---------------------------------------------------------------------------


class CappedWriter(io.TextIOBase):
    """A text stream that keeps the first ``cap`` characters and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.kept = 0
        self.total = 0
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, s: Any) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with self._lock:
            self.total += len(s)
            room = self.cap - self.kept
            if room > 0:
                piece = s[:room]
                self.parts.append(piece)
                self.kept += len(piece)
        return len(s)

    def flush(self) -> None:
        return None

    def getvalue(self) -> str:
        return "".join(self.parts)


# ---- the REPL -------------------------------------------------------------------------------


def _describe(value: object) -> str:
    """A one-line summary of a variable for SHOW_VARS."""
    kind = type(value).__name__
    try:
        size = len(value)  # type: ignore[arg-type]  # anything sized; the rest fails below
    except Exception:
        return kind
    return f"{kind}, len {size}"


class Repl:
    """A persistent namespace that runs cells and bridges sub-calls through ``call``.

    ``call(fn, args)`` sends a request to the host and returns its value, or raises
    :class:`LLMQueryError` / :class:`BudgetExhaustedError`.
    """

    def __init__(
        self, call: Call, max_output_chars: int = 100_000, functions: Iterable[JSON] = ()
    ) -> None:
        self._call = call
        self.max_output_chars = max_output_chars
        self.namespace: JSON = {"__name__": "__repl__", "__builtins__": __builtins__}
        self.final: str | None = None
        self._builtins = self._make_builtins()
        for spec in functions:  # the host's function table, from the init frame
            self._builtins[spec["name"]] = host_function(call, spec)
        self.namespace.update(self._builtins)
        # Refined across turns; setting "ready" to True ends the run with "content" (and the
        # content is the partial answer if a limit stops the run first).
        self.namespace["answer"] = {"content": "", "ready": False}

    # -- functions the model's code calls (besides the host's) --
    def _make_builtins(self) -> dict[str, Callable[..., Any]]:
        def FINAL(value: object) -> None:
            """End the run with `value` as the answer."""
            self.final = value if isinstance(value, str) else _to_text(value)

        def FINAL_VAR(name: object) -> None:
            """End the run with the variable named `name` as the answer."""
            if isinstance(name, str):
                if name not in self.namespace:
                    raise NameError(f"FINAL_VAR: no variable named {name!r}")
                value = self.namespace[name]
            else:
                value = name
            self.final = value if isinstance(value, str) else _to_text(value)

        def SHOW_VARS() -> dict[str, str]:
            """Print and return the variables defined so far (name -> type and size)."""
            found = {
                k: _describe(v)
                for k, v in self.namespace.items()
                if not k.startswith("_") and k not in self._builtins
            }
            for k, v in found.items():
                print(f"{k}: {v}")
            return found

        return {
            "FINAL": FINAL,
            "FINAL_VAR": FINAL_VAR,
            "SHOW_VARS": SHOW_VARS,
            "ToolError": ToolError,  # so that model code can catch what a tool raised
            **HELPERS,
        }

    def restore_builtins(self) -> None:
        """Names the model's code gets are put back after every cell it overwrote them in."""
        for name in self._builtins:
            if self.namespace.get(name) is not self._builtins[name]:
                self.namespace[name] = self._builtins[name]

    def set_var(self, name: str, value: Any) -> None:
        self.namespace[name] = value

    def _compile(self, code: str) -> tuple[Any, Any]:
        """Compile like a notebook cell: a trailing expression's value is printed."""
        tree = ast.parse(code, filename=_REPL_FILENAME, mode="exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body[-1].value)
            tree.body.pop()
        body = compile(tree, _REPL_FILENAME, "exec")
        tail = compile(last, _REPL_FILENAME, "eval") if last is not None else None
        return body, tail

    def run_cell(self, code: str) -> JSON:
        """Run one cell; return stdout, error text and the final answer if one was given."""
        self.final = None
        out = CappedWriter(self.max_output_chars)
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = out
        error = None
        started = time.perf_counter()
        try:
            body, tail = self._compile(code)
            exec(body, self.namespace)
            if tail is not None:
                value = eval(tail, self.namespace)
                if value is not None:
                    print(repr(value))
        except BaseException as exc:  # SystemExit and KeyboardInterrupt from model code too
            error = _format_exception(exc)
        finally:
            sys.stdout, sys.stderr = saved
        self.restore_builtins()
        final = self.final
        if final is None:
            final = _answer_dict(self.namespace.get("answer"))
        return {
            "stdout": out.getvalue(),
            "stdout_chars": out.total,
            "error": error,
            "final": final,
            "elapsed": time.perf_counter() - started,
        }


def _jsonable(
    value: object, what: str = "rlm_query context", kinds: str = "str, list or dict"
) -> Any:
    """Values sent to the host (a child RLM's context, a tool's arguments) must survive JSON:
    str, numbers, lists, dicts of str keys."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, what, kinds) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, what, kinds) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(
        f"{what} must be {kinds} (got {type(value).__name__}); convert it first, e.g. with str()"
    )


class _Omitted:
    """The default of a tool's optional parameter in the worker: left out of the call frame,
    so the host applies the tool's own default."""

    def __repr__(self) -> str:
        return "<default>"


_OMITTED = _Omitted()
_JSON_KINDS = "a JSON value: str, int, float, bool, None, or a list or dict of them"


def host_function(call: Call, spec: JSON) -> Callable[..., Any]:
    """A Python function for one entry of the host's function table (see
    ``recursa/sandbox/functions.py``): a real signature (so a bad call is the usual TypeError),
    each argument converted by its kind, and one ``call`` frame sent through ``call(name, args)``.

    The function is compiled from its signature (``inspect`` would cost every worker start
    some 15 ms); the names come from the host, which checks them here all the same."""
    name, params, batch = str(spec["name"]), list(spec["params"]), bool(spec.get("batch"))
    names = [str(p["name"]) for p in params]
    if not all(n.isidentifier() and not keyword.iskeyword(n) for n in (name, *names)):
        raise ValueError(f"host function {name!r}: bad names in its table entry")
    base = name.removesuffix("_batched")
    lists = [p for p in params if p["kind"] in ("texts", "jsons")]

    # How an argument is named in an error ("rlm_query context"), worked out once.
    whats = {n: f"{base} {n.removesuffix('s') if batch else n}" for n in names}
    whats.update(
        {str(p["name"]): f"{name}() argument {p['name']!r}" for p in params if p["kind"] == "value"}
    )

    def convert(p: JSON, value: Any) -> Any:
        kind, what = p["kind"], whats[p["name"]]
        if kind == "value":
            return _jsonable(value, what, _JSON_KINDS)
        if kind == "text":
            return None if value is None and not p.get("required") else str(value)
        if kind == "json":
            return _jsonable(value, what)
        if kind in ("texts", "jsons") and value is not None:
            if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
                raise TypeError(
                    f"{name}: {p['name']} must be a list, not {type(value).__name__} "
                    "(split a text first, e.g. split_lines(text) or split_chunks(text))"
                )
            value = list(value)
        if kind == "texts":
            return [str(v) for v in value]
        if kind == "jsons":
            return None if value is None else [_jsonable(v, what) for v in value]
        return value  # "model": checked by the host

    result, select = spec.get("result") or "", spec.get("select") or ""

    def send(values: JSON) -> Any:
        if select:  # the caller's own objects come back, so materialise them once
            if _is_list_like(values[select]):
                values[select] = list(values[select])
        payload = {
            p["name"]: convert(p, values[p["name"]])
            for p in params
            if values[p["name"]] is not _OMITTED
        }
        if batch:
            first = lists[0]["name"]
            n = len(payload[first])
            for p in lists[1:]:
                if payload[p["name"]] is None:
                    payload[p["name"]] = [None] * n
                elif len(payload[p["name"]]) != n:
                    raise ValueError(f"{name}: {first} and {p['name']} differ in length")
            if not n:
                return []
        value = call(name, payload)
        if result == "values":
            if not isinstance(value, dict) or not isinstance(value.get("values"), list):
                raise RuntimeError(f"protocol: {name} got a malformed reply from the host")
            if value.get("note"):
                print(value["note"])
            value = value["values"]
        if select:
            return [item for item, keep in zip(values[select], value) if keep is True]
        return value

    signature, optional, star = [], False, False
    for n, p in zip(names, params, strict=True):
        if p.get("keyword") and not star:
            signature.append("*")
            star = True
        if p.get("required") and optional and not star:
            raise ValueError(
                f"host function {name!r}: a required parameter follows an optional one"
            )
        optional = optional or not p.get("required")
        default = "_OMITTED" if p["kind"] == "value" else "None"
        signature.append(n if p.get("required") else f"{n}={default}")
    source = (
        f"def {name}({', '.join(signature)}):\n"
        f"    return _send({{{', '.join(f'{n!r}: {n}' for n in names)}}})\n"
    )
    scope: JSON = {"_send": send, "_OMITTED": _OMITTED}
    exec(compile(source, f"<host function {name}>", "exec"), scope)
    function: Callable[..., Any] = scope[name]
    function.__doc__ = spec.get("doc")
    return function


def _is_list_like(value: object) -> bool:
    return hasattr(value, "__iter__") and not isinstance(value, (str, bytes, dict))


# ---- plain helpers the REPL offers beside the host's functions -----------------------------------
def split_lines(text: object) -> list[str]:
    """The non-empty lines of `text` (a list of texts: the lines of each, in order)."""
    if _is_list_like(text):
        return [line for part in text for line in split_lines(part)]  # type: ignore[attr-defined]
    return [line.rstrip() for line in str(text).splitlines() if line.strip()]


def split_records(text: object, separator: str = "") -> list[str]:
    """Records of `text`: blocks separated by blank lines, or by `separator` when given (a
    regular expression, e.g. r"\n(?=Ticket #)"). Empty records are left out."""
    if _is_list_like(text):
        return [r for part in text for r in split_records(part, separator)]  # type: ignore[attr-defined]
    pattern = separator or r"\n\s*\n"
    return [r.strip() for r in re.split(pattern, str(text)) if r.strip()]


def split_chunks(text: object, size: int = 8000) -> list[str]:
    """`text` in pieces of about `size` characters, cut at line ends (a longer line is cut)."""
    if size < 1:
        raise ValueError("split_chunks: size must be at least 1")
    if _is_list_like(text):
        text = "\n".join(str(t) for t in text)  # type: ignore[attr-defined]
    chunks: list[str] = []
    current: list[str] = []
    length = 0
    for line in str(text).splitlines(keepends=True):
        while len(line) > size:
            if current:
                chunks.append("".join(current))
                current, length = [], 0
            chunks.append(line[:size])
            line = line[size:]
        if current and length + len(line) > size:
            chunks.append("".join(current))
            current, length = [], 0
        current.append(line)
        length += len(line)
    if current:
        chunks.append("".join(current))
    return chunks


HELPERS = {"split_lines": split_lines, "split_records": split_records, "split_chunks": split_chunks}


def _to_text(value: object) -> str:
    if isinstance(value, (list, dict, tuple)):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            pass
    return str(value)


def _answer_dict(answer: object) -> str | None:
    if isinstance(answer, dict) and answer.get("ready") is True:
        content = answer.get("content", "")
        return content if isinstance(content, str) else _to_text(content)
    return None


def _format_exception(exc: BaseException) -> str:
    """The traceback from the model's own code down, without the worker's frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != _REPL_FILENAME:
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    text = "".join(lines).rstrip()
    # A SyntaxError has no <repl> frame; keep its useful caret lines.
    return text if len(text) <= 8000 else text[:4000] + "\n...\n" + text[-4000:]


# ---- framing and the main loop ----------------------------------------------------------------


class FrameChannel:
    """Blocking length-prefixed JSON frames over two file descriptors."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.write_lock = threading.Lock()

    def _read_chunk(self, n: int) -> bytes:
        return os.read(self.fd_in, n)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd_out, view)
            view = view[written:]

    def _read_exact(self, n: int) -> bytes:
        chunks: list[bytes] = []
        while n:
            chunk = self._read_chunk(min(n, 1 << 20))
            if not chunk:
                raise EOFError("host closed the channel")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> JSON:
        (size,) = _HEADER.unpack(self._read_exact(_HEADER.size))
        msg: JSON = json.loads(self._read_exact(size))
        return msg

    def send(self, msg: JSON) -> None:
        # Lone surrogates (from undecodable input) become "?": the host only accepts valid UTF-8.
        body = json.dumps(msg, ensure_ascii=False).encode("utf-8", errors="replace")
        with self.write_lock:
            self._write_all(_HEADER.pack(len(body)) + body)


class CallbackChannel(FrameChannel):
    """Frames over two blocking callables instead of file descriptors (the WebAssembly tier,
    where the runner hands Python a synchronous read of its stdin and a write to its stdout)."""

    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], None]) -> None:
        super().__init__(-1, -1)
        self._read = read
        self._write = write

    def _read_chunk(self, n: int) -> bytes:
        return self._read(n)

    def _write_all(self, data: bytes) -> None:
        self._write(data)


def _apply_rlimits(limits: JSON) -> list[str]:
    """Apply resource limits to this process; return the names of those that took."""
    applied: list[str] = []
    try:
        import resource
    except ImportError:  # not on this platform
        return applied
    table = {
        "address_space": "RLIMIT_AS",
        "file_size": "RLIMIT_FSIZE",
        "open_files": "RLIMIT_NOFILE",
        "core": "RLIMIT_CORE",
    }
    for key, rname in table.items():
        value = limits.get(key)
        res = getattr(resource, rname, None)
        if value is None or res is None:
            continue
        try:
            _soft, hard = resource.getrlimit(res)
            value = int(value)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(res, (value, value))
            applied.append(key)
        except (ValueError, OSError):
            pass
    return applied


def _die_with_host(host_pid: int) -> list[str]:
    """Have Linux SIGKILL this worker when the host that started it dies (PR_SET_PDEATHSIG),
    so a host killed mid-cell does not leave a worker running on its own."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
            return []
    except (OSError, AttributeError, ImportError):
        return []
    if os.getppid() != host_pid:  # the host died before the request took effect
        os._exit(0)
    return ["die-with-host"]


def _watch_host(host_pid: int, interval_s: float = 0.5) -> None:
    """A daemon thread that ends the worker once its host is gone (its parent changed).

    A second line behind PR_SET_PDEATHSIG, which the seccomp filter keeps model code from
    clearing: this one lives in the interpreter, so code that holds the GIL for long (or digs
    out and breaks this thread) delays it; the kernel's signal does not depend on it."""
    getppid, sleep, exit_now = os.getppid, time.sleep, os._exit

    def watch() -> None:
        while getppid() == host_pid:
            sleep(interval_s)
        exit_now(0)

    import _thread

    _thread.start_new_thread(watch, ())  # not threading.Thread: start() waits for the thread


def _user_tasks(uid: int) -> int:
    """Threads of all processes whose real uid is ``uid`` (what RLIMIT_NPROC counts)."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read()
            uid_line = status.split(b"\nUid:", 1)[1].split(None, 1)[0]
            if int(uid_line) == uid:
                total += int(status.split(b"\nThreads:", 1)[1].split(None, 1)[0])
        except (OSError, IndexError, ValueError):
            continue
    return total


def _cap_threads(limit: int, *, nproc: bool = True) -> list[str]:
    """Cap the threads model code can start at ``limit`` (the worker's own included).

    Two layers. In the interpreter, ``_thread``'s start functions (and threading's copies of
    them) refuse past the cap with the usual ``RuntimeError: can't start new thread``; model
    code can get around this (ctypes, a fresh ``_thread`` module), so it only stops honest
    mistakes. In the kernel, for a worker that is not root, RLIMIT_NPROC is set to the threads
    its user runs now plus ``limit``. RLIMIT_NPROC does not bind root; the host then puts the
    worker in a pids cgroup where it can make one (see ``_host.py``)."""
    import _thread

    applied: list[str] = []
    lock = _thread.allocate_lock()
    live = [1]  # the main thread

    def capped(start: Callable[..., Any]) -> Callable[..., Any]:
        def start_capped(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            with lock:
                if live[0] >= limit:
                    raise RuntimeError(f"can't start new thread: the sandbox allows {limit}")
                live[0] += 1

            def run(*a: Any, **kw: Any) -> Any:
                try:
                    return function(*a, **kw)
                finally:
                    with lock:
                        live[0] -= 1

            try:
                return start(run, *args, **kwargs)
            except BaseException:
                with lock:
                    live[0] -= 1
                raise

        return start_capped

    for name in ("start_new_thread", "start_new", "start_joinable_thread"):
        original = getattr(_thread, name, None)
        if original is not None:
            setattr(_thread, name, capped(original))
    for name in ("_start_new_thread", "_start_joinable_thread"):
        if hasattr(threading, name):
            original = getattr(_thread, name.lstrip("_"), None)
            if original is not None:
                setattr(threading, name, original)
    applied.append(f"thread-cap:{limit}")
    if nproc and sys.platform.startswith("linux") and os.geteuid() != 0:
        try:
            import resource

            tasks = _user_tasks(os.getuid()) + limit
            _soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
            if hard != resource.RLIM_INFINITY:
                tasks = min(tasks, hard)
            resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))
            applied.append("nproc")
        except (ImportError, OSError, ValueError):
            pass
    return applied


def _apply_hardening(options: JSON, scratch: str) -> list[str]:
    """Extra protections installed by stronger tiers (seccomp, Landlock). Stub-free: a tier
    that wants them passes a module path in ``options['module']`` exposing ``apply(options)``
    returning the names of the protections applied."""
    module = options.get("module") if options else None
    if not module:
        return []
    import importlib.util

    spec = importlib.util.spec_from_file_location("_recursa_harden", module)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load hardening module {module}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return list(mod.apply(dict(options, scratch=scratch)))


class Worker:
    """Serves one host over a :class:`FrameChannel`."""

    def __init__(self, channel: FrameChannel) -> None:
        self.channel = channel
        self._seq = itertools.count(1)
        self._call_lock = threading.Lock()
        self.repl: Repl | None = None
        self._budget_gone = False

    def call(self, fn: str, args: JSON) -> Any:
        """Send a sub-call request to the host and block for its response."""
        if self._budget_gone:
            raise BudgetExhaustedError("the run's budget is used up; no more sub-calls")
        with self._call_lock:
            cid = next(self._seq)
            self.channel.send({"type": "call", "id": cid, "fn": fn, "args": args})
            msg = self.channel.recv()
        if msg.get("type") != "response" or msg.get("id") != cid:
            raise RuntimeError(f"protocol: expected response {cid}, got {msg.get('type')}")
        if msg.get("ok"):
            return msg.get("value")
        if msg.get("kind") == "budget":
            self._budget_gone = True
            raise BudgetExhaustedError(msg.get("error") or "budget exhausted")
        if msg.get("kind") == "tool":
            raise ToolError(msg.get("error") or f"{fn} failed")
        raise LLMQueryError(msg.get("error") or "sub-call failed")

    def handle_init(self, msg: JSON) -> JSON:
        scratch = msg.get("scratch") or os.getcwd()
        os.makedirs(scratch, exist_ok=True)  # exists already, except in an in-memory file system
        os.chdir(scratch)
        applied = _apply_rlimits(msg.get("rlimits") or {})
        if msg.get("max_threads"):
            applied += _cap_threads(int(msg["max_threads"]), nproc=bool(msg.get("thread_nproc")))
        host_pid = int(msg.get("host_pid") or 0)
        if host_pid:
            applied += _die_with_host(host_pid)
        started = time.perf_counter()
        applied += _apply_hardening(msg.get("hardening") or {}, scratch)
        hardening_s = time.perf_counter() - started
        if "die-with-host" in applied:
            _watch_host(host_pid)  # after hardening, which needs a single-threaded worker
        self.repl = Repl(
            self.call, int(msg.get("max_output_chars") or 100_000), msg.get("functions") or ()
        )
        return {
            "type": "ready",
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "protections": applied,
            "hardening_s": hardening_s,
        }

    def handle(self, msg: JSON) -> JSON | None:
        kind = msg.get("type")
        repl = self.repl
        if kind == "init":
            return self.handle_init(msg)
        if repl is None:
            raise RuntimeError("protocol: init must come first")
        if kind == "exec":
            self._budget_gone = False
            result = repl.run_cell(str(msg.get("code", "")))
            result.update(type="result", id=msg.get("id"))
            return result
        if kind == "set_var":
            repl.set_var(str(msg["name"]), msg.get("value"))
            return {"type": "var", "name": msg["name"], "found": True, "value": None}
        if kind == "load_var":
            value = _load_value(msg)
            repl.set_var(str(msg["name"]), value)
            if msg.get("alias_parts") and isinstance(value, list):
                for i, part in enumerate(value):
                    repl.set_var(f"{msg['name']}_{i}", part)
            return {"type": "var", "name": msg["name"], "found": True, "value": None}
        if kind == "get_var":
            name = str(msg.get("name"))
            found = name in repl.namespace
            value = _to_text(repl.namespace[name]) if found else None
            return {"type": "var", "name": name, "found": found, "value": value}
        if kind == "shutdown":
            raise SystemExit(0)
        raise RuntimeError(f"protocol: unknown message type {kind!r}")

    def serve(self) -> None:
        while True:
            try:
                msg = self.channel.recv()
            except EOFError:
                return
            reply = self.handle(msg)
            if reply is not None:
                self.channel.send(reply)


def _load_value(msg: JSON) -> Any:
    """A context value from a file the host wrote (``path``), or sent inline (``data``) by
    tiers whose worker cannot see the host's files."""
    fmt = msg.get("format", "text")
    if "data" in msg:
        text = msg["data"]
    else:
        # surrogatepass round-trips any Python str the host wrote, lone surrogates included.
        with open(msg["path"], encoding="utf-8", errors="surrogatepass") as f:
            text = f.read()
    return json.loads(text) if fmt == "json" else text


def main() -> None:
    import faulthandler

    faulthandler.enable()  # a segfault's Python traceback reaches the host's crash report
    # Keep the protocol on private fds; make 0 harmless and send raw writes to 1 into fd 2.
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)
    Worker(FrameChannel(fd_in, fd_out)).serve()


def serve_js() -> None:
    """Entry point under Pyodide (the WebAssembly tier): ``wasm_runner.mjs`` registers a
    ``_recursa_io`` module whose ``read(n)`` blocks on the runner's stdin and whose
    ``write(data)`` writes to its stdout."""
    import _recursa_io  # provided by the runner, only under Pyodide
    from pyodide.ffi import to_js

    channel = CallbackChannel(
        lambda n: _recursa_io.read(n).to_bytes(), lambda data: _recursa_io.write(to_js(data))
    )
    sys.stdin = open(os.devnull)
    try:
        Worker(channel).serve()
    except SystemExit:
        pass


if __name__ == "__main__":
    main()
