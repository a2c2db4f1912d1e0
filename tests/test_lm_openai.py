"""The OpenAI-compatible backend against the fake server: payloads, usage, retries, errors."""

from __future__ import annotations

import math
import socket

import httpx
import pytest

from recursa.errors import (
    LMAuthError,
    LMConnectionError,
    LMRateLimitError,
    LMRequestError,
    LMResponseError,
    LMServerError,
    LMTimeoutError,
)
from recursa.lm._http import RetryPolicy
from recursa.lm.openai import OpenAIChatLM
from recursa.testing import FakeLLMServer, Fault
from recursa.testing.fake_server import count_tokens
from recursa.types import LMSettings, Message

FAST = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.02)
HELLO = [Message.system("You are terse."), Message.user("Say hello.")]


@pytest.fixture
def srv():
    with FakeLLMServer(["hello back"]) as server:
        yield server


@pytest.fixture
async def make_lm():
    made: list[OpenAIChatLM] = []

    def make(base_url: str, **kwargs) -> OpenAIChatLM:
        kwargs.setdefault("retry", FAST)
        lm = OpenAIChatLM("fake-model", base_url=base_url, **kwargs)
        made.append(lm)
        return lm

    yield make
    for lm in made:
        await lm.aclose()


class _Redirect(httpx.AsyncBaseTransport):
    """Sends requests meant for another host to the fake server, keeping URL path and headers."""

    def __init__(self, target: str) -> None:
        self.target = httpx.URL(target)
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(
            scheme=self.target.scheme, host=self.target.host, port=self.target.port
        )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


# ---- success ------------------------------------------------------------------------------------


async def test_completion_text_and_usage_with_cached_tokens(make_lm):
    with FakeLLMServer(["hello back"], cached_tokens=4) as srv:
        c = await make_lm(srv.base_url).complete(HELLO)
    assert c.text == "hello back"
    assert c.model == "fake-model"
    assert c.finish_reason == "stop"
    assert c.usage.input_tokens == count_tokens("You are terse." + "Say hello.")
    assert c.usage.output_tokens == count_tokens("hello back")
    assert c.usage.cached_tokens == 4
    assert c.usage.calls == 1


async def test_payload_carries_messages_and_settings(srv, make_lm):
    settings = LMSettings(temperature=0.25, max_output_tokens=50, stop=("END",), seed=7)
    await make_lm(srv.base_url).complete(HELLO, settings)
    req = srv.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.body == {
        "model": "fake-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."},
        ],
        "temperature": 0.25,
        "max_tokens": 50,  # not api.openai.com: the older name compatible servers know
        "stop": ["END"],
        "seed": 7,
    }


async def test_unset_settings_are_left_out(srv, make_lm):
    await make_lm(srv.base_url).complete(HELLO)
    assert set(srv.requests[0].body) == {"model", "messages"}


async def test_api_openai_com_gets_max_completion_tokens(srv):
    client = httpx.AsyncClient(transport=_Redirect(srv.url))
    lm = OpenAIChatLM("gpt-x", api_key="sk-test", retry=FAST, client=client)
    try:
        await lm.complete(HELLO, LMSettings(max_output_tokens=12))
    finally:
        await client.aclose()
    req = srv.requests[0]
    assert req.headers["host"] == "api.openai.com"
    assert req.body["max_completion_tokens"] == 12
    assert "max_tokens" not in req.body


async def test_bearer_header_only_with_a_key(srv, make_lm):
    await make_lm(srv.base_url, api_key="sk-abc").complete(HELLO)
    await make_lm(srv.base_url).complete(HELLO)
    with_key, without = srv.requests
    assert with_key.headers["authorization"] == "Bearer sk-abc"
    assert "authorization" not in without.headers
    assert with_key.headers["content-type"] == "application/json"


async def test_extra_body_is_merged(srv, make_lm):
    await make_lm(srv.base_url, extra_body={"top_p": 0.5}).complete(HELLO)
    assert srv.requests[0].body["top_p"] == 0.5


async def test_per_call_settings_timeout_overrides_the_default(make_lm):
    with FakeLLMServer(latency_s=0.5) as srv:
        lm = make_lm(srv.base_url, timeout_s=30, retry=RetryPolicy(max_retries=0))
        with pytest.raises(LMTimeoutError):
            await lm.complete(HELLO, LMSettings(timeout_s=0.1))


async def test_connections_are_pooled_across_calls(srv, make_lm):
    srv.queue("a", "b", "c")
    lm = make_lm(srv.base_url)
    for _ in range(4):
        await lm.complete(HELLO)
    assert len({r.peer for r in srv.requests}) == 1


# ---- retries ------------------------------------------------------------------------------------


async def test_429_retry_after_seconds_is_honoured(srv, make_lm):
    srv.fail_next(Fault.rate_limit(retry_after=1))
    c = await make_lm(srv.base_url).complete(HELLO)
    first, second = srv.requests
    assert c.text == "hello back"
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.0


