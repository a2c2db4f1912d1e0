"""The contract every HTTP backend keeps, run against the fake server for OpenAI and Anthropic.

Retries (429 with each form of ``Retry-After``, 5xx, timeouts, dropped connections, replies
that are not JSON or hold no text), errors that are not retried (auth, 400, 404) and what a
reply becomes are the same for both; ``test_lm_openai.py`` and ``test_lm_anthropic.py`` test
what is specific to each (payloads, headers, what usage counts).
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

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
from recursa.lm._http import HTTPBackend
from recursa.lm.anthropic import AnthropicLM
from recursa.lm.openai import OpenAIChatLM
from recursa.lm.retry import RetryPolicy
from recursa.testing import FakeLLMServer, Fault
from recursa.testing.fake_server import count_tokens
from recursa.types import LMSettings, Message

FAST = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.02)
HELLO = [Message.system("You are terse."), Message.user("Say hello.")]
REPLY = "hello back"


@dataclass(frozen=True)
class Backend:
    """One HTTP backend as the contract sees it."""

    name: str
    cls: type[HTTPBackend]
    model: str
    api_root: str  # appended to the server's URL to make the backend's base_url
    path: str  # where the backend POSTs
    finish_reason: str  # a normal reply's, as the API names it
    missing_text: str  # what the error names when a reply holds no text
    defaults: dict[str, Any] = field(default_factory=dict)


BACKENDS = [
    Backend("openai", OpenAIChatLM, "fake-model", "/v1", "/v1/chat/completions", "stop", "choices"),
    Backend(
        "anthropic",
        AnthropicLM,
        "claude-fake",
        "",
        "/v1/messages",
        "end_turn",
        "content",
        {"api_key": "sk-ant-test"},
    ),
]

MakeLM = Callable[..., HTTPBackend]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
def srv():
    with FakeLLMServer([REPLY]) as server:
        yield server


@pytest.fixture
async def make_lm(backend: Backend) -> AsyncIterator[MakeLM]:
    """``make_lm(server_url, **kwargs)``: the backend pointed at a server, closed after the test."""
    made: list[HTTPBackend] = []

    def make(url: str, **kwargs: Any) -> HTTPBackend:
        kwargs.setdefault("retry", FAST)
        for key, value in backend.defaults.items():
            kwargs.setdefault(key, value)
        lm = backend.cls(backend.model, base_url=url + backend.api_root, **kwargs)
        made.append(lm)
        return lm

    yield make
    for lm in made:
        await lm.aclose()


def _free_port() -> int:
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- success ------------------------------------------------------------------------------------


async def test_a_reply_is_text_model_finish_reason_and_one_call(srv, make_lm, backend):
    c = await make_lm(srv.url).complete(HELLO)
    assert c.text == REPLY
    assert c.model == backend.model
    assert c.finish_reason == backend.finish_reason
    assert c.usage.output_tokens == count_tokens(REPLY)
    assert c.usage.calls == 1


async def test_posts_json_to_the_endpoint(srv, make_lm, backend):
    await make_lm(srv.url).complete(HELLO)
    req = srv.requests[0]
    assert req.path == backend.path
    assert req.headers["content-type"] == "application/json"


async def test_trailing_slash_in_base_url(srv, backend):
    base_url = srv.url + backend.api_root + "/"
    lm = backend.cls(backend.model, base_url=base_url, retry=FAST, **backend.defaults)
    try:
        await lm.complete(HELLO)
    finally:
        await lm.aclose()
    assert srv.requests[0].path == backend.path


async def test_per_call_settings_timeout_overrides_the_default(make_lm):
    with FakeLLMServer(latency_s=0.5) as srv:
        lm = make_lm(srv.url, timeout_s=30, retry=RetryPolicy(max_retries=0))
        with pytest.raises(LMTimeoutError):
            await lm.complete(HELLO, LMSettings(timeout_s=0.1))


async def test_connections_are_pooled_across_calls(srv, make_lm):
    srv.queue("a", "b", "c")
    lm = make_lm(srv.url)
    for _ in range(4):
        await lm.complete(HELLO)
    assert len({r.peer for r in srv.requests}) == 1


# ---- retries ------------------------------------------------------------------------------------


async def test_429_retry_after_seconds_is_honoured(srv, make_lm):
    srv.fail_next(Fault.rate_limit(retry_after=1))
    c = await make_lm(srv.url).complete(HELLO)
    first, second = srv.requests
    assert c.text == REPLY
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.0


async def test_429_retry_after_ms_is_honoured(srv, make_lm):
    srv.fail_next(Fault.rate_limit(retry_after_ms=400))
    await make_lm(srv.url).complete(HELLO)
    first, second = srv.requests
    assert second.time - first.time >= 0.4


async def test_429_retry_after_http_date_is_honoured(srv, make_lm):
    srv.fail_next(Fault.rate_limit(retry_after_date_s=1))
    await make_lm(srv.url).complete(HELLO)
    first, retry = srv.requests
    assert (first.status, retry.status) == (429, 200)
    # The server named the second ceil(its answer time + 1); the retry came no earlier.
    assert retry.time >= math.ceil(first.time + 1)


@pytest.mark.parametrize(
    "fault",
    [Fault.rate_limit(retry_after=0), Fault.rate_limit(retry_after_ms=0)],
    ids=["retry-after", "retry-after-ms"],
)
async def test_persistent_429_is_a_rate_limit_error(srv, make_lm, fault):
    srv.fail_next(fault, times=None)
    with pytest.raises(LMRateLimitError) as info:
        await make_lm(srv.url).complete(HELLO)
    assert info.value.status == 429
    assert len(srv.requests) == FAST.max_retries + 1


async def test_500_then_success(srv, make_lm):
    srv.fail_next(Fault.server_error(500))
    c = await make_lm(srv.url).complete(HELLO)
    assert c.text == REPLY
    assert [r.status for r in srv.requests] == [500, 200]


@pytest.mark.parametrize(
    "fault",
    [
        Fault.server_error(500),
        Fault.server_error(502),
        Fault.server_error(503),
        Fault.http(529, "Overloaded"),  # Anthropic's "overloaded"
    ],
    ids=lambda f: str(f.status),
)
async def test_persistent_5xx_gives_up_after_max_retries(srv, make_lm, backend, fault):
    srv.fail_next(fault, times=None)
    with pytest.raises(LMServerError) as info:
        await make_lm(srv.url).complete(HELLO)
    assert info.value.status == fault.status
    assert backend.model in str(info.value)
    assert fault.message in str(info.value)
    assert len(srv.requests) == FAST.max_retries + 1


async def test_timeout_is_retried_then_an_lm_timeout_error(srv, make_lm):
    srv.fail_next(Fault.hang(30), times=None)
    with pytest.raises(LMTimeoutError):
        await make_lm(srv.url, timeout_s=0.2).complete(HELLO)
    assert len(srv.wait_for_requests(FAST.max_retries + 1)) == FAST.max_retries + 1


async def test_body_that_is_not_json_is_retried_then_a_response_error(srv, make_lm):
    srv.fail_next(Fault.not_json(), times=None)
    with pytest.raises(LMResponseError, match="not JSON"):
        await make_lm(srv.url).complete(HELLO)
    assert len(srv.requests) == FAST.max_retries + 1


async def test_json_without_text_is_retried_then_a_response_error(srv, make_lm, backend):
    srv.fail_next(Fault.no_content(), times=None)
    with pytest.raises(LMResponseError, match=backend.missing_text):
        await make_lm(srv.url).complete(HELLO)
    assert len(srv.requests) == FAST.max_retries + 1


async def test_malformed_body_then_success(srv, make_lm):
    srv.fail_next(Fault.no_content())
    srv.fail_next(Fault.not_json())
    c = await make_lm(srv.url).complete(HELLO)
    assert c.text == REPLY
    assert len(srv.requests) == 3


async def test_dropped_connection_is_retried(srv, make_lm):
    srv.fail_next(Fault.disconnect())
    c = await make_lm(srv.url).complete(HELLO)
    assert c.text == REPLY
    assert len(srv.requests) == 2


# ---- errors that are not retried ----------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_is_not_retried(srv, make_lm, status):
    srv.fail_next(Fault.auth(status), times=None)
    with pytest.raises(LMAuthError) as info:
        await make_lm(srv.url, api_key="wrong").complete(HELLO)
    assert info.value.status == status
    assert "API key" in str(info.value)
    assert len(srv.requests) == 1


async def test_server_checked_key_mismatch_is_an_auth_error_without_retry(make_lm):
    with FakeLLMServer(api_key="right") as srv:
        with pytest.raises(LMAuthError) as info:
            await make_lm(srv.url, api_key="wrong").complete(HELLO)
        assert len(srv.requests) == 1
        ok = await make_lm(srv.url, api_key="right").complete(HELLO)
    assert info.value.status == 401
    assert ok.text.startswith("fake reply to:")


async def test_400_is_a_request_error_with_the_servers_message(srv, make_lm):
    srv.fail_next(Fault.bad_request("context_length_exceeded: too long"), times=None)
    with pytest.raises(LMRequestError, match="context_length_exceeded: too long") as info:
        await make_lm(srv.url).complete(HELLO)
    assert info.value.status == 400
    assert len(srv.requests) == 1


async def test_404_is_a_request_error_without_retry(srv, make_lm, backend):
    srv.fail_next(Fault.http(404, f"The model `{backend.model}` does not exist"), times=None)
    with pytest.raises(LMRequestError, match="does not exist") as info:
        await make_lm(srv.url).complete(HELLO)
    assert info.value.status == 404
    assert len(srv.requests) == 1


async def test_connection_refused_is_a_connection_error(make_lm):
    port = _free_port()
    with pytest.raises(LMConnectionError, match="cannot reach"):
        await make_lm(f"http://127.0.0.1:{port}").complete(HELLO)
