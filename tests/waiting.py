"""Waiting for state in tests: poll for it instead of sleeping a guessed time.

``wait_until(condition, what)`` returns as soon as ``condition()`` is true and fails the test,
naming ``what`` it waited for, once ``timeout`` seconds have passed; ``wait_until_async`` is
the same for code running on an event loop. The timeout only keeps a broken test from hanging
(or, where a test gave a bound, keeps that bound). A condition may itself fail the test (an
``assert`` that the process it waits on is still running, say): that propagates at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

__all__ = ["wait_until", "wait_until_async"]

POLL_S = 0.02


def wait_until(
    condition: Callable[[], object], what: str, *, timeout: float = 60.0, poll_s: float = POLL_S
) -> None:
    """Block until ``condition()`` is true; fail with "gave up waiting for {what}" past
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:g}s")
        time.sleep(poll_s)


async def wait_until_async(
    condition: Callable[[], object], what: str, *, timeout: float = 60.0, poll_s: float = POLL_S
) -> None:
    """:func:`wait_until` without blocking the event loop (what is awaited runs meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout:g}s")
        await asyncio.sleep(poll_s)
