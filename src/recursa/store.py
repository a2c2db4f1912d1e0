"""SQLite plumbing shared by the run journal and the call cache, and the request key.

Both stores use WAL mode, so readers never block the writer and several processes can share a
file. ``synchronous=NORMAL`` (the default here) makes every commit durable against the process
being killed (``kill -9``, a crash, Ctrl-C): the write has reached the operating system before
the caller goes on. Only a power loss can drop the last commits; ``sync="full"`` also survives
that, at the price of an fsync per write.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recursa.paths import private_file
from recursa.types import Completion, LMSettings, Message, Usage

__all__ = ["completion_from_json", "completion_to_json", "connect", "request_key"]

_SYNC = {"normal": "NORMAL", "full": "FULL", "off": "OFF"}


def connect(path: Path, *, sync: str = "normal", timeout_s: float = 30.0) -> sqlite3.Connection:
    """Open ``path`` in WAL mode, in autocommit mode (each statement commits on its own).

    A new file is created private to the user (0600), and SQLite gives its ``-wal`` and
    ``-shm`` files the same mode: these files hold prompts and answers.
    """
    private_file(path)
    conn = sqlite3.connect(
        str(path), timeout=timeout_s, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={_SYNC[sync]}")
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    return conn


def request_key(model: str, messages: Sequence[Message], settings: LMSettings | None) -> str:
    """A digest of everything that determines a model's answer: model, messages, sampling."""
    payload = {
        "model": model,
        "messages": [m.to_dict() for m in messages],
        "settings": (settings or LMSettings()).to_dict(),
    }
    data = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def completion_to_json(c: Completion) -> str:
    return json.dumps(
        {
            "text": c.text,
            "model": c.model,
            "finish_reason": c.finish_reason,
            "usage": {
                "input_tokens": c.usage.input_tokens,
                "output_tokens": c.usage.output_tokens,
                "cached_tokens": c.usage.cached_tokens,
            },
        },
        ensure_ascii=False,
    )


def completion_from_json(raw: str) -> Completion:
    d: dict[str, Any] = json.loads(raw)
    u = d.get("usage") or {}
    return Completion(
        text=str(d["text"]),
        model=str(d.get("model") or ""),
        finish_reason=d.get("finish_reason"),
        usage=Usage(
            input_tokens=int(u.get("input_tokens", 0)),
            output_tokens=int(u.get("output_tokens", 0)),
            cached_tokens=int(u.get("cached_tokens", 0)),
            calls=1,
        ),
    )
