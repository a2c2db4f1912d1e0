"""The model registry: provider:model strings, inference, keys, base URLs, custom providers."""

from __future__ import annotations

import json

import pytest

from recursa.errors import ConfigError, MissingAPIKeyError, UnknownProviderError
from recursa.lm import registry
from recursa.lm.anthropic import ANTHROPIC_BASE_URL, AnthropicLM
from recursa.lm.base import BaseLM, ProviderOptions
from recursa.lm.openai import OPENAI_BASE_URL, OpenAIChatLM
from recursa.lm.registry import available_providers, parse_model, register_provider, resolve_model
from recursa.lm.scripted import ScriptedLM


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gpt-5-mini", ("openai", "gpt-5-mini")),
        ("chatgpt-4o-latest", ("openai", "chatgpt-4o-latest")),
        ("o1", ("openai", "o1")),
        ("o3-mini", ("openai", "o3-mini")),
        ("o4-mini", ("openai", "o4-mini")),
        ("claude-sonnet-4-5", ("anthropic", "claude-sonnet-4-5")),
        ("openai:gpt-4o", ("openai", "gpt-4o")),
        ("  OpenAI:gpt-4o ", ("openai", "gpt-4o")),
        ("ollama:qwen2.5-coder:7b", ("ollama", "qwen2.5-coder:7b")),  # the tag keeps its colon
        ("litellm:groq/llama-3.1-8b", ("litellm", "groq/llama-3.1-8b")),
        ("local", ("local", "")),
        ("ollama", ("ollama", "")),
    ],
)
def test_parse_model(spec, expected):
    assert parse_model(spec) == expected


def test_bare_unknown_name_asks_for_a_provider():
    with pytest.raises(UnknownProviderError, match="provider:model") as info:
        parse_model("mistral-large")
    assert "openai" in str(info.value)  # it lists the providers there are


def test_empty_model_string():
    with pytest.raises(ConfigError, match="empty model name"):
        parse_model("   ")


def test_unknown_provider_lists_the_known_ones():
    with pytest.raises(UnknownProviderError, match="nosuch") as info:
        resolve_model("nosuch:model", env={})
    for name in ("openai", "anthropic", "ollama", "litellm", "scripted"):
        assert name in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_builtin_providers_are_available():
    assert {"openai", "anthropic", "ollama", "litellm", "scripted"} <= set(available_providers())


# ---- OpenAI ---------------------------------------------------------------------------------------


def test_openai_without_key_names_the_env_var():
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY") as info:
        resolve_model("openai:gpt-5-mini", env={})
    assert info.value.env_var == "OPENAI_API_KEY"
    assert info.value.provider == "openai"


def test_openai_key_from_env():
    lm = resolve_model("gpt-5-mini", env={"OPENAI_API_KEY": "sk-env"})
    assert isinstance(lm, OpenAIChatLM)
    assert (lm.name, lm.api_key, lm.base_url) == ("openai:gpt-5-mini", "sk-env", OPENAI_BASE_URL)


def test_explicit_options_win_over_env():
    options = ProviderOptions(api_key="sk-opt", base_url="http://127.0.0.1:9/v1/")
    lm = resolve_model("openai:m", options, env={"OPENAI_API_KEY": "sk-env"})
    assert (lm.api_key, lm.base_url) == ("sk-opt", "http://127.0.0.1:9/v1")


@pytest.mark.parametrize("where", ["option", "env"])
def test_custom_base_url_needs_no_openai_key(where):
    url = "http://127.0.0.1:8000/v1"
    if where == "option":
        lm = resolve_model("openai:served-model", ProviderOptions(base_url=url), env={})
    else:
        lm = resolve_model("openai:served-model", env={"OPENAI_BASE_URL": url})
    assert isinstance(lm, OpenAIChatLM)
    assert (lm.base_url, lm.api_key) == (url, None)


def test_openai_needs_a_model_name():
    with pytest.raises(ConfigError, match="name a model"):
        resolve_model("openai:", env={"OPENAI_API_KEY": "k"})


def test_timeout_and_retries_options_reach_the_backend():
    options = ProviderOptions(timeout_s=12.5, max_retries=0, extra={"extra_body": {"top_k": 3}})
    lm = resolve_model("openai:m", options, env={"OPENAI_API_KEY": "k"})
    assert lm.timeout_s == 12.5
    assert lm.retry.max_retries == 0
    assert lm.extra_body == {"top_k": 3}


# ---- Anthropic --------------------------------------------------------------------------------


def test_anthropic_without_key_names_the_env_var():
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY") as info:
        resolve_model("claude-sonnet-4-5", env={})
    assert info.value.env_var == "ANTHROPIC_API_KEY"
    # A custom base URL does not excuse a missing Anthropic key (compatible proxies want one too).
    with pytest.raises(MissingAPIKeyError):
        resolve_model("anthropic:c", ProviderOptions(base_url="http://127.0.0.1:1"), env={})


