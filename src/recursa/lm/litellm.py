"""Every other provider through LiteLLM (``pip install 'recursa[litellm]'``).

``litellm:PROVIDER/MODEL`` is passed to ``litellm.acompletion`` as ``PROVIDER/MODEL``; keys come
from the environment variables LiteLLM documents for each provider. LiteLLM does its own retries.

LiteLLM is imported on first use with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` set for that import
only (so it uses its bundled model-cost map instead of fetching one): the process environment
is left unchanged. Set the variable yourself (to anything else) to let LiteLLM fetch the map.

Sampling: ``top_p`` and ``reasoning_effort`` are passed as LiteLLM's own arguments (it maps the
effort to each provider's form: OpenAI's field, Anthropic's thinking budget...);
``provider_options`` become keyword arguments of ``litellm.acompletion``, which sends the ones
it does not know to the provider. Arguments recursa passes itself (``timeout``,
``num_retries``, ``api_key``, ``api_base``...) cannot be provider options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from recursa._imports import import_with_env
from recursa.errors import (
    ConfigError,
    LMAuthError,
    LMConnectionError,
    LMError,
    LMRateLimitError,
    LMRequestError,
    LMResponseError,
    LMServerError,
    LMTimeoutError,
    MissingDependencyError,
)
from recursa.lm.base import BaseLM
from recursa.types import Completion, LMSettings, Message, Usage

__all__ = ["LiteLLM"]


def _import_litellm() -> Any:
    # While it is imported, LiteLLM fetches its model-cost map from GitHub (seconds of retries
    # when offline, and a network call nobody asked for); the copy bundled with the package is
    # enough. Only an environment variable, read during that import, turns the fetch off: it is
    # set for the import alone (a user's own value wins), so os.environ is left as it was.
    try:
        litellm: Any = import_with_env("litellm", {"LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    except ImportError as exc:
        raise MissingDependencyError("the litellm: provider", "litellm", "litellm") from exc
    # Otherwise every failed call prints a "Give Feedback / Get Help" banner to stdout, where
    # the CLI prints the answer alone.
    litellm.suppress_debug_info = True
    return litellm


# acompletion's own arguments that recursa sets: a provider option of that name would replace the
# call's timeout, retries, key or endpoint rather than reach the provider.
_LITELLM_ARGS = frozenset(
    {"timeout", "num_retries", "retry_policy", "api_key", "api_base", "base_url", "stream"}
)


def _connection_failed(exc: BaseException) -> bool:
    """LiteLLM reports a refused connection as a 500; the cause chain tells the truth."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, (ConnectionError, httpx.ConnectError)):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def _by_status(status: int | None) -> type[LMError]:
    if status in (401, 403):
        return LMAuthError
    if status == 429:
        return LMRateLimitError
    if status is not None and status >= 500:
        return LMServerError
    if status is not None and status >= 400:
        return LMRequestError
    return LMError


class LiteLLM(BaseLM):
    """A model reached through ``litellm.acompletion``."""

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 4,
        **kwargs: Any,
    ) -> None:
        self._litellm = _import_litellm()
        self.model = model
        self.name = f"litellm:{model}"
        self.api_base = api_base
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.kwargs = kwargs

    def _map_error(self, exc: Exception) -> LMError:
        ll = self._litellm
        msg = f"{self.name}: {type(exc).__name__}: {exc}"
        status = getattr(exc, "status_code", None)
        status = status if isinstance(status, int) else None
        timeout = getattr(ll, "Timeout", None)
        if isinstance(timeout, type) and isinstance(exc, timeout):
            return LMTimeoutError(msg, model=self.name)
        if _connection_failed(exc):
            return LMConnectionError(msg, model=self.name)
        table: list[tuple[str, type[LMError]]] = [
            ("AuthenticationError", LMAuthError),
            ("PermissionDeniedError", LMAuthError),
            ("RateLimitError", LMRateLimitError),
            ("APIConnectionError", LMConnectionError),
            ("BadRequestError", LMRequestError),
            ("NotFoundError", LMRequestError),
            ("InternalServerError", LMServerError),
            ("ServiceUnavailableError", LMServerError),
        ]
        for attr, err in table:
            cls = getattr(ll, attr, None)
            if isinstance(cls, type) and isinstance(exc, cls):
                return err(msg, model=self.name, status=status)
        # Some statuses arrive as a bare APIError (LiteLLM maps OpenAI's 403 that way).
        return _by_status(status)(msg, model=self.name, status=status)

    def _retry_policy(self) -> Any:
        """LiteLLM retries every failure; errors that never clear by themselves are not retried."""
        policy = getattr(self._litellm, "RetryPolicy", None)
        if policy is None:
            return None
        return policy(
            AuthenticationErrorRetries=0,
            BadRequestErrorRetries=0,
            NotFoundErrorRetries=0,
            ContentPolicyViolationErrorRetries=0,
        )

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        s = settings or LMSettings()
        kwargs: dict[str, Any] = dict(self.kwargs)
        if s.temperature is not None:
            kwargs["temperature"] = s.temperature
        if s.max_output_tokens is not None:
            kwargs["max_tokens"] = s.max_output_tokens
        if s.stop:
            kwargs["stop"] = list(s.stop)
        if s.seed is not None:
            kwargs["seed"] = s.seed
        if s.top_p is not None:
            kwargs["top_p"] = s.top_p
        if s.reasoning_effort is not None:
            kwargs["reasoning_effort"] = s.reasoning_effort
        clash = sorted(_LITELLM_ARGS.intersection(s.provider_options))
        if clash:
            raise ConfigError(
                f"{self.name}: provider option {clash[0]!r} is an argument recursa passes to "
                "LiteLLM itself: set it through recursa (call_timeout_s, max_retries, "
                "base_url, api_key) and drop the option"
            )
        kwargs.update(s.provider_options)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        policy = self._retry_policy()
        if policy is not None:
            kwargs.setdefault("retry_policy", policy)
        try:
            resp = await self._litellm.acompletion(
                model=self.model,
                messages=[m.to_dict() for m in messages],
                timeout=s.timeout_s or self.timeout_s,
                num_retries=self.max_retries,
                **kwargs,
            )
        except Exception as exc:
            raise self._map_error(exc) from exc
        try:
            choice = resp.choices[0]
            text = choice.message.content or ""
        except (AttributeError, IndexError) as exc:
            raise LMResponseError(
                f"{self.name}: no choices in the response", model=self.name
            ) from exc
        raw = getattr(resp, "usage", None)
        details = getattr(raw, "prompt_tokens_details", None)
        usage = Usage(
            input_tokens=int(getattr(raw, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(raw, "completion_tokens", 0) or 0),
            cached_tokens=int(getattr(details, "cached_tokens", 0) or 0),
            calls=1,
        )
        return Completion(
            text=text,
            usage=usage,
            model=str(getattr(resp, "model", "") or self.model),
            finish_reason=getattr(choice, "finish_reason", None),
        )
