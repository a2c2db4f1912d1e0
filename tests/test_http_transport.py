"""recursa's own HTTP path: httpx's transport interface over aiohttp (recursa.lm._aiohttp).

Everything here runs against servers on 127.0.0.1: the project's fake server, or a raw
asyncio server where a test needs bytes the fake server does not send.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from recursa.errors import LMConnectionError, LMTimeoutError
from recursa.lm._aiohttp import AiohttpTransport
from recursa.lm.openai import OpenAIChatLM
from recursa.lm.retry import RetryPolicy
from recursa.lm.wrappers import FairLimiter, _let_waiter_send
from recursa.testing import FakeLLMServer, Fault
from recursa.types import Message

ONCE = RetryPolicy(max_retries=0)


def _lm(base_url: str, **kw: object) -> OpenAIChatLM:
    return OpenAIChatLM("m", base_url=base_url, api_key="k", retry=ONCE, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A bare TCP server on 127.0.0.1; yields its base URL."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return head


def _completion(text: str) -> bytes:
    body = {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    return json.dumps(body).encode()


async def test_an_answer_and_what_the_request_says() -> None:
    with FakeLLMServer(["hello"]) as srv:
        lm = _lm(srv.base_url)
        try:
            got = await lm.complete([Message.user("hi")])
        finally:
            await lm.aclose()
    assert got.text == "hello"
    headers = srv.requests[0].headers
    assert headers["user-agent"].startswith("recursa/")
    assert headers["authorization"] == "Bearer k"
    assert headers["content-type"] == "application/json"


async def test_connections_are_reused() -> None:
    with FakeLLMServer(responder=lambda m: "ok") as srv:
        lm = _lm(srv.base_url)
        try:
            for _ in range(3):
                await lm.complete([Message.user("hi")])
            await asyncio.gather(*(lm.complete([Message.user("x")]) for _ in range(4)))
        finally:
            await lm.aclose()
    peers = [r.peer for r in srv.requests]
    assert len(set(peers[:3])) == 1  # one after the other: one connection
    assert len(set(peers)) <= 4  # four at once need at most four


async def test_a_gzip_body_is_decoded() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _read_request(reader)
        assert b"recursa/" in head
        body = gzip.compress(_completion("unzipped"))
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    async with raw_server(handle) as url:
        lm = _lm(url)
        try:
            assert (await lm.complete([Message.user("hi")])).text == "unzipped"
        finally:
            await lm.aclose()


async def test_a_dropped_connection_is_a_connection_error() -> None:
    with FakeLLMServer(responder=lambda m: "ok") as srv:
        srv.fail_next(Fault.disconnect())
        lm = _lm(srv.base_url)
        try:
            with pytest.raises(LMConnectionError, match=r"RemoteProtocolError|ReadError"):
                await lm.complete([Message.user("hi")])
            # The pool recovers: the next call gets a fresh connection.
            assert (await lm.complete([Message.user("hi")])).text == "ok"
        finally:
            await lm.aclose()


async def test_a_body_cut_short_is_a_connection_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{"choices": [')
        await writer.drain()
        writer.close()

    async with raw_server(handle) as url:
        lm = _lm(url)
        try:
            with pytest.raises(LMConnectionError, match="cannot reach"):
                await lm.complete([Message.user("hi")])
        finally:
            await lm.aclose()


async def test_nothing_listening_is_a_connection_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    lm = _lm(f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(LMConnectionError, match=r"ConnectError.*check --base-url"):
            await lm.complete([Message.user("hi")])
    finally:
        await lm.aclose()


async def test_a_slow_answer_times_out() -> None:
    with FakeLLMServer(responder=lambda m: "ok") as srv:
        srv.fail_next(Fault.hang(5))
        lm = _lm(srv.base_url, timeout_s=0.3)
        try:
            with pytest.raises(LMTimeoutError, match=r"0\.3s"):
                await lm.complete([Message.user("hi")])
        finally:
            await lm.aclose()


async def test_the_environment_proxy_is_used_and_no_proxy_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A forward proxy gets the absolute URL; the fake server answers it as if it were the
    target, which is enough to show the request went through the proxy (127.0.0.2:9 has no
    server)."""
    target = "http://127.0.0.2:9/v1"
    with FakeLLMServer(responder=lambda m: "via proxy") as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://user:pw@"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        lm = _lm(target)
        try:
            assert (await lm.complete([Message.user("hi")])).text == "via proxy"
        finally:
            await lm.aclose()
        seen = proxy.requests[0]
        assert seen.headers["proxy-authorization"].startswith("Basic ")
        assert seen.headers["host"] == "127.0.0.2:9"

        monkeypatch.setenv("NO_PROXY", "127.0.0.2")
        direct = _lm(target)
        try:
            with pytest.raises(LMConnectionError):
                await direct.complete([Message.user("hi")])
        finally:
            await direct.aclose()
        assert len(proxy.requests) == 1


