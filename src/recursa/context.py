"""Turn what the user gives (text, bytes, lists, dicts, files, folders, stdin) into a context.

The context is what the REPL's ``context`` variable holds: a ``str``, a ``list`` of ``str``, a
``dict`` mapping names (relative paths for folders) to ``str``, or JSON data: lists and dicts
nested to any depth, of ``str``, ``int``, ``float``, ``bool`` and ``None`` (chat messages, a
dict of lists of records). Data reaches the REPL as real lists and dicts; anything JSON cannot
carry (a set, bytes deep inside, an object) is a :class:`ContextError` saying what to pass
instead (see :mod:`recursa.context_json`). Several sources make a list, and the REPL also gets
``context_0 .. context_N``.

``.json`` and ``.jsonl`` files are text unless asked: ``load_context(path, format="json")``
parses every file given on its own (``.jsonl``/``.ndjson`` as JSON Lines: a list of one value a
line) and bytes (standard input: a document, or JSON Lines); ``format="auto"`` parses files by
their ending and leaves the rest text. Files inside a folder are always text.

Folders are read as ``{relative path: text}``, skipping ``.git`` (and other VCS folders), files
matched by any ``.gitignore`` on the way down, and binary files. Everything skipped or repaired
(invalid UTF-8 replaced) is reported in ``Context.warnings``.

Files are never read whole before they are checked: each is opened without blocking, checked
with ``fstat`` (a regular file, and not larger than ``max_file_bytes``), and read in chunks that
stop at the limit (a FIFO or a file that grows cannot get past it). All files together may hold
at most ``max_context_bytes``. Inside a folder, FIFOs, sockets and devices are skipped and so
are files over the per-file limit (named in the warnings); a file given on its own that is too
big, or a folder that is too big in all, is a :class:`ContextError` naming the option to raise.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Union

import pathspec

from recursa.context_json import (
    check_format,
    is_documents,
    parse_json,
    preview,
    shape,
    to_json_value,
    wants_json,
)
from recursa.errors import ContextError
from recursa.limits import approx_tokens

__all__ = [
    "DEFAULT_MAX_CONTEXT_BYTES",
    "DEFAULT_MAX_FILE_BYTES",
    "Context",
    "ContextSource",
    "FileOrigin",
    "load_context",
]

# Items are checked at run time (JSON data, else ContextError), so the containers take Any.
ContextSource = Union[str, bytes, list[Any], tuple[Any, ...], Mapping[Any, Any], Path, "Context"]

_VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr"})
_SNIFF = 8192
PREVIEW_CHARS = 500
LISTED_PARTS = 100
MIB = 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 256 * MIB
DEFAULT_MAX_CONTEXT_BYTES = 512 * MIB
_CHUNK = MIB
_GITIGNORE_BYTES = MIB
_SURROGATE = re.compile("[\ud800-\udfff]")


def _name(text: str) -> str:
    """A path as text that can be encoded: file names that are not UTF-8 come from the OS with
    lone surrogates, which no prompt, journal or trace could hold."""
    return _SURROGATE.sub("\ufffd", text)


_FILE_OPTION = "--max-file-mb (max_file_bytes= in Python)"
_TOTAL_OPTION = "--max-context-mb (max_context_bytes= in Python)"


@dataclass(frozen=True)
class FileOrigin:
    """How to read a context made only of files and folders again: the run journal keeps this
    instead of the text (see :mod:`recursa.context_ref`)."""

    paths: tuple[str, ...]  # the sources, absolute
    format: str
    max_file_bytes: int
    max_context_bytes: int
    files: tuple[tuple[str, int, int], ...]  # each file read: (absolute path, size, mtime_ns)


@dataclass(frozen=True)
class Context:
    """A loaded context and what the root model is told about it."""

    value: str | list[Any] | dict[str, Any]
    kind: str
    warnings: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    multi: bool = False
    _parts: tuple[tuple[str, int], ...] = field(default=(), repr=False)
    # Set when every source was a regular file or a folder, so the text can be found again.
    origin: FileOrigin | None = field(default=None, repr=False, compare=False)

    @property
    def parts(self) -> tuple[tuple[str, int], ...]:
        """``(label, characters)`` for each part (one part for a plain string)."""
        return self._parts

    @property
    def total_chars(self) -> int:
        return sum(n for _, n in self._parts)

    @property
    def approx_tokens(self) -> int:
        return approx_tokens(self.total_chars)

    @property
    def python_type(self) -> str:
        return type(self.value).__name__

    def preview(self, n: int = PREVIEW_CHARS) -> str:
        """The start of the context: text as it is, data as a Python literal (``repr``)."""
        return preview(self.value, n, parts=self.multi)

    def structure(self) -> list[str]:
        """One line per part that is not plain text: its shape (see
        :func:`recursa.context_json.shape`), so the model knows how to index it."""
        if isinstance(self.value, str):
            return []
        if self.multi and isinstance(self.value, list):
            return [
                f"Structure of context_{i}: {shape(part)}"
                for i, part in enumerate(self.value[:LISTED_PARTS])
                if not isinstance(part, str)
            ]
        return [f"Structure: {shape(self.value)}"]

    def describe(self) -> str:
        """The metadata block the root prompt shows instead of the context itself."""
        lines = [
            f"Type: {self.python_type} ({self.kind})",
            f"Total size: {self.total_chars:,} characters (about {self.approx_tokens:,} tokens)",
            *self.structure(),
        ]
        if isinstance(self.value, (list, dict)):
            shown = self._parts[:LISTED_PARTS]
            lines.append(f"Parts: {len(self._parts):,}")
            listing = ", ".join(f"{label}: {n:,}" for label, n in shown)
            more = len(self._parts) - len(shown)
            lines.append(
                f"Part lengths in characters: {listing}"
                + (f", ... ({more:,} more)" if more else "")
            )
        if self.multi:
            lines.append(
                f"Several inputs were given: context is a list and context_0 .. "
                f"context_{len(self._parts) - 1} name each one."
            )
        of = "" if self.multi or is_documents(self.value) else " of repr(context)"
        lines.append(f"Preview (first {PREVIEW_CHARS} characters{of}):\n{self.preview()}")
        return "\n".join(lines)


def _size(value: Any) -> int:
    """Characters of text in ``value``: its strings, and other scalars as ``str()`` writes them."""
    if isinstance(value, dict):
        values: Iterable[Any] = value.values()
    elif isinstance(value, (list, tuple)):
        values = value
    else:
        return len(value) if isinstance(value, str) else len(str(value))
    # Strings inline: a data context may hold millions of them.
    return sum(len(v) if type(v) is str else _size(v) for v in values)


def _parts_of(value: Any) -> tuple[tuple[str, int], ...]:
    if isinstance(value, dict):
        return tuple((str(k), _size(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple((str(i), _size(v)) for i, v in enumerate(value))
    return (("0", _size(value)),)


# ---- decoding ---------------------------------------------------------------------------------


def _decode(data: bytes, label: str, warnings: list[str]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
        warnings.append(f"{label}: {bad:,} invalid UTF-8 sequence(s) replaced with U+FFFD")
        return text


def _looks_binary(head: bytes) -> bool:
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
        return False
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 4:  # a multi-byte character cut by the sniff window
            return False
    controls = sum(1 for b in head if b < 9 or 13 < b < 32)
    return controls > len(head) * 0.1


# ---- files and folders ------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / MIB:,.1f} MiB" if n >= MIB else f"{n:,} bytes"


@dataclass
class _Budget:
    """Bytes of files read so far, against the per-file and total limits."""

    max_file: int
    max_total: int
    used: int = 0
    # Each regular file read, (absolute path, size, mtime_ns) as fstat saw it, for the run
    # journal to find them again; ``repeatable`` is False once a pipe was read (it cannot be).
    files: list[tuple[str, int, int]] = field(default_factory=list)
    repeatable: bool = True

    def read(self, path: Path, st: os.stat_result, size: int) -> None:
        """Count ``size`` bytes read from ``path`` (``st`` its fstat)."""
        self.used += size
        if stat.S_ISREG(st.st_mode):
            self.files.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
        else:
            self.repeatable = False

    def __post_init__(self) -> None:
        for name, value in (
            ("max_file_bytes", self.max_file),
            ("max_context_bytes", self.max_total),
        ):
            if value < 1:
                raise ContextError(f"{name} must be at least 1 (got {value})")

    def room(self) -> int:
        """The most bytes the next file may hold."""
        return min(self.max_file, self.max_total - self.used)

    def too_big(self, what: str, size: int | None) -> ContextError:
        """The error for ``what`` holding ``size`` bytes (None: more than it had room for)."""
        if (size or 0) > self.max_file or (size is None and self.room() == self.max_file):
            held = f"{_mib(size)}" if size is not None else f"more than {_mib(self.max_file)}"
            return ContextError(
                f"{what} holds {held}, over the limit of {_mib(self.max_file)} per file; "
                f"raise it with {_FILE_OPTION}"
            )
        return ContextError(
            f"the context would hold more than {_mib(self.max_total)} of files (at {what}); "
            f"raise the limit with {_TOTAL_OPTION} or give fewer files"
        )


def _open(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """The file opened for reading, and its ``fstat``. Opened without blocking, so a FIFO put
    in a file's place after a check cannot hang the open; the caller decides what to read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    f = os.fdopen(fd, "rb", buffering=0)
    try:
        return f, os.fstat(fd)
    except BaseException:
        f.close()
        raise


