"""Anthropic's Messages API over plain HTTP (the ``anthropic`` package is not needed).

The RLM conversation is append-only, so each call marks its last message with
``cache_control`` and Anthropic's prompt cache serves everything before it on the next turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from recursa.errors import LMResponseError
from recursa.lm._http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    HTTPBackend,
    token_count,
    usage_object,
)
from recursa.lm.base import Capabilities
from recursa.lm.retry import RetryPolicy
from recursa.types import Completion, LMSettings, Message, Usage

__all__ = ["AnthropicLM"]

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 8192


class AnthropicLM(HTTPBackend):
    """A Claude model behind ``POST {base_url}/v1/messages``.

    ``timeout_s`` bounds each attempt up to the last byte of the answer; a response body past
    ``max_response_bytes`` is dropped and the call fails; ``retry`` says what is retried and for
    how long (see :mod:`recursa.lm.retry`).
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str = ANTHROPIC_BASE_URL,
        timeout_s: float = 600.0,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        prompt_cache: bool = True,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.endpoint = "/v1/messages"
        self.max_response_bytes = max_response_bytes
        self.model = model
        self.name = f"anthropic:{model}"
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.prompt_cache = prompt_cache
        self.default_max_tokens = default_max_tokens
        self.capabilities = Capabilities(default_max_output_tokens=default_max_tokens)
        super().__init__(client)

    def _payload(self, messages: Sequence[Message], s: LMSettings) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        turns: list[dict[str, Any]] = []
        for m in messages:
            if m.role == "system":
                continue
            # The API rejects two consecutive turns of one role; merge them.
            if turns and turns[-1]["role"] == m.role:
                turns[-1]["content"][0]["text"] += "\n\n" + m.content
            else:
                turns.append({"role": m.role, "content": [{"type": "text", "text": m.content}]})
        if self.prompt_cache and turns:
            turns[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": turns,
            "max_tokens": s.max_output_tokens or self.default_max_tokens,
        }
        if system:
            payload["system"] = system
        if s.temperature is not None:
            payload["temperature"] = s.temperature
        if s.stop:
            payload["stop_sequences"] = list(s.stop)
        return payload

    def _headers(self) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "x-api-key": self.api_key,
            "anthropic-version": ANTHROPIC_VERSION,
        }

    def _parse(self, data: dict[str, Any]) -> Completion:
        content = data.get("content")
        if not isinstance(content, list):
            raise LMResponseError(
                f"{self.name}: the response has no content list: {str(data)[:300]}",
                model=self.name,
            )
        texts = [
            block.get("text", "")
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        ]
        if not all(isinstance(t, str) for t in texts):
            raise LMResponseError(
                f"{self.name}: a text block's text is not a string: {str(content)[:300]}",
                model=self.name,
            )
        raw = usage_object(data, "usage", self.name)
        cache_read = token_count(raw, "cache_read_input_tokens", self.name)
        cache_write = token_count(raw, "cache_creation_input_tokens", self.name)
        # Anthropic reports cached and cache-creation tokens apart from input_tokens; recursa's
        # input_tokens is the whole prompt, with the cache hits reported as cached_tokens.
        usage = Usage(
            input_tokens=token_count(raw, "input_tokens", self.name) + cache_read + cache_write,
            output_tokens=token_count(raw, "output_tokens", self.name),
            cached_tokens=cache_read,
            calls=1,
        )
        model, reason = data.get("model"), data.get("stop_reason")
        return Completion(
            text="".join(texts),
            usage=usage,
            model=model if isinstance(model, str) and model else self.model,
            finish_reason=reason if isinstance(reason, str) else None,
        )
