"""``gemini:`` and ``azure:`` through their OpenAI-compatible routes, against the fake server: the
path, query, headers and body each sends, and the errors that name what to set."""

from __future__ import annotations

import pytest

from recursa import RLM, Limits
from recursa.errors import ConfigError, LMAuthError, MissingAPIKeyError
from recursa.lm.base import ProviderOptions
from recursa.lm.registry import GEMINI_BASE_URL, azure_route, parse_model, resolve_model
from recursa.testing import FakeLLMServer
from recursa.types import LMSettings, Message
from tests.conftest import repl

HELLO = [Message.system("Be brief."), Message.user("Hello?")]
FAST = ProviderOptions(max_retries=0)


async def _ask(spec: str, env: dict[str, str], options: ProviderOptions = FAST, **settings):
    """One call through the registry; returns the request the server saw."""
    lm = resolve_model(spec, options, env=env)
    try:
        await lm.complete(HELLO, LMSettings(**settings))
    finally:
        await lm.aclose()
    return lm


# ---- gemini -------------------------------------------------------------------------------------


async def test_gemini_sends_a_bearer_key_to_the_openai_route():
    with FakeLLMServer(["hi"]) as srv:
        options = ProviderOptions(base_url=srv.base_url, max_retries=0)
        lm = await _ask("gemini:gemini-2.5-flash", {"GEMINI_API_KEY": "g-1"}, options)
        req = srv.requests[-1]
    assert lm.name == "gemini:gemini-2.5-flash"
    assert req.path == "/v1/chat/completions" and req.query == ""
    assert req.headers["authorization"] == "Bearer g-1" and "api-key" not in req.headers
    assert req.body["model"] == "gemini-2.5-flash"


def test_gemini_defaults_to_googles_route_and_takes_google_api_key_too():
    lm = resolve_model("gemini:gemini-2.5-pro", env={"GOOGLE_API_KEY": "g-2"})
    assert lm._url() == f"{GEMINI_BASE_URL}/chat/completions"  # type: ignore[attr-defined]
    assert GEMINI_BASE_URL == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert lm.api_key == "g-2"  # type: ignore[attr-defined]
    assert parse_model("gemini-2.5-flash") == ("gemini", "gemini-2.5-flash")


def test_gemini_without_a_key_names_both_variables():
    with pytest.raises(MissingAPIKeyError) as info:
        resolve_model("gemini:gemini-2.5-flash", env={})
    assert "GEMINI_API_KEY" in str(info.value) and "GOOGLE_API_KEY" in str(info.value)
    with pytest.raises(ConfigError, match="name a model"):
        resolve_model("gemini:", env={"GEMINI_API_KEY": "k"})


def test_a_gemini_run_without_a_known_price_warns_instead_of_failing():
    with FakeLLMServer([repl("FINAL('ok')")]) as srv:
        rlm = RLM(
            "gemini:gemini-9-ultra",
            base_url=srv.base_url,
            api_key="k",
            limits=Limits(max_iterations=2, max_cost_usd=1.0),
            journal=False,
        )
        result = rlm.run("q", "ctx")
    assert result.answer == "ok" and result.cost_usd is None
    assert any("gemini:gemini-9-ultra" in w and "no known price" in w for w in result.warnings)


# ---- azure --------------------------------------------------------------------------------------


def _azure_env(endpoint: str, **more: str) -> dict[str, str]:
    return {"AZURE_OPENAI_ENDPOINT": endpoint, "AZURE_OPENAI_API_KEY": "az-key", **more}


async def test_azure_v1_route_sends_the_api_key_header_and_the_deployment_as_model():
    with FakeLLMServer(["hi"], api_key="az-key") as srv:  # the server checks the header
        lm = await _ask("azure:my-gpt", _azure_env(srv.url), max_output_tokens=50)
        req = srv.requests[-1]
    assert lm.name == "azure:my-gpt" and req.status == 200
    assert req.path == "/openai/v1/chat/completions" and req.query == ""
    assert req.headers["api-key"] == "az-key" and "authorization" not in req.headers
    assert req.body["model"] == "my-gpt" and req.body["max_completion_tokens"] == 50


async def test_azure_with_an_api_version_uses_the_deployment_route():
    env = _azure_env("placeholder", AZURE_OPENAI_API_VERSION="2024-06-01")
    with FakeLLMServer(["hi"]) as srv:
        env["AZURE_OPENAI_ENDPOINT"] = srv.url + "/openai/"  # the route given too: accepted
        await _ask("azure:my dep", env, max_output_tokens=50)
        req = srv.requests[-1]
    assert req.path == "/openai/deployments/my%20dep/chat/completions"
    assert req.query == "api-version=2024-06-01"
    assert req.headers["api-key"] == "az-key"
    assert req.body["max_tokens"] == 50  # an api-version older than 2024-09-01 knows only this


async def test_azure_deployment_from_the_environment_and_a_wrong_key():
    env = _azure_env("placeholder", AZURE_OPENAI_DEPLOYMENT="env-dep")
    with FakeLLMServer(["hi"], api_key="another-key") as srv:
        env["AZURE_OPENAI_ENDPOINT"] = srv.url
        with pytest.raises(LMAuthError):
            await _ask("azure:", env)
        assert srv.requests[-1].body["model"] == "env-dep"


@pytest.mark.parametrize(
    ("version", "base", "query"),
    [
        (None, "https://r.openai.azure.com/openai/v1", {}),
        ("v1", "https://r.openai.azure.com/openai/v1", {}),
        ("preview", "https://r.openai.azure.com/openai/v1", {"api-version": "preview"}),
        (
            "2024-10-21",
            "https://r.openai.azure.com/openai/deployments/d",
            {"api-version": "2024-10-21"},
        ),
    ],
)
def test_azure_routes(version, base, query):
    for endpoint in ("https://r.openai.azure.com", "https://r.openai.azure.com/openai/v1/"):
        assert azure_route(endpoint, "d", version) == (base, query)


@pytest.mark.parametrize(
    ("spec", "env", "error", "names"),
    [
        ("azure:d", {"AZURE_OPENAI_API_KEY": "k"}, ConfigError, "AZURE_OPENAI_ENDPOINT"),
        (
            "azure:d",
            {"AZURE_OPENAI_ENDPOINT": "https://r"},
            MissingAPIKeyError,
            "AZURE_OPENAI_API_KEY",
        ),
        ("azure:", _azure_env("https://r"), ConfigError, "AZURE_OPENAI_DEPLOYMENT"),
        ("azure:d", _azure_env("r.openai.azure.com"), ConfigError, "is not a URL"),
    ],
)
def test_azure_errors_name_what_to_set(spec, env, error, names):
    with pytest.raises(error, match=names):
        resolve_model(spec, env=env)
