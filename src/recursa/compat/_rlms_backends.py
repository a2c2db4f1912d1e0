"""rlms backends and environments, translated to recursa models and sandbox tiers.

rlms names a model as ``backend`` plus ``backend_kwargs`` (``model_name``, ``api_key``,
``base_url``, ...); recursa as a ``provider:model`` string plus provider options. Each rlms backend
becomes one recursa :class:`~recursa.lm.base.LM` built with that backend's own URL and key, so a
root on OpenRouter and a sub model on a local vLLM never swap credentials.

This is an edge, like recursa's registry: rlms reads ``OPENROUTER_API_KEY`` and
``AI_GATEWAY_API_KEY`` for its gateway backends, and so does this module (recursa's ``openai:``
provider would otherwise send ``OPENAI_API_KEY`` to a gateway).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recursa.errors import ConfigError, MissingAPIKeyError
from recursa.lm.base import LM, ProviderOptions
from recursa.lm.registry import available_providers, resolve_model

__all__ = ["BackendSpec", "SandboxChoice", "build_lm", "choose_sandbox", "split_sampling"]

# OpenAI-compatible gateways rlms knows: default URL and the variable holding their key.
_GATEWAYS = {
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "vercel": ("https://ai-gateway.vercel.sh/v1", "AI_GATEWAY_API_KEY"),
}
# backend_kwargs recursa understands, per backend; anything else is refused by name.
_COMMON = frozenset({"model_name", "api_key", "timeout", "max_retries", "sampling_args"})
_KWARGS = {
    "openai": _COMMON | {"base_url"},
    "vllm": _COMMON | {"base_url"},
    "openrouter": _COMMON | {"base_url"},
    "vercel": _COMMON | {"base_url"},
    "litellm": _COMMON | {"base_url"},
    "anthropic": _COMMON | {"base_url", "max_tokens"},
    "gemini": _COMMON,
    "azure_openai": _COMMON | {"azure_endpoint", "api_version", "azure_deployment"},
}
_DEFAULT_MODEL = {"gemini": "gemini-2.5-flash"}

# rlms environments: which recursa tier stands in for each.
_LOCAL_TIERS = {"local": "process", "ipython": "process", "docker": "docker"}
_REMOTE = ("modal", "prime", "daytona", "e2b")
_ENV_KWARGS = frozenset({"trusted", "image", "cell_timeout"})


@dataclass(frozen=True)
class BackendSpec:
    """One rlms backend, resolved: the LM and the name rlms users know it by."""

    lm: LM
    model_name: str
    sampling: dict[str, Any] = field(default_factory=dict)


def _unknown_backend(backend: str) -> ConfigError:
    if backend == "portkey":
        return ConfigError(
            "backend='portkey' is not supported: point backend='openai' at your Portkey "
            "gateway (backend_kwargs={'base_url': 'https://api.portkey.ai/v1', ...}) or use "
            "backend='litellm'"
        )
    known = ", ".join(sorted(_KWARGS))
    return ConfigError(f"unknown backend {backend!r}; choose one of: {known}")


def _check_kwargs(backend: str, kwargs: Mapping[str, Any]) -> None:
    extra = sorted(set(kwargs) - _KWARGS[backend])
    if extra:
        allowed = ", ".join(sorted(_KWARGS[backend]))
        raise ConfigError(
            f"backend_kwargs {extra} are not supported for backend={backend!r} by "
            f"recursa.compat.rlms; accepted: {allowed}"
        )


def _gateway_key(backend: str, kwargs: Mapping[str, Any], base_url: str) -> str:
    default_url, var = _GATEWAYS[backend]
    key = kwargs.get("api_key") or os.environ.get(var)
    if not key and base_url.rstrip("/") == default_url:
        raise MissingAPIKeyError(backend, var)
    return str(key or "")


def _spec(
    backend: str, model: str, kwargs: Mapping[str, Any]
) -> tuple[str, ProviderOptions, dict[str, str]]:
    """The ``provider:model`` string, options and environment overrides for one rlms backend."""
    base_url = kwargs.get("base_url")
    api_key = kwargs.get("api_key")
    extra: dict[str, Any] = {}
    env: dict[str, str] = {}
    if backend == "vllm" and not base_url:
        raise ConfigError(
            "backend='vllm' needs backend_kwargs={'base_url': 'http://HOST:PORT/v1'} "
            "(the address of your vLLM server)"
        )
    if backend in _GATEWAYS:
        base_url = base_url or _GATEWAYS[backend][0]
        api_key = _gateway_key(backend, kwargs, base_url)
        extra["provider"] = backend  # the model is named "openrouter:..." in usage and traces
        spec = f"openai:{model}"
    elif backend in ("openai", "vllm", "anthropic", "litellm"):
        spec = f"{backend if backend != 'vllm' else 'openai'}:{model}"
        if backend == "anthropic" and kwargs.get("max_tokens") is not None:
            extra["default_max_tokens"] = int(kwargs["max_tokens"])
    elif backend == "gemini":
        spec = _native_or_litellm("gemini", "gemini", model)
    else:  # azure_openai: the deployment names the model; rlms' api_version is an env setting
        spec = _native_or_litellm("azure", "azure", kwargs.get("azure_deployment") or model)
        base_url = kwargs.get("azure_endpoint")
        if kwargs.get("api_version"):
            env["AZURE_OPENAI_API_VERSION"] = str(kwargs["api_version"])
    options = ProviderOptions(
        base_url=base_url,
        api_key=api_key,
        timeout_s=kwargs.get("timeout"),
        max_retries=kwargs.get("max_retries"),
        extra=extra,
    )
    return spec, options, env


def _native_or_litellm(provider: str, litellm_prefix: str, model: str) -> str:
    """recursa's own ``provider:`` backend where this install has it, else through LiteLLM."""
    if provider in available_providers():
        return f"{provider}:{model}"
    return f"litellm:{litellm_prefix}/{model}"