def _read_capped(f: BinaryIO, limit: int, head: bytes = b"") -> bytes | None:
    """``head`` and the rest of ``f``, or None as soon as that is more than ``limit`` bytes."""
    parts, size = [head], len(head)
    while size <= limit and (chunk := f.read(min(_CHUNK, limit + 1 - size))):
        parts.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(parts)


def _read_file(path: Path, label: str, warnings: list[str], budget: _Budget) -> str:
    try:
        f, st = _open(path)
        with f:
            if stat.S_ISFIFO(st.st_mode):  # a pipe the user named (<(cmd)): wait for a writer
                with open(path, "rb", buffering=0) as pipe:
                    data = _read_capped(pipe, budget.room())
            elif stat.S_ISDIR(st.st_mode):
                raise ContextError(f"{path} is a folder")
            elif not stat.S_ISREG(st.st_mode):
                raise ContextError(
                    f"{path} is not a regular file (a device or socket); give a file or a folder"
                )
            elif st.st_size > budget.room():
                raise budget.too_big(str(path), st.st_size)
            else:
                data = _read_capped(f, budget.room())
    except FileNotFoundError:
        raise ContextError(f"no such file: {path}") from None
    except PermissionError:
        raise ContextError(f"cannot read {path}: permission denied") from None
    except IsADirectoryError:
        raise ContextError(f"{path} is a folder") from None
    except OSError as exc:
        raise ContextError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data is None:  # it grew, or it is a stream with no size to check first
        raise budget.too_big(str(path), None)
    if _looks_binary(data[:_SNIFF]):
        raise ContextError(f"{path} looks like a binary file; give a text file or a folder")
    budget.read(path, st, len(data))
    return _decode(data, label, warnings)


