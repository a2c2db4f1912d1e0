"""The call cache: identical deterministic requests are answered once, across runs and processes.

A request is cacheable when its answer is fixed by its input: temperature 0, or a backend whose
default decoding is greedy (``greedy_by_default``, e.g. the embedded local model and the scripted
fake). The key covers model, messages and sampling settings (see
:func:`recursa.store.request_key`). The file lives in the cache folder and is shared safely by
concurrent processes (SQLite WAL, ``INSERT OR IGNORE``, a busy timeout).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from recursa.errors import ConfigError
from recursa.lm.base import LM
from recursa.paths import cache_dir
from recursa.store import completion_from_json, completion_to_json, connect
from recursa.types import Completion, LMSettings

__all__ = ["CacheStats", "CallCache", "cacheable", "default_cache_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, response TEXT NOT NULL,
    cost_usd REAL, created REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0, last_hit REAL);
"""


def default_cache_path() -> Path:
    return cache_dir() / "calls.sqlite"


def cacheable(lm: LM, settings: LMSettings | None) -> bool:
    """True when the request's answer is fixed by its input."""
    temperature = settings.temperature if settings else None
    if temperature is None:
        return lm.capabilities.greedy_by_default
    return temperature == 0


@dataclass(frozen=True)
class CacheStats:
    path: Path
    entries: int
    hits: int
    saved_usd: float
    size_bytes: int


class CallCache:
    """A shared SQLite cache of LM responses."""

    def __init__(self, path: Path | None = None, *, sync: str = "normal") -> None:
        self.path = Path(path) if path else default_cache_path()
        try:
            self._conn = connect(self.path, sync=sync)
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"the call cache {self.path} cannot be opened ({exc}); "
                "delete it or run `recursa cache clear`"
            ) from None

    def get(self, key: str) -> Completion | None:
        row = self._conn.execute("SELECT response FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self._conn.execute(
            "UPDATE calls SET hits = hits + 1, last_hit = ? WHERE key = ?", (time.time(), key)
        )
        return completion_from_json(row[0])

    def put(self, key: str, model: str, completion: Completion, cost_usd: float | None) -> None:
        # Two processes may race to store the same answer; the first one wins, both are right.
        self._conn.execute(
            "INSERT OR IGNORE INTO calls (key, model, response, cost_usd, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, model, completion_to_json(completion), cost_usd, time.time()),
        )

    def stats(self) -> CacheStats:
        entries, hits, saved = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(hits), 0), "
            "COALESCE(SUM(hits * COALESCE(cost_usd, 0)), 0) FROM calls"
        ).fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))
        return CacheStats(self.path, int(entries), int(hits), float(saved), size)

    def clear(self) -> int:
        n = self._conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        self._conn.execute("DELETE FROM calls")
        self._conn.execute("VACUUM")
        return int(n)

    def close(self) -> None:
        self._conn.close()