async def test_429_retry_after_ms_is_honoured(srv, make_lm):
    srv.fail_next(Fault.rate_limit(retry_after_ms=400))
    await make_lm(srv.base_url).complete(HELLO)
    first, second = srv.requests
    assert second.time - first.time >= 0.4


async def test_429_retry_after_http_date_is_honoured(srv, make_lm):
    srv.fail_next(Fault.rate_limit(retry_after_date_s=1))
    await make_lm(srv.base_url).complete(HELLO)
    first, retry = srv.requests
    assert (first.status, retry.status) == (429, 200)
    # The server named the second ceil(its answer time + 1); the retry came no earlier.
    assert retry.time >= math.ceil(first.time + 1)


async def test_persistent_429_is_a_rate_limit_error(srv, make_lm):
    srv.fail_next(Fault.rate_limit(retry_after=0), times=None)
    with pytest.raises(LMRateLimitError) as info:
        await make_lm(srv.base_url).complete(HELLO)
    assert info.value.status == 429
    assert len(srv.requests) == FAST.max_retries + 1


async def test_500_then_success(srv, make_lm):
    srv.fail_next(Fault.server_error(500))
    c = await make_lm(srv.base_url).complete(HELLO)
    assert c.text == "hello back"
    assert [r.status for r in srv.requests] == [500, 200]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_persistent_5xx_gives_up_after_max_retries(srv, make_lm, status):
    srv.fail_next(Fault.server_error(status), times=None)
    with pytest.raises(LMServerError) as info:
        await make_lm(srv.base_url).complete(HELLO)
    assert info.value.status == status
    assert "fake-model" in str(info.value)
    assert len(srv.requests) == FAST.max_retries + 1


async def test_timeout_is_retried_then_an_lm_timeout_error(srv, make_lm):
    srv.fail_next(Fault.hang(30), times=None)
    with pytest.raises(LMTimeoutError):
        await make_lm(srv.base_url, timeout_s=0.2).complete(HELLO)
    assert len(srv.wait_for_requests(FAST.max_retries + 1)) == FAST.max_retries + 1


async def test_body_that_is_not_json_is_retried_then_a_response_error(srv, make_lm):
    srv.fail_next(Fault.not_json(), times=None)
    with pytest.raises(LMResponseError, match="not JSON"):
        await make_lm(srv.base_url).complete(HELLO)
    assert len(srv.requests) == FAST.max_retries + 1


async def test_json_without_choices_is_retried_then_a_response_error(srv, make_lm):
    srv.fail_next(Fault.no_content(), times=None)
    with pytest.raises(LMResponseError, match="choices"):
        await make_lm(srv.base_url).complete(HELLO)
    assert len(srv.requests) == FAST.max_retries + 1


async def test_malformed_body_then_success(srv, make_lm):
    srv.fail_next(Fault.no_content())
    srv.fail_next(Fault.not_json())
    c = await make_lm(srv.base_url).complete(HELLO)
    assert c.text == "hello back"
    assert len(srv.requests) == 3


async def test_dropped_connection_is_retried(srv, make_lm):
    srv.fail_next(Fault.disconnect())
    c = await make_lm(srv.base_url).complete(HELLO)
    assert c.text == "hello back"
    assert len(srv.requests) == 2


# ---- errors that are not retried ----------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_is_not_retried(srv, make_lm, status):
    srv.fail_next(Fault.auth(status), times=None)
    with pytest.raises(LMAuthError) as info:
        await make_lm(srv.base_url, api_key="wrong").complete(HELLO)
    assert info.value.status == status
    assert "API key" in str(info.value)
    assert len(srv.requests) == 1


async def test_server_checked_key_mismatch_is_an_auth_error(make_lm):
    with FakeLLMServer(api_key="right") as srv:
        with pytest.raises(LMAuthError):
            await make_lm(srv.base_url, api_key="wrong").complete(HELLO)
        ok = await make_lm(srv.base_url, api_key="right").complete(HELLO)
    assert ok.text.startswith("fake reply to:")


async def test_400_is_a_request_error_with_the_servers_message(srv, make_lm):
    srv.fail_next(Fault.bad_request("context_length_exceeded: too long"), times=None)
    with pytest.raises(LMRequestError, match="context_length_exceeded: too long") as info:
        await make_lm(srv.base_url).complete(HELLO)
    assert info.value.status == 400
    assert len(srv.requests) == 1


async def test_404_is_a_request_error_without_retry(srv, make_lm):
    srv.fail_next(Fault.http(404, "The model `fake-model` does not exist"), times=None)
    with pytest.raises(LMRequestError, match="does not exist") as info:
        await make_lm(srv.base_url).complete(HELLO)
    assert info.value.status == 404
    assert len(srv.requests) == 1


async def test_connection_refused_is_a_connection_error(make_lm):
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LMConnectionError, match="cannot reach"):
        await make_lm(f"http://127.0.0.1:{port}/v1").complete(HELLO)
