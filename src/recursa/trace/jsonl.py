"""The JSONL trace format, version 1 (documented in ``docs/trace-format.md``).

Line 1 is a header ``{"type": "header", "format": "recursa.trace", "version": 1, ...}``.
Every other line is one finished span ``{"type": "span", ...}`` (see :meth:`Span.to_dict`),
written and flushed as the span ends, so a crashed run still leaves every finished step on
disk. The root ``run`` span ends last and carries the answer, stop reason and usage.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from recursa.errors import TraceError
from recursa.paths import open_private
from recursa.trace.spans import Span

__all__ = ["FORMAT", "VERSION", "JSONLWriter", "TraceFile", "read_trace"]

FORMAT = "recursa.trace"
VERSION = 1


class JSONLWriter:
    """A trace processor that appends each finished span to a JSONL file."""

    def __init__(
        self, path: str | Path, *, run_id: str | None = None, meta: dict[str, Any] | None = None
    ) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        # Traces hold prompts, contexts and answers: only this user may read a new one (0600).
        self._file: IO[str] | None = open_private(self.path, "w", encoding="utf-8")
        from recursa import __version__

        header = {
            "type": "header",
            "format": FORMAT,
            "version": VERSION,
            "run_id": run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "recursa_version": __version__,
        }
        header.update(meta or {})
        self._write(header)

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
            if self._file is None:
                return
            # Replace lone surrogates rather than fail the run over one odd character.
            self._file.write(line.encode("utf-8", "replace").decode("utf-8") + "\n")
            self._file.flush()

    def on_start(self, span: Span) -> None:
        return None

    def on_end(self, span: Span) -> None:
        self._write(span.to_dict())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@dataclass(frozen=True)
class TraceFile:
    """A trace read back from disk."""

    path: Path
    header: dict[str, Any]
    spans: tuple[Span, ...]

    def roots(self) -> list[Span]:
        ids = {s.id for s in self.spans}
        return [s for s in self.spans if s.parent_id is None or s.parent_id not in ids]

    def children(self) -> dict[str | None, list[Span]]:
        out: dict[str | None, list[Span]] = {}
        for s in sorted(self.spans, key=lambda s: s.start):
            out.setdefault(s.parent_id, []).append(s)
        return out


def read_trace(path: str | Path) -> TraceFile:
    """Read and check a trace file; raise :class:`TraceError` saying what is wrong."""
    p = Path(path)
    try:
        # "\n" only: str.splitlines() also breaks at U+2028, U+2029 and U+0085, which JSON
        # written with ensure_ascii=False keeps raw inside strings.
        lines = p.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise TraceError(f"no such trace file: {p}", path=p) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {p}: {exc}", path=p) from None
    if not lines[0].strip():
        raise TraceError(f"{p} is empty; a trace starts with a header line", path=p)
    try:
        header = json.loads(lines[0])
    except ValueError:
        raise TraceError(f"{p}: line 1 is not JSON; is this a recursa trace?", path=p) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TraceError(f"{p} is not a recursa trace (no '{FORMAT}' header)", path=p)
    if header.get("version") != VERSION:
        raise TraceError(
            f"{p}: trace format version {header.get('version')!r} is not supported "
            f"(this recursa reads version {VERSION})",
            path=p,
        )
    spans = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if record.get("type") == "span":
                spans.append(Span.from_dict(record))
        except (ValueError, KeyError, TypeError, AttributeError):
            if n == len(lines):  # a run killed mid-write leaves a torn last line
                break
            raise TraceError(f"{p}: line {n} is not a valid span record", path=p) from None
    return TraceFile(p, header, tuple(spans))