def _read_member(path: Path, budget: _Budget) -> bytes | str:
    """A folder member's bytes, or why it is skipped: ``"special"``, ``"big"`` or ``"binary"``.

    Only regular files are read (checked on the open file, so nothing can be swapped in after
    the check), and only as far as the limits allow; a binary file costs one sniff.
    """
    f, st = _open(path)
    with f:
        if not stat.S_ISREG(st.st_mode):
            return "special"
        if st.st_size > budget.max_file:
            return "big"
        if st.st_size > budget.room():
            raise budget.too_big(str(path), st.st_size)
        head = f.read(_SNIFF)
        if _looks_binary(head):
            return "binary"
        data = _read_capped(f, budget.room(), head)
    if data is None:  # it grew since fstat
        raise budget.too_big(str(path), None)
    budget.read(path, st, len(data))
    return data


class _Ignore:
    """``.gitignore`` rules found on the way down a tree, each applied below its own folder."""

    def __init__(self) -> None:
        self.specs: list[tuple[str, pathspec.GitIgnoreSpec]] = []

    def add(self, rel_dir: str, gitignore: Path, warnings: list[str]) -> None:
        try:
            f, st = _open(gitignore)
            with f:
                data = _read_capped(f, _GITIGNORE_BYTES) if stat.S_ISREG(st.st_mode) else None
        except OSError as exc:
            warnings.append(f"{gitignore}: not read ({exc.strerror}); its rules were not applied")
            return
        if data is None:
            warnings.append(
                f"{gitignore}: not a regular file of at most {_mib(_GITIGNORE_BYTES)}; "
                "its rules were not applied"
            )
            return
        lines = data.decode("utf-8", errors="replace").splitlines()
        self.specs.append((rel_dir, pathspec.GitIgnoreSpec.from_lines(lines)))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        target = rel + "/" if is_dir else rel
        for base, spec in self.specs:
            if base and not target.startswith(base + "/"):
                continue
            sub = target[len(base) + 1 :] if base else target
            if spec.match_file(sub):
                return True
        return False


