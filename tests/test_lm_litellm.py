"""The LiteLLM backend (the optional ``litellm`` extra) against the fake OpenAI server, offline."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys

import pytest

from recursa.errors import (
    LMAuthError,
    LMConnectionError,
    LMRateLimitError,
    LMRequestError,
    LMServerError,
    LMTimeoutError,
)
from recursa.lm.base import ProviderOptions
from recursa.lm.registry import resolve_model
from recursa.testing import FakeLLMServer, Fault
from recursa.testing.fake_server import count_tokens
from recursa.types import LMSettings, Message

# Checked without importing: importing litellm directly would skip the backend's offline setup.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("litellm") is None, reason="the litellm extra is not installed"
)

HELLO = [Message.system("Be brief."), Message.user("Hello?")]


@pytest.fixture
def srv():
    with FakeLLMServer(["hi from litellm"], cached_tokens=2) as server:
        yield server


def make(srv: FakeLLMServer, **kwargs):
    from recursa.lm.litellm import LiteLLM

    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("api_key", "sk-fake")
    return LiteLLM("openai/fake-model", api_base=srv.base_url, **kwargs)


def test_import_does_not_fetch_the_cost_map_from_the_network():
    code = "from recursa.lm.litellm import LiteLLM; LiteLLM('openai/x')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "cost map" not in proc.stderr


def test_the_offline_setting_is_not_left_in_the_environment():
    # The setting above holds for LiteLLM's import only: the user's environment (and what their
    # child processes inherit) is as it was.
    code = (
        "import os\n"
        "from recursa.lm.litellm import LiteLLM\n"
        "LiteLLM('openai/x')\n"
        "print('LITELLM_LOCAL_MODEL_COST_MAP' in os.environ)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


async def test_completion_usage_and_payload(srv):
    lm = make(srv)
    settings = LMSettings(temperature=0.2, max_output_tokens=30, stop=("END",), seed=11)
    c = await lm.complete(HELLO, settings)
    assert lm.name == "litellm:openai/fake-model"
    assert c.text == "hi from litellm"
    assert c.finish_reason == "stop"
    assert c.usage.input_tokens == count_tokens("Be brief." + "Hello?")
    assert c.usage.output_tokens == count_tokens("hi from litellm")
    assert c.usage.cached_tokens == 2
    req = srv.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-fake"
    assert req.body == {
        "model": "fake-model",  # LiteLLM strips its provider prefix
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello?"},
        ],
        "temperature": 0.2,
        "max_tokens": 30,
        "stop": ["END"],
        "seed": 11,
    }


async def test_through_the_registry(srv):
    options = ProviderOptions(base_url=srv.base_url, api_key="sk-reg", max_retries=0)
    lm = resolve_model("litellm:openai/fake-model", options, env={})
    c = await lm.complete(HELLO)
    assert c.text == "hi from litellm"
    assert srv.requests[0].headers["authorization"] == "Bearer sk-reg"


async def test_500_then_success_is_retried(srv):
    srv.fail_next(Fault.server_error())
    c = await make(srv, max_retries=1).complete(HELLO)
    assert c.text == "hi from litellm"
    assert [r.status for r in srv.requests] == [500, 200]


async def test_401_is_an_auth_error_and_not_retried(srv, capsys):
    srv.fail_next(Fault.auth(401), times=None)
    with pytest.raises(LMAuthError) as info:
        await make(srv, max_retries=2).complete(HELLO)
    assert info.value.status == 401
    assert len(srv.requests) == 1
    assert capsys.readouterr().out == ""  # LiteLLM's help banner stays off stdout


async def test_403_is_an_auth_error(srv):
    # LiteLLM raises a bare APIError for OpenAI's 403 (so its retry policy cannot exempt it);
    # the status code still makes it an auth error.
    srv.fail_next(Fault.auth(403), times=None)
    with pytest.raises(LMAuthError) as info:
        await make(srv).complete(HELLO)
    assert info.value.status == 403


async def test_400_is_a_request_error_and_not_retried(srv):
    srv.fail_next(Fault.bad_request("bad thing"), times=None)
    with pytest.raises(LMRequestError, match="bad thing"):
        await make(srv, max_retries=2).complete(HELLO)
    assert len(srv.requests) == 1


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.server_error(503), LMServerError),
        (Fault.rate_limit(retry_after=0), LMRateLimitError),
        (Fault.hang(30), LMTimeoutError),
    ],
)
async def test_retryable_failures_are_typed(srv, fault, error):
    srv.fail_next(fault, times=None)
    with pytest.raises(error):
        await make(srv, timeout_s=0.5).complete(HELLO)


async def test_connection_refused_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from recursa.lm.litellm import LiteLLM

    lm = LiteLLM("openai/x", api_base=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
    with pytest.raises(LMConnectionError):
        await lm.complete(HELLO)
