"""The OpenAI-compatible backend against the fake server: what is specific to it (payloads,
headers, usage). Retries and errors are the HTTP backends' shared contract: test_lm_contract.py."""

from __future__ import annotations

import httpx
import pytest

from recursa.lm.openai import OpenAIChatLM
from recursa.lm.retry import RetryPolicy
from recursa.testing import FakeLLMServer
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


async def test_usage_counts_the_prompt_and_its_cached_tokens(make_lm):
    with FakeLLMServer(["hello back"], cached_tokens=4) as srv:
        c = await make_lm(srv.base_url).complete(HELLO)
    # prompt_tokens already includes the cached ones (prompt_tokens_details.cached_tokens).
    assert c.usage.input_tokens == count_tokens("You are terse." + "Say hello.")
    assert c.usage.output_tokens == count_tokens("hello back")
    assert c.usage.cached_tokens == 4


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


async def test_extra_body_is_merged(srv, make_lm):
    await make_lm(srv.base_url, extra_body={"top_p": 0.5}).complete(HELLO)
    assert srv.requests[0].body["top_p"] == 0.5
