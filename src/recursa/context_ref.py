"""A context as the run journal records it: by reference, with its bytes kept only when they
cannot be found again.

A reference (a small JSON object in the journal) holds what describes the context (kind,
warnings, source labels) and one of two ways to get its value back:

- ``origin``: the context was read only from files and folders. The reference keeps each file's
  absolute path, size and ``mtime_ns`` as they were when read, and (filled in after the run has
  started) the SHA-256 of each file's bytes. Resuming reads the files again if they still match.
- ``blob``: the digest of the value in the content-addressed store (:mod:`recursa.blobs`): text
  or data passed in memory or on standard input, or files that changed while the run went on.

:func:`describe` is what the run waits for (a few stat records, no copy of the text);
:func:`complete` does the rest (hashing, storing) while the first request is under way.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recursa.blobs import BlobStore
from recursa.context import Context, FileOrigin, _parts_of, _size, load_context
from recursa.errors import ContextError, JournalError

__all__ = ["blobs_of", "complete", "describe", "rebuild", "value_chunks", "write_ref"]

_CHUNK = 1 << 20
_TEXT, _JSON = b"t", b"j"  # the first byte of a stored value: UTF-8 text, or JSON data
_SMALL = 1 << 16  # strings up to this many characters are encoded in groups, not one by one
_GROUP = 4096


def describe(ctx: Context) -> dict[str, Any]:
    """The reference as it can be written at once: no hashing, no copy of the value."""
    origin = ctx.origin
    return {
        "kind": ctx.kind,
        "warnings": list(ctx.warnings),
        "sources": list(ctx.sources),
        "multi": ctx.multi,
        "origin": None
        if origin is None
        else {
            "paths": list(origin.paths),
            "format": origin.format,
            "max_file_bytes": origin.max_file_bytes,
            "max_context_bytes": origin.max_context_bytes,
            "files": [list(f) for f in origin.files],
        },
        "hashes": None,
        "blob": None,
        "state": "pending",
    }


def complete(ref: dict[str, Any], value: Any, store: BlobStore) -> dict[str, Any]:
    """``ref`` made whole: files hashed, or the value stored if it cannot be read again.
    Raises ``OSError`` if the store cannot be written."""
    done = dict(ref, state="done")
    origin = ref.get("origin")
    if origin is not None:
        hashes = [_hash_unchanged(path, size, mtime) for path, size, mtime in origin["files"]]
        if all(h is not None for h in hashes):
            done["hashes"] = hashes
            return done
        # A file changed between loading it and now: what the run holds is only in memory.
    done["blob"] = store.put(value_chunks(value))
    return done


def _hash_unchanged(path: str, size: int, mtime_ns: int) -> str | None:
    """The SHA-256 of the file's bytes, or None if it is no longer the file that was read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            if not _same(os.fstat(f.fileno()), size, mtime_ns):
                return None
            while block := f.read(_CHUNK):
                h.update(block)
            if not _same(os.fstat(f.fileno()), size, mtime_ns):
                return None
    except OSError:
        return None
    return h.hexdigest()


def _same(st: os.stat_result, size: int, mtime_ns: int) -> bool:
    return st.st_size == size and st.st_mtime_ns == mtime_ns


# ---- in the journal's database -----------------------------------------------------------------


def write_ref(journal: Path, n: int, ref: dict[str, Any], sync: str = "normal") -> None:
    """Write context ``n``'s reference into ``journal`` on a connection of its own (this runs in
    the storing thread: a sqlite3 connection is not to be used by two threads at once). Opened
    read-write, never created: the run may have been removed meanwhile. Raises sqlite3.Error."""
    conn = sqlite3.connect(
        journal.as_uri() + "?mode=rw",
        uri=True,
        timeout=30.0,
        isolation_level=None,  # autocommit, as every journal connection
    )
    try:
        level = {"full": "FULL", "off": "OFF"}.get(sync, "NORMAL")  # as recursa.store.connect
        conn.execute(f"PRAGMA synchronous={level}")
        row = (n, json.dumps(ref))
        conn.execute("INSERT OR REPLACE INTO context_refs (n, ref) VALUES (?, ?)", row)
    finally:
        conn.close()


def blobs_of(journal: Path) -> set[str]:
    """The blobs a journal's contexts refer to (none if it cannot be read)."""
    try:
        conn = sqlite3.connect(journal.as_uri() + "?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT ref FROM context_refs").fetchall()
        finally:
            conn.close()
        refs = [json.loads(raw) for (raw,) in rows]
    except (sqlite3.Error, ValueError):
        return set()
    return {r["blob"] for r in refs if isinstance(r, dict) and isinstance(r.get("blob"), str)}


# ---- the value as bytes, in chunks -------------------------------------------------------------


