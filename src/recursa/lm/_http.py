"""Shared HTTP plumbing for the JSON-over-HTTP backends: one POST with retries.

What is retried, how long each attempt and the whole call may take, and how waits are chosen is
described in :mod:`recursa.lm.retry` (the public :class:`~recursa.lm.retry.RetryPolicy`). A body
larger than ``max_response_bytes`` is read as a stream and dropped past the cap.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import random
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

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
from recursa.lm.base import BaseLM, retry_guard
from recursa.lm.retry import RetryPolicy, rate_limit_hook
from recursa.types import Completion, LMSettings, Message

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "HTTPBackend",
    "RetryPolicy",  # re-exported for older imports; it lives in recursa.lm.retry
    "post_json",
    "tls_for",
    "token_count",
]

T = TypeVar("T")

_SNIPPET = 300
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# More tokens than any model reads or writes in one call: a usage figure past it is a lie.
MAX_TOKENS_PER_CALL = 100_000_000


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
    message = err.get("message") if isinstance(err, dict) else None
    if isinstance(message, str):
        return message
    if isinstance(err, str):
        return err
    return _snippet(body)


def token_count(raw: Mapping[str, Any], key: str, model: str, where: str = "usage") -> int:
    """``raw[key]`` as a token count (absent or null: 0). Anything that cannot be one (a
    string, a fraction, a negative or absurd number) is a protocol error, not a count: budgets
    must never be fed a negative or made-up figure."""
    value = raw.get(key)
    if value is None:
        return 0
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise LMResponseError(
            f"{model}: {where}.{key} is not a token count: {_snippet(repr(value))}", model=model
        )
    if not 0 <= value <= MAX_TOKENS_PER_CALL:
        raise LMResponseError(
            f"{model}: {where}.{key}={int(value)} is impossible (0 to {MAX_TOKENS_PER_CALL:,})",
            model=model,
        )
    return int(value)


def usage_object(data: Mapping[str, Any], key: str, model: str) -> Mapping[str, Any]:
    """``data[key]`` when it is an object, ``{}`` when absent or null; else a protocol error."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LMResponseError(
            f"{model}: {key} is not an object: {_snippet(repr(value))}", model=model
        )
    return value


@dataclass(frozen=True, slots=True)
class _Reply:
    """One HTTP answer, its body read in full (under the size cap)."""

    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class _TooLarge(Exception):
    pass


