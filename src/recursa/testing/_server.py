"""The fake LLM server itself: a threading HTTP server and its request handling.

See :mod:`recursa.testing.fake_server` for how to use it. Standard library only.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from recursa.testing._wire import (
    Fault,
    Messages,
    RecordedRequest,
    anthropic_body,
    error_body,
    fault_headers,
    model_entry,
    no_content_body,
    normalise_messages,
    openai_body,
    refusal,
    route,
)

__all__ = ["FakeLLMServer", "Responder"]

Responder = Callable[[Messages], str]


@dataclass
class _Injection:
    fault: Fault
    pattern: re.Pattern[str] | None
    remaining: int | None  # None: forever


def _echo(messages: Messages) -> str:
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return f"fake reply to: {' '.join(last.split())[:200]}"


def _shut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the other side
        pass


def _send(
    h: BaseHTTPRequestHandler,
    status: int,
    data: bytes,
    ctype: str,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(data)))
    for name, value in headers:
        h.send_header(name, value)
    h.end_headers()
    h.wfile.write(data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients' connection pools are exercised
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stalls
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._closed(self.connection)

    def do_GET(self) -> None:
        self.server.fake._serve(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._serve(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests go to FakeLLMServer.requests (and the JSONL log), not to stderr


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() wakes and joins the handler threads itself
    # 100+ clients connect at once; socketserver's default backlog of 5 drops their SYNs and
    # each dropped one costs its client a 1 s retransmit, which a benchmark would count.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], fake: FakeLLMServer, backlog: int) -> None:
        self.fake = fake
        self.request_queue_size = backlog  # read by server_activate(), inside __init__
        super().__init__(address, _Handler)


class FakeLLMServer:
    """A fake OpenAI- and Anthropic-compatible server in a background thread.

    Args:
        replies: canned replies, answered in order (each a string, a function of the
            messages, or a :class:`Fault`).
        rules: ``(regex, reply)`` pairs; the first regex found in the last user message wins.
            Rules come before the queue, so concurrent sub-calls get the right answers.
        responder: the fallback: a function of the messages (``[{"role", "content"}]``, system
            first) returning the text, or a fixed string. Default: an echo of the last user
            message.
        latency_s: how long every request waits before it is answered.
        log_path: append every request as one JSON line to this file (flushed at once, so a
            killed client's requests are there to read).
        api_key: when set, requests without this key (bearer, ``x-api-key`` for the Messages
            API, or Azure's ``api-key``) get a 401.
        cached_tokens, cache_creation_tokens: prompt tokens reported as cache reads (both APIs)
            and cache writes (Anthropic).
        models: the ids ``GET /v1/models`` lists.
        backlog: the listen backlog: connections the kernel queues before they are accepted
            (the OS may cap it: ``net.core.somaxconn``). Every accepted connection gets its
            own thread and ``TCP_NODELAY``, so nothing but the latency delays an answer.
    """

    def __init__(
        self,
        replies: Iterable[Any] = (),
        *,
        rules: Iterable[tuple[str | re.Pattern[str], Any]] = (),
        responder: Responder | str | None = None,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: str | Path | None = None,
        api_key: str | None = None,
        cached_tokens: int = 0,
        cache_creation_tokens: int = 0,
        models: Iterable[str] = ("fake-model",),
        backlog: int = 1024,
    ) -> None:
        self._lock = threading.Lock()
        self._seen = threading.Condition(self._lock)
        self._queue: deque[Any] = deque(replies)
        self._rules = [(re.compile(p) if isinstance(p, str) else p, r) for p, r in rules]
        self._injections: list[_Injection] = []
        self._requests: list[RecordedRequest] = []
        self.responder: Responder | str = responder if responder is not None else _echo
        self.latency_s = latency_s
        self.api_key = api_key
        self.cached_tokens = cached_tokens
        self.cache_creation_tokens = cache_creation_tokens
        self.models = list(models)
        self.max_in_flight = 0
        self._in_flight = 0
        self._address = (host, port)
        self.backlog = backlog
        self._log_path = Path(log_path) if log_path else None
        self._log: TextIO | None = None
        self._log_lock = threading.Lock()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        if self._httpd is not None:
            raise RuntimeError("this FakeLLMServer was already started; make a new one")
        if self._log_path is not None:
            self._log = open(self._log_path, "a", encoding="utf-8")  # noqa: SIM115
        self._httpd = _HTTPServer(self._address, self, self.backlog)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-llm-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake every waiting request, and join every thread the server made."""
        if self._httpd is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:  # idle keep-alive connections block their threads in a read
            _shut(conn)
        for thread in [*threads, self._thread]:
            if thread is not None:
                thread.join(timeout=5.0)
        if self._log is not None:
            with self._log_lock:
                self._log.close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("start() the FakeLLMServer first")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:PORT`` (Anthropic clients' base URL)."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def base_url(self) -> str:
        """``url + "/v1"``: the base URL OpenAI-compatible clients expect."""
        return f"{self.url}/v1"

    # ---- scripting ------------------------------------------------------------------------------
    def add_rule(self, pattern: str | re.Pattern[str], reply: Any) -> None:
        with self._lock:
            self._rules.append(
                (re.compile(pattern) if isinstance(pattern, str) else pattern, reply)
            )

    def queue(self, *replies: Any) -> None:
        """Append canned replies (answered in order, after the rules)."""
        with self._lock:
            self._queue.extend(replies)

    def fail_next(self, fault: Fault, times: int | None = 1) -> None:
        """The next ``times`` completion requests (``None``: all of them) get ``fault``."""
        self._inject(_Injection(fault, None, times))

    def fail_matching(self, pattern: str, fault: Fault, times: int | None = None) -> None:
        """Completion requests whose last user message matches ``pattern`` get ``fault``."""
        self._inject(_Injection(fault, re.compile(pattern), times))

    def _inject(self, injection: _Injection) -> None:
        with self._lock:
            self._injections.append(injection)

    def clear_faults(self) -> None:
        with self._lock:
            self._injections.clear()

    # ---- what it saw ----------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def completions(self) -> list[RecordedRequest]:
        """The chat/messages requests only."""
        return [r for r in self.requests if r.api in ("openai", "anthropic")]

    def wait_for_requests(self, n: int, timeout_s: float = 10.0) -> list[RecordedRequest]:
        """Block until ``n`` requests have arrived (or the timeout passes); return them all."""
        with self._seen:
            self._seen.wait_for(lambda: len(self._requests) >= n, timeout_s)
            return list(self._requests)

    # ---- serving (handler threads) --------------------------------------------------------------
    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            self._threads.add(threading.current_thread())
        if self._stopping.is_set():  # accepted while stop() ran: do not leave it hanging
            _shut(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)
            self._threads.discard(threading.current_thread())

    def _serve(self, h: _Handler, method: str) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            self._answer(h, method)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True  # the client gave up (its timeout); nothing to answer
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, h: _Handler, method: str) -> None:
        raw = h.rfile.read(int(h.headers.get("content-length") or 0))
        url = urlsplit(h.path)
        path = url.path
        api = route(method, path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in h.headers.items()}
        req = RecordedRequest(
            method,
            path,
            api,
            headers,
            body,
            time.time(),
            normalise_messages(api, body),
            peer=f"{h.client_address[0]}:{h.client_address[1]}",
            query=url.query,
        )
        fault, text = self._decide(req)
        req, n = self._record(req, fault, text)
        delay = self.latency_s + (
            fault.seconds if fault is not None and fault.kind == "hang" else 0.0
        )
        if self._stopping.wait(delay) if delay > 0 else self._stopping.is_set():
            h.close_connection = True
            return
        self._write(h, req, fault, text, n)

    def _decide(self, req: RecordedRequest) -> tuple[Fault | None, str | None]:
        problem = refusal(req.api, req.body, req.headers, self.api_key)
        if problem is not None or req.api == "models":
            return problem, None
        prompt = req.last_user
        with self._lock:
            fault = self._take_fault(prompt)
            # These faults change how a normal answer is sent, so they need one.
            answered = fault is None or fault.kind in ("hang", "usage", "trickle")
            choice = self._pick(prompt) if answered else None
        if isinstance(choice, Fault):
            return choice, None
        if callable(choice):
            try:
                choice = choice(req.messages)
            except Exception as exc:  # a broken responder is the test's bug: make it visible
                return Fault.http(500, f"the responder raised {type(exc).__name__}: {exc}"), None
        return fault, None if choice is None else str(choice)

    def _take_fault(self, prompt: str) -> Fault | None:
        for inj in self._injections:
            if inj.pattern is None or inj.pattern.search(prompt):
                if inj.remaining is not None:
                    inj.remaining -= 1
                    if inj.remaining <= 0:
                        self._injections.remove(inj)
                return inj.fault
        return None

    def _pick(self, prompt: str) -> Any:
        for pattern, reply in self._rules:
            if pattern.search(prompt):
                return reply
        return self._queue.popleft() if self._queue else self.responder

    def _record(
        self, req: RecordedRequest, fault: Fault | None, text: str | None
    ) -> tuple[RecordedRequest, int]:
        status = 200
        if fault is not None and fault.kind in ("http", "disconnect", "json"):
            status = fault.status if fault.kind != "disconnect" else 0  # 0: no response at all
        rec = req.answered(status, fault.kind if fault else None, text)
        with self._lock:
            self._requests.append(rec)
            n = len(self._requests)
            self._seen.notify_all()
        if self._log is not None:
            line = json.dumps(rec.to_dict(), ensure_ascii=False, default=str)
            with self._log_lock:
                if not self._log.closed:
                    self._log.write(line + "\n")
                    self._log.flush()
        return rec, n

    def _write(
        self, h: _Handler, req: RecordedRequest, fault: Fault | None, text: str | None, n: int
    ) -> None:
        kind = fault.kind if fault is not None and fault.kind != "hang" else None
        if kind == "disconnect":
            h.close_connection = True
            _shut(h.connection)
            return
        if kind == "not_json":
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            _send(h, 200, page, "text/html")
            return
        if kind == "json":
            assert fault is not None
            _send(h, fault.status, fault.body.encode("utf-8"), "application/json")
            return
        if kind == "huge":
            assert fault is not None
            self._send_huge(h, req, fault, n)
            return
        status, headers = 200, []
        if kind == "http":
            assert fault is not None
            status, headers = fault.status, fault_headers(fault)
            payload = error_body(req.api, fault)
        elif kind == "no_content":
            payload = no_content_body(req.api, n, req.model)
        elif req.api == "models":
            payload = {"object": "list", "data": [model_entry(m) for m in self.models]}
        elif req.api == "openai":
            payload = openai_body(req, text or "", n, self.cached_tokens)
        else:
            payload = anthropic_body(
                req, text or "", n, self.cached_tokens, self.cache_creation_tokens
            )
        if kind == "usage":
            assert fault is not None
            payload["usage"] = {**payload.get("usage", {}), **json.loads(fault.body)}
        data = json.dumps(payload).encode("utf-8")
        if kind == "trickle":
            assert fault is not None
            self._trickle(h, data, fault.seconds)
            return
        _send(h, status, data, "application/json", headers)

    def _trickle(self, h: _Handler, data: bytes, seconds: float) -> None:
        """Headers at once, then the body one byte at a time."""
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.flush()
        for i in range(len(data)):
            if self._stopping.wait(seconds):
                h.close_connection = True
                return
            h.wfile.write(data[i : i + 1])

    def _send_huge(self, h: _Handler, req: RecordedRequest, fault: Fault, n: int) -> None:
        """A valid body around ``fault.size`` bytes of text, written in chunks."""
        marker = "\x00"
        if req.api == "anthropic":
            payload = anthropic_body(req, marker, n, 0, 0)
        else:
            payload = openai_body(req, marker, n, 0)
        head, tail = json.dumps(payload).encode("utf-8").split(b"\\u0000", 1)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if fault.declare_length:
            h.send_header("Content-Length", str(len(head) + fault.size + len(tail)))
        else:  # the body ends when the connection does
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        h.wfile.write(head)
        chunk = b"x" * (1 << 20)
        left = fault.size
        while left > 0 and not self._stopping.is_set():
            h.wfile.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
        h.wfile.write(tail)