async def test_the_transport_answers_httpx_requests_directly() -> None:
    """What a caller who wants recursa's transport under their own httpx client gets."""
    with FakeLLMServer(responder=lambda m: "ok") as srv:
        async with httpx.AsyncClient(transport=AiohttpTransport(verify=False)) as client:
            resp = await client.post(
                f"{srv.base_url}/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "ok"
    assert resp.http_version == "HTTP/1.1"


async def test_a_borrowed_client_is_used_as_given() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=_completion("mocked"))

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), headers={"x-team": "blue"})
    lm = OpenAIChatLM("m", base_url="http://api.test/v1", api_key="k", client=client)
    assert (await lm.complete([Message.user("hi")])).text == "mocked"
    await lm.aclose()
    assert not client.is_closed  # the caller's client is the caller's to close
    await client.aclose()
    assert seen[0].headers["x-team"] == "blue"  # the client's own headers still apply


# ---- the limiter hands a freed slot on before the finished call's bookkeeping ----------------


async def test_release_says_whether_a_waiter_took_the_slot() -> None:
    limiter = FairLimiter(1)
    await limiter.acquire()
    waiter = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    assert limiter.release() is True  # handed to the waiter
    await waiter
    assert limiter.release() is False  # nobody waiting: the slot is free
    assert limiter.in_flight == 0


async def test_a_cancellation_during_the_hand_off_lands_at_the_next_await() -> None:
    steps: list[str] = []

    async def call() -> None:
        await _let_waiter_send()
        steps.append("booked")  # the paid answer is still booked (journal, budget)
        await asyncio.sleep(10)
        steps.append("never")

    task = asyncio.ensure_future(call())
    await asyncio.sleep(0)  # the task now waits in the hand-off's yield
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["booked"]


async def test_a_timeout_during_the_hand_off_is_still_a_timeout() -> None:
    steps: list[str] = []

    async def call() -> None:
        async with asyncio.timeout(0):
            await _let_waiter_send()
            steps.append("booked")
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await call()
    assert steps == ["booked"]


def test_one_backend_serves_one_event_loop_after_another_without_noise() -> None:
    """A model passed to RLM is the caller's to close; used from two asyncio.run() calls and
    never closed, it must answer both and print nothing at exit (no "Unclosed client
    session" from aiohttp)."""
    script = (
        "import asyncio\n"
        "from recursa.lm.openai import OpenAIChatLM\n"
        "from recursa.testing import FakeLLMServer\n"
        "from recursa.types import Message\n"
        "with FakeLLMServer(responder=lambda m: 'ok') as srv:\n"
        "    lm = OpenAIChatLM('m', base_url=srv.base_url, api_key='k')\n"
        "    for _ in range(2):\n"
        "        print(asyncio.run(lm.complete([Message.user('hi')])).text)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "ok"]
    assert done.stderr == ""
