"""Server configuration: which models a client may name, the limits every run gets, capacity.

Model names a client may send:

- ``rlm``: the configured default root model (``--model``, else ``RECURSA_MODEL``, else the
  embedded local model) with the configured sub model.
- an alias (``--alias fast=openai:gpt-5-mini``): that root model with the configured sub model.
- ``rlm:PROVIDER:MODEL``: a configured model (root or sub), or one the operator allowed with an
  ``allowed_models`` pattern (``--allow-model 'openai:gpt-5*'``). Nothing else: a client picking
  any model would pick where the operator's API keys go (``litellm:`` routes a key by the model
  name) and which files the server loads (``local:/path.gguf``). ``scripted:`` models are never
  accepted this way, because their "model name" is a file on the server.

Each provider's API root is its own: ``base_urls`` maps a provider to the URL its key goes to,
so a ``--base-url`` given for ``openai`` never receives ``ANTHROPIC_API_KEY``.

Limits come from the server; a request may only tighten them (see :func:`tighten_limits`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recursa.errors import ConfigError
from recursa.limits import Limits
from recursa.lm.base import ProviderOptions
from recursa.lm.registry import default_model_spec, parse_model
from recursa.paths import data_dir
from recursa.server.errors import ModelNotFound, RequestError

__all__ = [
    "DEFAULT_LIMITS",
    "TIGHTENABLE",
    "ModelChoice",
    "ServerConfig",
    "tighten_limits",
]

# A server run that nobody bounded would hold a sandbox and a run slot forever.
DEFAULT_LIMITS = Limits(timeout_s=600.0)

# Limits a request may tighten, and whether each is a count (int) or an amount (float).
TIGHTENABLE: Mapping[str, type] = {
    "max_iterations": int,
    "max_depth": int,
    "max_llm_calls": int,
    "max_tokens": int,
    "max_cost_usd": float,
    "timeout_s": float,
}

# Model names a client can never pick directly: their "model" part is a path on the server.
_SERVER_SIDE_PROVIDERS = frozenset({"scripted"})
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelChoice:
    """What a requested model name resolved to."""

    name: str  # as the client sent it
    root: str  # provider:model of the root model
    sub: str | None  # provider:model of the sub model; None: the root model


@dataclass(frozen=True)
class ServerConfig:
    """Everything both servers need. Built once by the CLI (or a test) and never changed.

    Attributes:
        model: default root model (``None``: ``RECURSA_MODEL``, else the embedded local model).
        sub_model: sub model for every run (``None``: the run's root model).
        aliases: extra model names clients may send, each mapped to a root model.
        open_models: accept ``rlm:PROVIDER:MODEL`` names matching ``allowed_models``
            (``False``: only configured models, whatever ``allowed_models`` says).
        allowed_models: ``fnmatch`` patterns of ``provider:model`` names clients may pick
            beyond the configured ones (``"openai:gpt-5*"``, ``"anthropic:*"``). Default: none.
        base_urls: API root per provider (``{"openai": "http://vllm:8000/v1"}``); a provider
            not named here uses its own default (``OPENAI_BASE_URL``...), never another's URL.
        limits: the limits of every run; requests may only tighten them.
        max_concurrent_runs: runs at once; past it, requests are refused with 429 at once.
        retry_after_s: what the 429 answer tells clients to wait.
        max_sessions: live sessions at once (requests naming ``recursa.session``); the one
            idle longest is closed to make room.
        session_idle_s: a session without a question for this long is closed.
        api_key: when set, HTTP clients must send ``Authorization: Bearer <api_key>``.
        max_body_bytes: largest request body accepted (413 past it).
        progress: stream progress chunks unless a request says otherwise.
        store_runs: keep each run's trace and summary under ``runs_dir``.
        runs_dir: where runs are kept (default: ``<data dir>/server-runs``).
        keep_runs: how many stored runs to keep; the oldest are removed first.
        rlm_options: extra keyword arguments for every :class:`~recursa.rlm.RLM`
            (``base_url``, ``sandbox``, ``prices``, ``prompt_profile``...).
    """

    model: str | None = None
    sub_model: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    open_models: bool = True
    allowed_models: tuple[str, ...] = ()
    base_urls: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = DEFAULT_LIMITS
    max_concurrent_runs: int = 4
    retry_after_s: int = 5
    max_sessions: int = 16
    session_idle_s: float = 900.0
    api_key: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    progress: bool = False
    store_runs: bool = True
    runs_dir: Path | None = None
    keep_runs: int = 1000
    rlm_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "max_concurrent_runs",
            "max_body_bytes",
            "keep_runs",
            "retry_after_s",
            "max_sessions",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if not self.session_idle_s > 0:
            raise ConfigError(f"session_idle_s must be above 0 (got {self.session_idle_s})")
        for alias, spec in self.aliases.items():
            if alias == "rlm" or not _ALIAS.match(alias):
                raise ConfigError(
                    f"bad alias name {alias!r}: use letters, digits, '.', '_' or '-' "
                    "(and not 'rlm', which is the default model)"
                )
            if not spec.strip():
                raise ConfigError(f"alias {alias!r} names no model: write NAME=PROVIDER:MODEL")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("the API key is empty: pass a non-empty --api-key or none at all")
        for pattern in self.allowed_models:
            if ":" not in pattern:
                raise ConfigError(
                    f"--allow-model {pattern!r}: write a PROVIDER:MODEL pattern, e.g. "
                    "'openai:gpt-5*' ('*:*' allows every model, local files included)"
                )
        for provider, url in self.base_urls.items():
            if not provider or provider != provider.lower() or not url.strip():
                raise ConfigError(
                    f"bad base URL {provider}={url!r}: write PROVIDER=URL, e.g. "
                    "openai=http://localhost:8000/v1"
                )
        for key in ("base_url", "api_key"):
            if key in self.rlm_options:
                # One URL or key for every provider is how a key reaches the wrong server.
                raise ConfigError(
                    f"rlm_options may not set {key}: it would apply to every provider a client "
                    "picks; give base_urls={provider: url} (keys come from each provider's "
                    "environment variable)"
                )

    @property
    def default_model(self) -> str:
        return self.model or default_model_spec()

    @property
    def stored_runs_dir(self) -> Path:
        return self.runs_dir or data_dir() / "server-runs"

    def model_names(self) -> dict[str, ModelChoice]:
        """Every name ``GET /v1/models`` lists, with what it runs."""
        names = {"rlm": ModelChoice("rlm", self.default_model, self.sub_model)}
        for alias, spec in self.aliases.items():
            names[alias] = ModelChoice(alias, spec, self.sub_model)
        return names

    def configured_models(self) -> dict[str, str]:
        """Every model the operator named (root models and the sub model), by canonical name."""
        specs = [c.root for c in self.model_names().values()]
        if self.sub_model:
            specs.append(self.sub_model)
        return {_canonical(s): s for s in specs}

    def allows(self, spec: str) -> bool:
        """True when clients may pick ``spec`` (canonical ``provider:model``) by name."""
        return self.open_models and any(
            fnmatch.fnmatchcase(spec, pattern) for pattern in self.allowed_models
        )

    def choose_model(self, name: str) -> ModelChoice:
        """The models behind a requested name; :class:`ModelNotFound` when there are none."""
        known = self.model_names()
        if name in known:
            return known[name]
        prefix, sep, spec = name.partition(":")
        if prefix != "rlm" or not sep or not spec.strip():
            raise ModelNotFound(
                f"the model {name!r} does not exist here; use 'rlm', 'rlm:PROVIDER:MODEL' or "
                f"one of: {', '.join(known)}",
                param="model",
            )
        canonical = _canonical(spec)
        configured = self.configured_models()
        if canonical in configured:
            return ModelChoice(name, configured[canonical], self.sub_model)
        try:
            provider, _ = parse_model(spec)
        except ConfigError as exc:
            raise ModelNotFound(str(exc), param="model") from None
        if provider in _SERVER_SIDE_PROVIDERS:
            raise ModelNotFound(
                f"{provider}: models cannot be chosen by clients; configure them on the server "
                "with --model or --alias",
                param="model",
            )
        if not self.allows(canonical):
            raise ModelNotFound(
                f"this server does not run {canonical!r}: use one of {', '.join(known)} "
                "(the operator can allow more with --allow-model PATTERN)",
                param="model",
            )
        return ModelChoice(name, canonical, self.sub_model)

    def provider_options(self, spec: str) -> ProviderOptions:
        """Options for building ``spec``: the base URL configured for its provider, if any."""
        provider = _canonical(spec).partition(":")[0]
        return ProviderOptions(base_url=self.base_urls.get(provider))


def _canonical(spec: str) -> str:
    """``provider:model`` with the provider inferred and lower-cased (``gpt-5`` is
    ``openai:gpt-5``), so a pattern or a configured name cannot be dodged by spelling."""
    try:
        provider, model = parse_model(spec)
    except ConfigError:
        return spec.strip()
    return f"{provider}:{model}" if model else provider


def _check_limit(key: str, value: Any) -> float | int:
    kind = TIGHTENABLE[key]
    param = f"recursa.{key}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{key} must be a number (got {value!r})", param=param)
    if kind is int and not isinstance(value, int):
        raise RequestError(f"{key} must be a whole number (got {value!r})", param=param)
    if not math.isfinite(value):
        raise RequestError(f"{key} must be finite (got {value!r})", param=param)
    lowest = 0 if key == "max_depth" else 1 if kind is int else 0
    if value < lowest or (kind is float and value <= 0):
        bound = f"at least {lowest}" if kind is int else "positive"
        raise RequestError(f"{key} must be {bound} (got {value!r})", param=param)
    return value


def tighten_limits(base: Limits, overrides: Mapping[str, Any]) -> Limits:
    """``base`` with each override applied only where it is stricter.

    A request can lower ``max_iterations`` from 30 to 5, never raise it; where the server sets
    no bound (``None``), the request's value becomes the bound. Unknown keys and bad values
    raise :class:`RequestError`, so a typo does not silently run unbounded.
    """
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in TIGHTENABLE:
            raise RequestError(
                f"unknown limit {key!r}; a request may tighten: {', '.join(TIGHTENABLE)}",
                param=f"recursa.{key}",
            )
        if value is None:
            continue
        value = _check_limit(key, value)
        current = getattr(base, key)
        changes[key] = value if current is None else min(current, value)
    return dataclasses.replace(base, **changes) if changes else base