def build_lm(backend: str, backend_kwargs: Mapping[str, Any] | None) -> BackendSpec:
    """The recursa LM for ``backend`` and its ``backend_kwargs`` (rlms' names)."""
    if backend not in _KWARGS:
        raise _unknown_backend(backend)
    kwargs = dict(backend_kwargs or {})
    _check_kwargs(backend, kwargs)
    model = kwargs.get("model_name") or _DEFAULT_MODEL.get(backend)
    if not model:
        raise ConfigError(
            f"backend={backend!r} needs a model: pass backend_kwargs={{'model_name': ...}}"
        )
    spec, options, env = _spec(backend, str(model), kwargs)
    # The registry reads provider settings from the environment; an rlms argument wins.
    lm = resolve_model(spec, options, {**os.environ, **env} if env else None)
    return BackendSpec(lm, str(model), dict(kwargs.get("sampling_args") or {}))


# ---- sampling ----------------------------------------------------------------------------------

_SAMPLING_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning_effort",
}


def split_sampling(args: Mapping[str, Any]) -> dict[str, Any]:
    """rlms ``sampling_args`` as recursa's sampling keywords: the known names are renamed,
    everything else (``seed``, ``extra_body``...) goes to the provider as it is."""
    out: dict[str, Any] = {}
    provider: dict[str, Any] = {}
    for key, value in args.items():
        if value is None:
            continue
        if key in _SAMPLING_NAMES:
            out[_SAMPLING_NAMES[key]] = value
        elif key == "extra_body" and isinstance(value, Mapping):
            provider.update(value)
        else:
            provider[key] = value
    if provider:
        out["provider_options"] = provider
    return out


# ---- environments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxChoice:
    """Where model code runs: a recursa tier, in-process only when asked, and its knobs."""

    tier: str
    trusted: bool = False
    docker_image: str | None = None
    cell_timeout_s: float | None = None


def choose_sandbox(environment: str, environment_kwargs: Mapping[str, Any]) -> SandboxChoice:
    """The recursa tier for an rlms ``environment``. rlms' ``local`` runs model code inside
    your process; recursa runs it in a separate, locked-down worker unless ``trusted`` says
    otherwise."""
    if environment in _REMOTE:
        raise ConfigError(
            f"environment={environment!r} (a hosted sandbox) is not available in recursa: "
            "use 'local' (recursa's process sandbox: a separate worker with seccomp and "
            "Landlock) or 'docker'; recursa also has a 'wasm' tier (RLM(sandbox='wasm'))"
        )
    tier = _LOCAL_TIERS.get(environment)
    if tier is None:
        raise ConfigError(
            f"unknown environment {environment!r}; choose one of: local, ipython, docker"
        )
    extra = sorted(set(environment_kwargs) - _ENV_KWARGS)
    if extra:
        raise ConfigError(
            f"environment_kwargs {extra} are not supported by recursa.compat.rlms; accepted: "
            "trusted (run code in this process, as rlms' 'local' does), image (docker), "
            "cell_timeout (seconds per code block)"
        )
    trusted = bool(environment_kwargs.get("trusted", False))
    if trusted and tier != "process":
        raise ConfigError("environment_kwargs={'trusted': True} only applies to 'local'")
    image = environment_kwargs.get("image")
    if image is not None and tier != "docker":
        raise ConfigError("environment_kwargs={'image': ...} only applies to 'docker'")
    timeout = environment_kwargs.get("cell_timeout")
    return SandboxChoice(
        tier,
        trusted=trusted,
        docker_image=str(image) if image is not None else None,
        cell_timeout_s=float(timeout) if timeout is not None else None,
    )
