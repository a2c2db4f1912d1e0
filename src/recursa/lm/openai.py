"""Any OpenAI-compatible Chat Completions endpoint: OpenAI, vLLM, llama.cpp server, OpenRouter,
Ollama's ``/v1``, Gemini's and Azure OpenAI's compatible routes (see :mod:`recursa.lm.registry`).
Spoken over plain HTTP with httpx; the ``openai`` package is not needed.

Sampling: ``top_p`` and ``reasoning_effort`` are sent as the API names them (a model that does
not reason rejects ``reasoning_effort`` with the provider's own 400 message), and
``LMSettings.provider_options`` is merged into the JSON body last, so it can set any other
field the server takes (``service_tier``, ``top_k`` on vLLM, ``logit_bias``...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from recursa.errors import LMResponseError
from recursa.lm._http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    HTTPBackend,
    token_count,
    usage_object,
)
from recursa.lm.retry import RetryPolicy
from recursa.types import Completion, LMSettings, Message, Usage

__all__ = ["OpenAIChatLM"]

OPENAI_BASE_URL = "https://api.openai.com/v1"


class OpenAIChatLM(HTTPBackend):
    """A model behind ``POST {base_url}/chat/completions``.

    Args:
        model: the model name the server knows (``gpt-5-mini``, ``Qwen/Qwen2.5-7B-Instruct``).
        base_url: the API root, ending in ``/v1`` for most servers.
        api_key: sent as a bearer token when given (local servers usually need none).
        provider: the prefix used in :attr:`name` (``openai`` or ``ollama``), for prices and traces.
        timeout_s: time for one attempt, from sending to the last byte of the answer
            (``LMSettings.timeout_s`` overrides it per call); see :mod:`recursa.lm.retry`.
        retry: retry policy for 429/5xx/timeouts (:class:`~recursa.lm.retry.RetryPolicy`).
        client: an ``httpx.AsyncClient`` to use (and not close); tests pass one with a transport.
        extra_body: JSON fields added to every request body.
        max_response_bytes: a larger response body is dropped and the call fails.
        api_key_header: the header that carries the key: ``authorization`` (as a bearer token)
            or another name that takes the bare key (Azure's ``api-key``).
        query: query parameters of every request (Azure's ``api-version``).
        max_tokens_field: the body field of the output cap (default: ``max_completion_tokens``
            for api.openai.com, ``max_tokens`` for other servers, which mostly know only that).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = OPENAI_BASE_URL,
        api_key: str | None = None,
        provider: str = "openai",
        timeout_s: float = 600.0,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        extra_body: dict[str, Any] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        api_key_header: str = "authorization",
        query: Mapping[str, str] | None = None,
        max_tokens_field: str | None = None,
    ) -> None:
        self.endpoint = "/chat/completions"
        self.max_response_bytes = max_response_bytes
        self.model = model
        self.name = f"{provider}:{model}"
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.extra_body = dict(extra_body or {})
        self.api_key_header = api_key_header.lower()
        self.query = dict(query or {})
        # api.openai.com wants the newer name; most compatible servers only know the old one.
        self.max_tokens_field = max_tokens_field or (
            "max_completion_tokens" if "api.openai.com" in self.base_url else "max_tokens"
        )
        super().__init__(client)

    def _url(self) -> str:
        url = f"{self.base_url}{self.endpoint}"
        return f"{url}?{urlencode(self.query)}" if self.query else url

    def _payload(self, messages: Sequence[Message], s: LMSettings) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_dict() for m in messages],
        }
        if s.temperature is not None:
            payload["temperature"] = s.temperature
        if s.max_output_tokens is not None:
            payload[self.max_tokens_field] = s.max_output_tokens
        if s.top_p is not None:
            payload["top_p"] = s.top_p
        if s.reasoning_effort is not None:
            payload["reasoning_effort"] = s.reasoning_effort
        if s.stop:
            payload["stop"] = list(s.stop)
        if s.seed is not None:
            payload["seed"] = s.seed
        payload.update(self.extra_body)
        # Last: the user's pass-through may set any field the server takes. The fields recursa
        # sets itself (model, messages, stream...) are refused when the settings are built.
        payload.update(s.provider_options)
        return payload

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key and self.api_key_header == "authorization":
            headers["authorization"] = f"Bearer {self.api_key}"
        elif self.api_key:
            headers[self.api_key_header] = self.api_key
        return headers

    def _parse(self, data: dict[str, Any]) -> Completion:
        try:
            choice = data["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise LMResponseError(
                f"{self.name}: the response has no choices[0].message: {str(data)[:300]}",
                model=self.name,
            ) from exc
        if not isinstance(text, str):  # some servers return content parts
            text = self._join_parts(text)
        raw = usage_object(data, "usage", self.name)
        details = usage_object(raw, "prompt_tokens_details", self.name)
        input_tokens = token_count(raw, "prompt_tokens", self.name)
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=token_count(raw, "completion_tokens", self.name),
            cached_tokens=min(input_tokens, token_count(details, "cached_tokens", self.name)),
            calls=1,
        )
        model, reason = data.get("model"), choice.get("finish_reason")
        return Completion(
            text=text,
            usage=usage,
            model=model if isinstance(model, str) and model else self.model,
            finish_reason=reason if isinstance(reason, str) else None,
        )

    def _join_parts(self, content: Any) -> str:
        """Content given as a list of parts: their text, joined; anything else is malformed."""
        if not isinstance(content, list):
            raise LMResponseError(
                f"{self.name}: choices[0].message.content is neither text nor a list of parts: "
                f"{str(content)[:300]}",
                model=self.name,
            )
        texts = [p.get("text", "") for p in content if isinstance(p, dict)]
        if not all(isinstance(t, str) for t in texts):
            raise LMResponseError(
                f"{self.name}: a content part's text is not a string: {str(content)[:300]}",
                model=self.name,
            )
        return "".join(texts)