def _names(paths: list[str], shown: int = 5) -> str:
    return ", ".join(paths[:shown]) + (" ..." if len(paths) > shown else "")


def _read_folder(root: Path, warnings: list[str], budget: _Budget) -> dict[str, str]:
    if not os.access(root, os.R_OK | os.X_OK):
        raise ContextError(f"cannot read folder {root}: permission denied")
    ignore = _Ignore()
    files: dict[str, str] = {}
    skipped_binary = skipped_ignored = 0
    unreadable: list[str] = []
    outside: list[str] = []  # links leading out of the folder
    special: list[str] = []  # FIFOs, sockets, devices (or links to them)
    too_big: list[str] = []  # over the per-file limit
    linked_dirs: list[str] = []  # links to folders: never followed (a loop, or out of the folder)
    real_root = root.resolve()

    def onerror(exc: OSError) -> None:
        unreadable.append(str(exc.filename))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        if ".gitignore" in filenames:
            ignore.add(rel_dir, here / ".gitignore", warnings)
        kept = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if d in _VCS_DIRS:
                continue
            if (here / d).is_symlink():
                linked_dirs.append(rel)
                continue
            if ignore.ignored(rel, is_dir=True):
                skipped_ignored += 1
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            path = here / name
            if ignore.ignored(rel, is_dir=False):
                skipped_ignored += 1
                continue
            try:
                # A link out of the folder, or to a FIFO, socket or device (/dev/zero), would
                # read what the user did not point at, or hang: only regular files inside count.
                if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                    outside.append(rel)
                    continue
                data = _read_member(path, budget)
            except OSError:
                unreadable.append(rel)
                continue
            if data == "special":
                special.append(rel)
            elif data == "big":
                too_big.append(rel)
            elif data == "binary":
                skipped_binary += 1
            else:
                assert isinstance(data, bytes)
                files[_name(rel)] = _decode(data, _name(rel), warnings)
    if too_big:
        warnings.append(
            f"{root}: skipped {len(too_big):,} file(s) over the limit of "
            f"{_mib(budget.max_file)} per file, raise it with {_FILE_OPTION}: {_names(too_big)}"
        )
    if skipped_binary:
        warnings.append(f"{root}: skipped {skipped_binary:,} binary file(s)")
    if outside:
        warnings.append(
            f"{root}: skipped {len(outside):,} link(s) to files outside the folder: "
            f"{_names(outside)}"
        )
    if linked_dirs:
        warnings.append(
            f"{root}: skipped {len(linked_dirs):,} link(s) to folders (not followed): "
            f"{_names(linked_dirs)}"
        )
    if special:
        warnings.append(
            f"{root}: skipped {len(special):,} special file(s) (FIFOs, sockets, devices): "
            f"{_names(special)}"
        )
    if skipped_ignored:
        warnings.append(f"{root}: skipped {skipped_ignored:,} path(s) matched by .gitignore")
    if unreadable:
        warnings.append(
            f"{root}: {len(unreadable):,} unreadable path(s) skipped: {_names(unreadable)}"
        )
    if not files:
        raise ContextError(f"folder {root} holds no readable text files")
    return files


# ---- entry point ------------------------------------------------------------------------------


_BYTES_LABEL = "the bytes context (standard input for --context -)"


def _top_items(source: Mapping[Any, Any] | list[Any] | tuple[Any, ...], warnings: list[str]) -> Any:
    """``source`` with its bytes items decoded: each item of a list or dict may be a document of
    its own (a file's bytes), as a source may; bytes deeper inside are refused as data."""

    def text(v: Any, label: str) -> Any:
        return _decode(bytes(v), label, warnings) if isinstance(v, (bytes, bytearray)) else v

    if isinstance(source, Mapping):
        return {k: text(v, str(k)) for k, v in source.items()}
    return [text(v, f"item {i}") for i, v in enumerate(source)]


