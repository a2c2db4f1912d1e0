"""Every other provider through LiteLLM (``pip install 'recursa[litellm]'``).

``litellm:PROVIDER/MODEL`` is passed to ``litellm.acompletion`` as ``PROVIDER/MODEL``; keys come
from the environment variables LiteLLM documents for each provider. LiteLLM does its own retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from recursa.errors import (
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
    try:
        import litellm
    except ImportError as exc:
        raise MissingDependencyError("the litellm: provider", "litellm", "litellm") from exc
    return litellm


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
        table: list[tuple[str, type[LMError]]] = [
            ("AuthenticationError", LMAuthError),
            ("PermissionDeniedError", LMAuthError),
            ("RateLimitError", LMRateLimitError),
            ("Timeout", LMTimeoutError),
            ("APIConnectionError", LMConnectionError),
            ("BadRequestError", LMRequestError),
            ("NotFoundError", LMRequestError),
            ("InternalServerError", LMServerError),
            ("ServiceUnavailableError", LMServerError),
        ]
        for attr, err in table:
            cls = getattr(ll, attr, None)
            if isinstance(cls, type) and isinstance(exc, cls):
                return err(msg, model=self.name)
        return LMError(msg, model=self.name)

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
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
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
