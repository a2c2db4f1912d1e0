"""Anthropic's Messages API over plain HTTP (the ``anthropic`` package is not needed).

The RLM conversation is append-only, so each call marks its last message with
``cache_control`` and Anthropic's prompt cache serves everything before it on the next turn.

Sampling: ``top_p`` is sent as is. ``reasoning_effort`` turns on extended thinking with a
token budget (:data:`THINKING_BUDGETS`: minimal 1,024, low 4,096, medium 8,192, high 16,384;
``none``: no thinking). Thinking tokens are billed as output and come on top of the answer's
cap: ``max_tokens`` is sent as the answer's cap plus the budget (with the default cap, high
stays under the 32K output of Claude Opus 4). The run's token and cost budgets reserve the
answer's cap only, so a thinking call may spend up to its budget more. Claude 3.7 Sonnet and
the Claude 4 family think; the older families (``claude-3-5-*``, ``claude-3-opus``,
``claude-3-haiku``, ``claude-2``) do not, and asking them is a
:class:`~recursa.errors.ConfigError`, as is a temperature other than 1 while thinking (the API
refuses both). ``provider_options`` is merged into the body last (``{"top_k": 40}``,
``{"metadata": {...}}``, a ``thinking`` object of your own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from recursa.errors import ConfigError, LMResponseError
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
#: Extended-thinking token budgets for each ``reasoning_effort`` (the API's minimum is 1,024).
THINKING_BUDGETS = {"minimal": 1_024, "low": 4_096, "medium": 8_192, "high": 16_384}
# Model families without extended thinking (it came with Claude 3.7 Sonnet).
_NO_THINKING = ("claude-3-5", "claude-3-opus", "claude-3-haiku", "claude-3-sonnet", "claude-2")


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
        budget = self._thinking_budget(s)
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": turns,
            "max_tokens": (s.max_output_tokens or self.default_max_tokens) + budget,
        }
        if system:
            payload["system"] = system
        if budget:
            payload["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if s.temperature is not None:
            payload["temperature"] = s.temperature
        if s.top_p is not None:
            payload["top_p"] = s.top_p
        if s.stop:
            payload["stop_sequences"] = list(s.stop)
        payload.update(s.provider_options)  # last: the user's pass-through
        return payload

    def _thinking_budget(self, s: LMSettings) -> int:
        """Extended thinking's token budget for ``s.reasoning_effort`` (0: no thinking)."""
        if s.reasoning_effort is None or s.reasoning_effort == "none":
            return 0
        if self.model.startswith(_NO_THINKING):
            raise ConfigError(
                f"{self.name} has no extended thinking, so reasoning_effort cannot apply: drop "
                "it for this model, or pick Claude 3.7 Sonnet or a Claude 4 model"
            )
        if s.temperature is not None and s.temperature != 1:
            raise ConfigError(
                f"{self.name}: extended thinking (reasoning_effort={s.reasoning_effort}) works "
                f"only at temperature 1; drop the temperature ({s.temperature:g}) or the effort"
            )
        return THINKING_BUDGETS[s.reasoning_effort]

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
