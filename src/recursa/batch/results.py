"""The results file: one JSON line per finished item, appended and flushed as each finishes.

A line is written whole and flushed before the next item's, so a killed batch keeps every
result it reported; a torn last line (the kill came mid-write) is skipped when the file is read
back and a newline is added before the next line. Only the process that runs the batch (the
Ray driver, never a worker) writes the file, once per id.

``.parquet`` output: Parquet files cannot be appended to, so the lines go to a JSONL file beside
it (``results.parquet.jsonl``, the one a resumed batch reads) and the Parquet file is written
from it when the batch ends, or is interrupted. It needs ``pyarrow`` (``pip install
'recursa[parquet]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from recursa.errors import ConfigError, MissingDependencyError

__all__ = ["ResultsWriter", "journal_path_for", "read_results"]


def journal_path_for(out: Path) -> Path:
    """Where the result lines of ``out`` go: ``out`` itself, or beside a Parquet file."""
    return out.with_name(out.name + ".jsonl") if out.suffix == ".parquet" else out


def _need_pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError(
            "Parquet output (or write .jsonl, which needs nothing)", "parquet", "pyarrow"
        ) from None
    return pq


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The result lines of ``path`` by id (the last line of an id wins: a retried failure
    replaces the failure). Torn or foreign lines are skipped."""
    found: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return found
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line from a killed batch
            if isinstance(row, dict) and isinstance(row.get("id"), str):
                found[row["id"]] = row
    return found


class ResultsWriter:
    """Appends result lines to ``out`` (or its JSONL companion for ``.parquet``)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        if self.out.suffix == ".parquet":
            _need_pyarrow()  # before any item runs, not after hours of work
        elif self.out.suffix not in (".jsonl", ".json", ".ndjson", ""):
            raise ConfigError(f"--out {self.out}: write .jsonl, or .parquet with pyarrow")
        self.lines = journal_path_for(self.out)
        self._file: IO[str] | None = None

    def open(self) -> ResultsWriter:
        self.lines.parent.mkdir(parents=True, exist_ok=True)
        f = self.lines.open("a+b")
        # A killed batch may have left half a line: end it, so it cannot swallow the next.
        if f.tell():
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
            if torn:
                f.write(b"\n")
        f.close()
        self._file = self.lines.open("a", encoding="utf-8")
        return self

    def write(self, record: Mapping[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("ResultsWriter.write before open()")
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.out.suffix == ".parquet":
            self._write_parquet()

    def _write_parquet(self) -> None:
        pq = _need_pyarrow()
        import pyarrow as pa

        rows = list(read_results(self.lines).values())
        # Nested objects (usage) stay JSON text: their keys may differ from line to line.
        flat = [
            {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()}
            for r in rows
        ]
        tmp = self.out.with_name(self.out.name + ".tmp")
        pq.write_table(pa.Table.from_pylist(flat), tmp)
        tmp.replace(self.out)  # whole or not at all

    def __enter__(self) -> ResultsWriter:
        return self.open()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