def test_anthropic_from_env():
    env = {"ANTHROPIC_API_KEY": "sk-ant", "ANTHROPIC_BASE_URL": "http://127.0.0.1:7/"}
    lm = resolve_model("anthropic:claude-haiku-4-5", env=env)
    assert isinstance(lm, AnthropicLM)
    assert (lm.name, lm.api_key, lm.base_url) == (
        "anthropic:claude-haiku-4-5",
        "sk-ant",
        "http://127.0.0.1:7",
    )
    assert resolve_model("claude-x", env={"ANTHROPIC_API_KEY": "k"}).base_url == ANTHROPIC_BASE_URL


# ---- Ollama -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ollama_host", "base_url"),
    [
        (None, "http://localhost:11434/v1"),
        ("localhost:11434", "http://localhost:11434/v1"),
        ("127.0.0.1:9999", "http://127.0.0.1:9999/v1"),
        ("http://gpu-box:11434/", "http://gpu-box:11434/v1"),
        ("http://gpu-box:11434/v1", "http://gpu-box:11434/v1"),
        ("https://ollama.example.com", "https://ollama.example.com/v1"),
        # Ollama's own clients read a host without scheme and port as port 11434, not 80.
        ("0.0.0.0", "http://0.0.0.0:11434/v1"),
        ("gpu-box", "http://gpu-box:11434/v1"),
        ("http://gpu-box", "http://gpu-box/v1"),  # a scheme without a port: its usual port
    ],
)
def test_ollama_url_from_ollama_host(ollama_host, base_url):
    env = {} if ollama_host is None else {"OLLAMA_HOST": ollama_host}
    lm = resolve_model("ollama:qwen2.5-coder:7b", env=env)
    assert isinstance(lm, OpenAIChatLM)
    assert lm.base_url == base_url
    assert lm.name == "ollama:qwen2.5-coder:7b"
    assert lm.model == "qwen2.5-coder:7b"
    assert lm.api_key is None


def test_ollama_host_with_a_bad_port_is_a_config_error():
    with pytest.raises(ConfigError, match="OLLAMA_HOST"):
        resolve_model("ollama:m", env={"OLLAMA_HOST": "gpu-box:port"})


def test_ollama_explicit_base_url_is_taken_as_given():
    lm = resolve_model("ollama:m", ProviderOptions(base_url="http://proxy/ollama"), env={})
    assert lm.base_url == "http://proxy/ollama/v1"


# ---- scripted, instances, custom providers --------------------------------------------------------


def test_scripted_provider_loads_a_file(tmp_path):
    script = tmp_path / "demo.json"
    script.write_text(json.dumps(["one"]))
    lm = resolve_model(f"scripted:{script}", env={})
    assert isinstance(lm, ScriptedLM)
    assert lm.name == "scripted:demo"


def test_scripted_provider_needs_a_file():
    with pytest.raises(ConfigError, match="script file"):
        resolve_model("scripted:", env={})


def test_an_lm_instance_is_returned_as_is():
    lm = ScriptedLM("x")
    assert resolve_model(lm) is lm


class _Echo(BaseLM):
    def __init__(self, model: str, options: ProviderOptions) -> None:
        self.name = f"echo:{model}"
        self.options = options


def test_register_provider_and_refuse_duplicates():
    seen = {}

    def factory(model, options, env):
        seen["env"] = env
        return _Echo(model, options)

    register_provider("echo-test", factory)
    try:
        lm = resolve_model("echo-test:m1", ProviderOptions(timeout_s=3), env={"X": "1"})
        assert lm.name == "echo:m1"
        assert lm.options.timeout_s == 3
        assert seen["env"] == {"X": "1"}
        with pytest.raises(ConfigError, match="already registered"):
            register_provider("echo-test", factory)
        register_provider("echo-test", lambda m, o, e: _Echo("replaced", o), replace=True)
        assert resolve_model("echo-test:m1", env={}).name == "echo:replaced"
    finally:
        registry._PROVIDERS.pop("echo-test", None)


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("vertex:gemini-2.5-flash", "litellm:vertex_ai/gemini-2.5-flash"),
        ("bedrock:my-model", "litellm:bedrock/my-model"),
    ],
)
def test_providers_litellm_serves_get_a_litellm_hint(spec, hint):
    with pytest.raises(UnknownProviderError, match=hint):
        resolve_model(spec, env={})


def test_missing_key_without_the_local_extra_suggests_installing_it(monkeypatch):
    monkeypatch.setattr(registry, "_local_installed", lambda: False)
    with pytest.raises(MissingAPIKeyError) as info:
        resolve_model("anthropic:claude-sonnet-4-5", env={})
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert "pass --model local" not in str(info.value)
    assert "recursa[local]" in str(info.value)
