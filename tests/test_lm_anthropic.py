"""The Anthropic Messages backend against the fake server: what is specific to it (payloads,
prompt caching, headers, usage). Retries and errors are the HTTP backends' shared contract:
test_lm_contract.py."""

from __future__ import annotations

import pytest

from recursa.lm.anthropic import ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS, AnthropicLM
from recursa.lm.retry import RetryPolicy
from recursa.testing import FakeLLMServer
from recursa.testing.fake_server import count_tokens
from recursa.types import LMSettings, Message

FAST = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.02)
CONVO = [
    Message.system("Rule one."),
    Message.user("Question?"),
    Message.assistant("Code."),
    Message.system("Rule two."),
    Message.user("Output 1."),
    Message.user("Output 2."),
]


@pytest.fixture
def srv():
    with FakeLLMServer(["claude says hi"]) as server:
        yield server


@pytest.fixture
async def make_lm():
    made: list[AnthropicLM] = []

    def make(base_url: str, **kwargs) -> AnthropicLM:
        kwargs.setdefault("retry", FAST)
        kwargs.setdefault("api_key", "sk-ant-test")
        lm = AnthropicLM("claude-fake", base_url=base_url, **kwargs)
        made.append(lm)
        return lm

    yield make
    for lm in made:
        await lm.aclose()


# ---- success ------------------------------------------------------------------------------------


async def test_usage_counts_cache_reads_and_writes_as_input(make_lm):
    with FakeLLMServer(["ok"], cached_tokens=6, cache_creation_tokens=3) as srv:
        c = await make_lm(srv.url).complete(CONVO)
        req = srv.requests[0]
    prompt = count_tokens("".join(m["content"] for m in req.messages))
    # input = uncached input + cache reads + cache writes; cached = cache reads only.
    assert c.usage.input_tokens == prompt
    assert c.usage.cached_tokens == 6
    assert c.usage.output_tokens == count_tokens("ok")


async def test_uncached_usage(srv, make_lm):
    c = await make_lm(srv.url).complete([Message.user("hi")])
    assert (c.usage.input_tokens, c.usage.cached_tokens) == (count_tokens("hi"), 0)


async def test_payload_system_merge_and_cache_control(srv, make_lm):
    await make_lm(srv.url).complete(CONVO)
    body = srv.requests[0].body
    assert body["model"] == "claude-fake"
    assert body["system"] == "Rule one.\n\nRule two."
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Question?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Code."}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "Output 1.\n\nOutput 2.",  # two user turns in a row: merged
                    "cache_control": {"type": "ephemeral"},  # only on the last block
                }
            ],
        },
    ]


async def test_prompt_cache_can_be_turned_off(srv, make_lm):
    await make_lm(srv.url, prompt_cache=False).complete(CONVO)
    assert "cache_control" not in str(srv.requests[0].body)


async def test_settings_map_to_anthropic_names(srv, make_lm):
    settings = LMSettings(temperature=0.3, max_output_tokens=64, stop=("DONE",), seed=5)
    await make_lm(srv.url).complete([Message.user("hi")], settings)
    body = srv.requests[0].body
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 64
    assert body["stop_sequences"] == ["DONE"]
    assert "seed" not in body  # the Messages API has no seed
    assert "system" not in body  # no system message: no system field


async def test_headers(srv, make_lm):
    await make_lm(srv.url, api_key="sk-ant-123").complete([Message.user("hi")])
    req = srv.requests[0]
    assert req.headers["x-api-key"] == "sk-ant-123"
    assert req.headers["anthropic-version"] == ANTHROPIC_VERSION
    assert "authorization" not in req.headers


async def test_stop_sequence_reason_is_passed_through(make_lm):
    with FakeLLMServer(["one DONE two"]) as srv:
        c = await make_lm(srv.url).complete([Message.user("hi")], LMSettings(stop=("DONE",)))
    assert (c.text, c.finish_reason) == ("one ", "stop_sequence")