def value_chunks(value: Any) -> Iterator[bytes]:
    """The value as stored: ``t`` and UTF-8 for text, ``j`` and JSON for data, about 1 MiB a
    chunk, so that storing a large context never holds a second whole copy of it."""
    if isinstance(value, str):
        yield _TEXT
        for i in range(0, len(value), _CHUNK):
            yield value[i : i + _CHUNK].encode("utf-8", "surrogatepass")
        return
    yield _JSON
    buffer: list[str] = []
    held = 0
    for piece in _json_pieces(value):
        buffer.append(piece)
        held += len(piece)
        if held >= _CHUNK:
            yield "".join(buffer).encode("utf-8", "surrogatepass")
            buffer, held = [], 0
    if buffer:
        yield "".join(buffer).encode("utf-8", "surrogatepass")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_pieces(value: Any) -> Iterator[str]:
    """JSON text of ``value`` in pieces: small items in groups (one C-encoder call for many),
    long strings in slices, containers item by item."""
    if isinstance(value, str):
        if len(value) <= _CHUNK:
            yield _dumps(value)
            return
        yield '"'
        for i in range(0, len(value), _CHUNK):
            yield _dumps(value[i : i + _CHUNK])[1:-1]
        yield '"'
    elif isinstance(value, dict):
        yield "{"
        yield from _items(iter(value.items()), lambda group: _dumps(dict(group))[1:-1], True)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        yield from _items(iter(value), lambda group: _dumps(group)[1:-1], False)
        yield "]"
    else:
        yield _dumps(value)


def _items(items: Iterator[Any], dump_group: Any, pairs: bool) -> Iterator[str]:
    """Container members, comma-separated: runs of small ones dumped together."""
    group: list[Any] = []
    first = True

    def flush() -> Iterator[str]:
        nonlocal group, first
        if group:
            yield ("" if first else ",") + dump_group(group)
            group, first = [], False

    for item in items:
        member = item[1] if pairs else item
        if _small(member):
            group.append(item)
            if len(group) >= _GROUP:
                yield from flush()
            continue
        yield from flush()
        key = f"{_dumps({item[0]: 0})[1:-3]}:" if pairs else ""  # json's own key conversion
        yield ("" if first else ",") + key
        first = False
        yield from _json_pieces(member)
    yield from flush()


def _small(value: Any) -> bool:
    return (isinstance(value, str) and len(value) <= _SMALL) or not isinstance(
        value, (str, list, tuple, dict)
    )


def _value_from(data: bytes, run_id: str) -> Any:
    text = data[1:].decode("utf-8", "surrogatepass")
    if data[:1] == _TEXT:
        return text
    if data[:1] == _JSON:
        return json.loads(text)
    raise JournalError(f"the stored context of run {run_id} is not in a known format")


# ---- resuming ------------------------------------------------------------------------------------


def rebuild(ref: dict[str, Any], store: BlobStore, run_id: str) -> Context:
    """The context ``ref`` describes: its files read again when they are unchanged, else its
    stored copy. A :class:`JournalError` saying what changed and what to do when neither is
    possible."""
    problem = None
    if ref.get("origin") is not None:
        value, origin, problem = _reread(ref["origin"], ref.get("hashes"))
        if problem is None:
            return _context(ref, value, origin)
    if ref.get("blob"):
        return _context(ref, _value_from(store.get(ref["blob"]), run_id), None)
    if problem is not None:
        raise JournalError(
            f"run {run_id} cannot be resumed: {problem} since it started, and the journal kept "
            "no copy. Put the file back as it was, or start a new run"
        )
    raise JournalError(
        f"run {run_id} cannot be resumed: it stopped before its context was stored (text "
        "passed in memory is stored while the first request is under way). Start it again"
    )


def _reread(origin: dict[str, Any], hashes: list[str] | None) -> tuple[Any, Any, str | None]:
    """(value, FileOrigin, None) read again from unchanged files, or (None, None, what changed)."""
    files = [tuple(f) for f in origin["files"]]
    for path, size, mtime_ns in files:
        try:
            st = os.stat(path)
        except OSError:
            return None, None, f"{path} was removed"
        if not _same(st, size, mtime_ns):
            return None, None, f"{path} changed (size or modification time)"
    try:
        ctx = load_context(
            *(Path(p) for p in origin["paths"]),
            format=origin["format"],
            max_file_bytes=origin["max_file_bytes"],
            max_context_bytes=origin["max_context_bytes"],
        )
    except ContextError as exc:
        return None, None, f"the context cannot be read again ({exc})"
    if ctx.origin is None or [tuple(f) for f in ctx.origin.files] != files:
        return None, None, f"the files under {', '.join(origin['paths'])} are not the same"
    for (path, size, mtime_ns), digest in zip(files, hashes or [], strict=False):
        if _hash_unchanged(path, size, mtime_ns) != digest:
            return None, None, f"{path} changed (its content)"
    return ctx.value, ctx.origin, None


def _context(ref: dict[str, Any], value: Any, origin: FileOrigin | None) -> Context:
    sources = tuple(ref["sources"])
    parts = (
        tuple((label, _size(v)) for label, v in zip(sources, value, strict=False))
        if ref["multi"]
        else _parts_of(value)
    )
    return Context(value, ref["kind"], tuple(ref["warnings"]), sources, ref["multi"], parts, origin)
