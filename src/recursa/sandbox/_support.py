"""Small helpers shared by the worker-process tiers (process, wasm, docker)."""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from recursa.sandbox.base import CallRefused

_CHUNK = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Dead:
    """Put in the inbox when the worker is gone."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Loaded:
    """A context file written under ``inputs/``, reloaded into every fresh worker."""

    name: str
    path: Path
    fmt: str
    alias_parts: bool


async def within(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    """``await awaitable`` for at most ``timeout_s`` (TimeoutError past it).

    Not ``asyncio.wait_for``: on Python 3.11 it drops a cancellation that arrives in the same
    step as its result, which left cancelled runs (a client gone, Ctrl-C) running.
    """
    async with asyncio.timeout(timeout_s):
        return await awaitable


async def refuse_all(fn: str, args: dict[str, Any]) -> Any:
    raise CallRefused("sub-calls are not available in this sandbox")


def write_context_file(value: Any, path: Path) -> str:
    """Write a context value to ``path`` without building a second full copy in memory."""
    if isinstance(value, str):
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            for i in range(0, len(value), _CHUNK):
                f.write(value[i : i + _CHUNK])
        return "text"
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
        json.dump(value, f, ensure_ascii=False)
    return "json"


def make_run_dir(workdir: Path | None) -> Path:
    """A private folder per sandbox: ``scratch/`` (the worker's) and ``inputs/`` (contexts)."""
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="recursa-", dir=workdir))
    (root / "scratch").mkdir()
    (root / "inputs").mkdir()
    return root


def exit_detail(returncode: int | None) -> str:
    if returncode is None:
        return "the worker stopped answering"
    if returncode < 0:
        try:
            return f"the worker was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"the worker was killed by signal {-returncode}"
    return f"the worker exited with status {returncode}"
