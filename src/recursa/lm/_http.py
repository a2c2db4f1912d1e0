"""Shared HTTP plumbing for the JSON-over-HTTP backends: one POST with retries.

Retried: 429, 5xx, timeouts, connection failures, bodies that are not JSON (proxies under load
return HTML error pages) and JSON bodies the backend's parser rejects (gateways such as OpenRouter
relay upstream failures as a 200 carrying an error object). Each wait honours ``Retry-After``
(seconds or an HTTP date) and ``retry-after-ms`` when the server sends them, else backs off
exponentially with full jitter.
Everything else (400, 401, 403, 404, ...) fails at once with a typed error.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from recursa.errors import (
    LMAuthError,
    LMConnectionError,
    LMError,
    LMRateLimitError,
    LMRequestError,
    LMResponseError,
    LMServerError,
    LMTimeoutError,
)
from recursa.lm.base import BaseLM
from recursa.types import Completion, LMSettings, Message

__all__ = ["HTTPBackend", "RetryPolicy", "post_json"]

_SNIPPET = 300


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try. ``max_retries`` counts retries after the first attempt."""

    max_retries: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0


class _Retryable(Exception):
    """A failure worth another attempt; carries the typed error to raise if attempts run out."""

    def __init__(self, final: LMError, retry_after: float | None = None) -> None:
        self.final = final
        self.retry_after = retry_after
        super().__init__(str(final))


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait according to ``retry-after-ms`` / ``Retry-After``, if present and valid."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."


def _error_message(body: str) -> str:
    """The provider's own error message when the body is the usual ``{"error": ...}`` shape."""
    try:
        data = json.loads(body)
    except ValueError:
        return _snippet(body)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]
    if isinstance(err, str):
        return err
    return _snippet(body)


def _classify(resp: httpx.Response, model: str) -> Exception:
    status = resp.status_code
    msg = f"{model}: HTTP {status}: {_error_message(resp.text)}"
    if status == 429:
        return _Retryable(
            LMRateLimitError(msg, model=model, status=status), parse_retry_after(resp.headers)
        )
    if status >= 500 or status == 408:
        return _Retryable(
            LMServerError(msg, model=model, status=status), parse_retry_after(resp.headers)
        )
    if status in (401, 403):
        return LMAuthError(
            f"{msg} (check the API key, and that it may use this model)", model=model, status=status
        )
    return LMRequestError(msg, model=model, status=status)


def _wait(policy: RetryPolicy):
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, policy.max_retry_after_s)
        ceiling = min(policy.max_delay_s, policy.base_delay_s * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)

    return wait


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    *,
    payload: dict[str, Any],
    headers: Mapping[str, str],
    timeout_s: float,
    model: str,
    policy: RetryPolicy,
    parse: Callable[[dict[str, Any]], Any] | None = None,
) -> Any:
    """POST ``payload`` and return the decoded JSON object (passed through ``parse`` when
    given, inside the retry loop), retrying what is worth retrying."""

    async def attempt() -> Any:
        try:
            resp = await client.post(url, json=payload, headers=dict(headers), timeout=timeout_s)
        except httpx.TimeoutException as exc:
            raise _Retryable(
                LMTimeoutError(f"{model}: no answer from {url} within {timeout_s:g}s", model=model)
            ) from exc
        except httpx.TransportError as exc:
            raise _Retryable(
                LMConnectionError(
                    f"{model}: cannot reach {url} ({type(exc).__name__}: {exc}); "
                    "check --base-url and that the server is running",
                    model=model,
                )
            ) from exc
        if resp.status_code >= 400:
            raise _classify(resp, model)
        try:
            data = resp.json()
        except ValueError as exc:
            raise _Retryable(
                LMResponseError(
                    f"{model}: the response is not JSON: {_snippet(resp.text)}", model=model
                )
            ) from exc
        if not isinstance(data, dict):
            raise _Retryable(
                LMResponseError(
                    f"{model}: expected a JSON object, got {_snippet(resp.text)}", model=model
                )
            )
        if parse is None:
            return data
        try:
            return parse(data)
        except LMResponseError as exc:
            raise _Retryable(exc) from exc

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_retries + 1),
        wait=_wait(policy),
        retry=retry_if_exception_type(_Retryable),
        reraise=True,
    )
    try:
        async for try_ in retrying:
            with try_:
                return await attempt()
    except _Retryable as exc:
        raise exc.final from exc.__cause__
    raise AssertionError("unreachable: tenacity always returns or raises")  # pragma: no cover


class HTTPBackend(BaseLM):
    """A JSON-over-HTTP backend: one pooled ``httpx.AsyncClient`` (owned or borrowed) and one
    POST per call with retries. Subclasses name their ``endpoint`` and say how to build the
    headers and payload and how to parse the answer."""

    endpoint: str = ""
    base_url: str
    timeout_s: float
    retry: RetryPolicy

    def __init__(self, client: httpx.AsyncClient | None) -> None:
        self._client = client
        self._owns_client = client is None

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _payload(self, messages: Sequence[Message], s: LMSettings) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, data: dict[str, Any]) -> Completion:
        raise NotImplementedError

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        s = settings or LMSettings()
        return await post_json(
            self._http(),
            f"{self.base_url}{self.endpoint}",
            payload=self._payload(messages, s),
            headers=self._headers(),
            timeout_s=s.timeout_s or self.timeout_s,
            model=self.name,
            policy=self.retry,
            parse=self._parse,
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32)
            )
        return self._client

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
