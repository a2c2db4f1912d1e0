"""How hard the HTTP backends (``openai:``, ``ollama:``, ``anthropic:``) try: :class:`RetryPolicy`.

Retried: 429, 5xx, timeouts, connection failures, bodies that are not JSON (proxies under load
return HTML error pages) and JSON bodies the backend's parser rejects (gateways such as OpenRouter
relay upstream failures as a 200 carrying an error object). Each wait honours ``Retry-After``
(seconds or an HTTP date) and ``retry-after-ms`` when the server sends them, else backs off
exponentially with full jitter.
Everything else (400, 401, 403, 404, ...) fails at once with a typed error, and so does a body
larger than the backend's ``max_response_bytes``.

Time: a backend's ``timeout_s`` bounds each attempt from sending to the last byte of the body (a
server that trickles bytes is cut off there, not kept alive by each byte); the whole call, retries
and their waits included, ends within ``total_timeout_s`` (default: ``timeout_s`` times the
number of attempts). A wait that would pass that deadline is not taken: the last error is raised.

Each retry is announced to :data:`recursa.lm.base.retry_guard` first, so a run counts it
against its call budget (and may forbid it). Each 429 is reported to :data:`rate_limit_hook`
when one is set (a batch's shared rate limiter), so one run's 429 pauses every run's calls.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["RetryPolicy", "rate_limit_hook"]

#: Set around a call by a shared rate limiter (:mod:`recursa.batch.ratelimit`); an HTTP backend
#: calls it with the seconds of ``Retry-After`` (``None`` when absent) on every 429 it receives.
rate_limit_hook: ContextVar[Callable[[float | None], None] | None] = ContextVar(
    "recursa_rate_limit_hook", default=None
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try. ``max_retries`` counts retries after the first attempt;
    ``total_timeout_s`` bounds the whole call, retries and waits included (``None``: the
    per-attempt timeout times the number of attempts)."""

    max_retries: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0
    total_timeout_s: float | None = None