def _file(path: Path, fmt: str, warnings: list[str], budget: _Budget) -> tuple[Any, str, str]:
    label = _name(str(path))
    text = _read_file(path, label, warnings, budget)
    parse, lines = wants_json(path.suffix, fmt)
    if not parse:
        return text, "file", label
    return parse_json(text, label, lines=lines), "jsonl" if lines else "json", label


def _load_one(
    source: Any, warnings: list[str], budget: _Budget, fmt: str, where: str
) -> tuple[Any, str, str]:
    """(value, kind, label) for one source."""
    if isinstance(source, Context):
        warnings.extend(source.warnings)
        return source.value, source.kind, ",".join(source.sources) or "context"
    if isinstance(source, os.PathLike):
        path = Path(source).expanduser()
        if path.is_dir():
            return _read_folder(path, warnings, budget), "folder", _name(str(path))
        if not path.exists():
            raise ContextError(f"no such file or folder: {_name(str(path))}")
        return _file(path, fmt, warnings, budget)
    if isinstance(source, str):
        return source, "text", "text"
    if isinstance(source, (bytes, bytearray, memoryview)):
        text = _decode(bytes(source), "bytes", warnings)
        if fmt == "json":
            return parse_json(text, _BYTES_LABEL, lines=None), "json", "bytes"
        return text, "bytes", "bytes"
    if isinstance(source, (Mapping, list, tuple)):
        kind = "dict" if isinstance(source, Mapping) else "list"
        return to_json_value(_top_items(source, warnings), where), kind, kind
    if isinstance(source, (set, frozenset)):
        raise ContextError(f"{where} is a {type(source).__name__}: pass a list, e.g. sorted(...)")
    raise ContextError(
        f"unsupported context type {type(source).__name__}: give str, bytes, a pathlib.Path "
        "to a file or folder, or JSON data (lists and dicts of str, int, float, bool, None)"
    )


def _check_value(value: Any, label: str) -> None:
    """A context is text, a list or a dict: a JSON file holding one number says nothing."""
    if not isinstance(value, (str, list, dict)):
        raise ContextError(
            f"{label} holds a single {type(value).__name__} ({value!r:.40}), not text, a list "
            "or an object; read it as text with --context-format text (format='text')"
        )


def load_context(
    *sources: ContextSource | Iterable[Any],
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
    format: str = "text",
) -> Context:
    """Load one or more sources. A ``str`` is text, never a path (nor parsed): pass ``Path``
    for files. Lists and dicts may hold JSON data at any depth.

    ``max_file_bytes`` bounds each file read, ``max_context_bytes`` all files together (text
    passed in directly does not count): nothing past them is ever read.

    ``format`` says how files given on their own are read: ``"text"`` (the default),
    ``"json"`` (parsed: ``.jsonl``/``.ndjson`` as JSON Lines, a list of one value a line, any
    other file as one document; bytes too) or ``"auto"`` (``.json``, ``.jsonl`` and ``.ndjson``
    files parsed, everything else text). Invalid JSON is a :class:`ContextError` naming the
    file, line and column.
    """
    if not sources:
        raise ContextError("no context given: pass text, a file or a folder (--context PATH)")
    fmt = check_format(format)
    warnings: list[str] = []
    budget = _Budget(max_file_bytes, max_context_bytes)
    loaded = [
        _load_one(s, warnings, budget, fmt, "context" if len(sources) == 1 else f"context_{i}")
        for i, s in enumerate(sources)
    ]
    for value, _, label in loaded:
        _check_value(value, label)
    warnings = [_name(w) for w in warnings]
    origin = None
    if budget.repeatable and all(isinstance(s, os.PathLike) for s in sources):
        paths = tuple(os.path.abspath(Path(s).expanduser()) for s in sources)  # type: ignore[arg-type]
        origin = FileOrigin(paths, fmt, max_file_bytes, max_context_bytes, tuple(budget.files))
    if len(loaded) == 1:
        value, kind, label = loaded[0]
        ctx = Context(value, kind, tuple(warnings), (label,), False, _parts_of(value), origin)
    else:
        value = [v for v, _, _ in loaded]
        parts = tuple((label, _size(v)) for v, _, label in loaded)
        labels = tuple(x[2] for x in loaded)
        ctx = Context(value, "multiple", tuple(warnings), labels, True, parts, origin)
    if ctx.total_chars == 0:
        raise ContextError(
            "the context is empty: " + ", ".join(ctx.sources) + " holds no text to ask about"
        )
    return ctx