def _json_body(payload: dict[str, Any]) -> bytes:
    """The request as UTF-8 JSON. Text that cannot be UTF-8 (a lone surrogate from a file name
    or a broken decode) is sent as U+FFFD rather than failing the call."""
    text = json.dumps(payload, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


@functools.cache
def _default_headers() -> dict[str, str]:
    """What recursa's own requests say about themselves (a borrowed client sends its own)."""
    from recursa import __version__

    return {"user-agent": f"recursa/{__version__}", "accept": "application/json"}


class _Sender:
    """How a backend's requests go out: through the caller's own ``httpx.AsyncClient`` (its
    headers, auth, proxies and hooks apply), or straight to recursa's transport (no client
    layer: no cookie jar, redirects or auth flow, which cost about a millisecond per call)."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.client = client  # the caller's: used as given, never closed here
        self.transport = transport  # recursa's own, closed by the backend's aclose()
        self._url: tuple[str, httpx.URL] | None = None  # the last URL, parsed once

    def _parsed(self, url: str) -> httpx.URL:
        if self._url is None or self._url[0] != url:
            self._url = (url, httpx.URL(url))
        return self._url[1]

    def request(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> httpx.Request:
        if self.client is not None:
            return self.client.build_request(
                "POST", url, content=body, headers=headers, timeout=timeout_s
            )
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), timeout_s)
        return httpx.Request(
            "POST",
            self._parsed(url),
            content=body,
            headers={**_default_headers(), **headers},
            extensions={"timeout": timeouts},
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        if self.client is not None:
            return await self.client.send(request, stream=True)
        assert self.transport is not None
        return await self.transport.handle_async_request(request)


async def _fetch(
    sender: _Sender,
    url: str,
    payload: dict[str, Any],
    headers: Mapping[str, str],
    timeout_s: float,
    max_bytes: int,
) -> _Reply:
    """POST and read the body as a stream, giving up past ``max_bytes`` (so a huge reply costs
    at most that much memory)."""
    headers = {"content-type": "application/json", **headers}
    resp = await sender.send(sender.request(url, _json_body(payload), headers, timeout_s))
    try:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise _TooLarge(int(declared))
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise _TooLarge(size)
            chunks.append(chunk)
        return _Reply(resp.status_code, resp.headers, b"".join(chunks))
    finally:
        await resp.aclose()


def _classify(resp: _Reply, model: str) -> Exception:
    status = resp.status
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


def _delay(policy: RetryPolicy, exc: _Retryable, attempt: int) -> float:
    if exc.retry_after is not None:
        return min(exc.retry_after, policy.max_retry_after_s)
    ceiling = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)


async def post_json(
    client: httpx.AsyncClient | _Sender,
    url: str,
    *,
    payload: dict[str, Any],
    headers: Mapping[str, str],
    timeout_s: float,
    model: str,
    policy: RetryPolicy,
    parse: Callable[[dict[str, Any]], T],
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> T:
    """POST ``payload`` and return the decoded JSON object passed through ``parse`` (inside the
    retry loop: a reply ``parse`` rejects is retried), retrying what is worth retrying."""
    sender = client if isinstance(client, _Sender) else _Sender(client=client)
    loop = asyncio.get_running_loop()
    total = policy.total_timeout_s or timeout_s * (policy.max_retries + 1)
    deadline = loop.time() + total

    async def attempt() -> T:
        left = deadline - loop.time()
        budget = max(0.001, min(timeout_s, left))
        within = f"{timeout_s:g}s" if left >= timeout_s else f"the {total:g}s this call may take"
        try:
            async with asyncio.timeout(budget):
                resp = await _fetch(sender, url, payload, headers, budget, max_response_bytes)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise _Retryable(
                LMTimeoutError(
                    f"{model}: no complete answer from {url} within {within}", model=model
                )
            ) from exc
        except _TooLarge as exc:
            raise LMResponseError(
                f"{model}: the response from {url} passed {max_response_bytes:,} bytes "
                f"(at least {exc.args[0]:,}); it was dropped. Raise max_response_bytes if "
                "this server really sends replies that large",
                model=model,
            ) from None
        except httpx.TransportError as exc:
            raise _Retryable(
                LMConnectionError(
                    f"{model}: cannot reach {url} ({type(exc).__name__}: {exc}); "
                    "check --base-url and that the server is running",
                    model=model,
                )
            ) from exc
        if resp.status >= 400:
            raise _classify(resp, model)
        try:
            data = json.loads(resp.body)
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
        try:
            return parse(data)
        except LMResponseError as exc:
            raise _Retryable(exc) from exc
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # A shape the parser did not foresee: still a protocol error, not a crash.
            raise _Retryable(
                LMResponseError(
                    f"{model}: malformed response ({type(exc).__name__}: {exc}): "
                    f"{_snippet(resp.text)}",
                    model=model,
                )
            ) from exc

    attempts = 0
    while True:
        attempts += 1
        try:
            return await attempt()
        except _Retryable as exc:
            if isinstance(exc.final, LMRateLimitError) and (hook := rate_limit_hook.get()):
                hook(exc.retry_after)  # a batch's shared limiter pauses every run, not just this
            wait = _delay(policy, exc, attempts)
            if attempts > policy.max_retries or loop.time() + wait >= deadline:
                raise exc.final from exc.__cause__
            guard = retry_guard.get()
            if guard is not None:
                guard()  # may raise: the caller's budget has no call (or time) for a retry
        await asyncio.sleep(wait)


class HTTPBackend(BaseLM):
    """A JSON-over-HTTP backend: one pooled ``httpx.AsyncClient`` (owned or borrowed) and one
    POST per call with retries. Subclasses name their ``endpoint`` and say how to build the
    headers and payload and how to parse the answer."""

    endpoint: str = ""
    base_url: str
    timeout_s: float
    retry: RetryPolicy
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __init__(self, client: httpx.AsyncClient | None) -> None:
        self._client = client  # the caller's, used as given (never closed here)
        self._sender: _Sender | None = None

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _payload(self, messages: Sequence[Message], s: LMSettings) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, data: dict[str, Any]) -> Completion:
        raise NotImplementedError

    def _url(self) -> str:
        return f"{self.base_url}{self.endpoint}"

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        s = settings or LMSettings()
        return await post_json(
            self._http(),
            self._url(),
            payload=self._payload(messages, s),
            headers=self._headers(),
            timeout_s=s.timeout_s or self.timeout_s,
            model=self.name,
            policy=self.retry,
            parse=self._parse,
            max_response_bytes=self.max_response_bytes,
        )

    def _http(self) -> _Sender:
        if self._sender is None:
            if self._client is not None:
                self._sender = _Sender(client=self._client)
            else:
                from recursa.lm._aiohttp import AiohttpTransport  # aiohttp loads only when used

                # Straight to aiohttp's pool: see recursa.lm._aiohttp for why.
                transport = AiohttpTransport(verify=tls_for(self.base_url), max_connections=64)
                self._sender = _Sender(transport=transport)
        return self._sender

    async def aclose(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None and sender.transport is not None:  # never the caller's client
            await sender.transport.aclose()


@functools.cache
def _no_trust() -> ssl.SSLContext:
    """A TLS context that trusts no certificate: built without reading any."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def tls_for(base_url: str) -> ssl.SSLContext | bool:
    """What the client for ``base_url`` verifies TLS with: the system's certificates (``True``,
    read by httpx) for https; for a plain-http endpoint (a local server) a context trusting
    nothing, since reading the certificate bundle costs tens of milliseconds before the first
    request and the endpoint never uses it. Anything that still reaches https through it (a
    proxy, a redirect) fails verification rather than going unverified."""
    return _no_trust() if base_url.lower().startswith("http://") else True
