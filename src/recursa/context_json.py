"""Contexts that are data: JSON-like values, and ``.json`` / ``.jsonl`` files read as data.

A context travels to the sandbox's worker as JSON (never pickle), is journaled as JSON, and a
resumed run reads it back from there. So a context may hold only what survives that trip
unchanged: ``str``, ``int``, ``float``, ``bool``, ``None``, lists and dicts with ``str`` keys.
:func:`to_json_value` checks a value against that and returns it in the shape the REPL will
see (tuples become lists, ``int`` keys and path keys become ``str`` as JSON would make them);
anything else is a :class:`~recursa.errors.ContextError` that names where the value sits
(``context[3]['tags']``) and what to pass instead.

:func:`parse_json` reads a file's text as one JSON document or as JSON Lines (one value a line),
and :func:`shape` / :func:`literal_preview` describe data to the root model (its structure,
and the start of it as a Python literal, which is how the model's code will index it).
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from recursa.errors import ContextError

__all__ = [
    "CONTEXT_FORMATS",
    "MAX_NESTING",
    "check_format",
    "is_documents",
    "literal_preview",
    "parse_json",
    "preview",
    "shape",
    "to_json_value",
    "wants_json",
]

#: How ``.json``/``.jsonl`` files are read: ``text`` (as any file), ``json`` (every file given
#: on its own, and standard input, is parsed) or ``auto`` (files ending ``.json``, ``.jsonl`` or
#: ``.ndjson`` are parsed, others are text).
CONTEXT_FORMATS = ("text", "json", "auto")
_JSON_SUFFIXES = frozenset({".json"})
_LINES_SUFFIXES = frozenset({".jsonl", ".ndjson"})

#: Deeper values are refused: the worker's JSON parser (and any recursive walk over the value)
#: would hit Python's recursion limit, and a value that contains itself never ends.
MAX_NESTING = 100
# Python refuses to turn ints of more than 4,300 digits into text (so JSON cannot carry them).
_MAX_INT_BITS = 14_000
_KINDS = {str: "str", int: "int", float: "float", bool: "bool", type(None): "None"}
_SAMPLE = 1000  # list items looked at to describe a list's items
_SHOWN_KEYS = 8  # dict keys spelled out in a shape
_SHAPE_LEVELS = 3  # containers spelled out below the top one
_SHAPE_CHARS = 600  # the longest shape line


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`CONTEXT_FORMATS` (spelled in lower case), else an error."""
    name = fmt.strip().lower() if isinstance(fmt, str) else fmt
    if name not in CONTEXT_FORMATS:
        raise ContextError(
            f"unknown context format {fmt!r} (--context-format, format= in Python): choose one "
            f"of {', '.join(CONTEXT_FORMATS)}"
        )
    return str(name)


def wants_json(suffix: str, fmt: str) -> tuple[bool, bool]:
    """``(parse it, as JSON Lines)`` for a file ending in ``suffix`` under format ``fmt``."""
    suffix = suffix.lower()
    lines = suffix in _LINES_SUFFIXES
    if fmt == "json":
        return True, lines
    if fmt == "auto":
        return lines or suffix in _JSON_SUFFIXES, lines
    return False, False


# ---- checking values --------------------------------------------------------------------------

_PASS_ONLY = "a context holds only text and JSON data (str, int, float, bool, None, lists, dicts)"


class _Refused(Exception):
    """Why a value cannot be a context; ``path`` (``[3]``, ``['tags']``) is filled in on the
    way out, so that no location text is built for the values that pass."""

    def __init__(self, why: str) -> None:
        self.why = why
        self.path: list[str] = []


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _refusal(value: Any) -> _Refused:
    kind = type(value).__name__
    if isinstance(value, (set, frozenset)):
        hint = "pass a list instead, e.g. sorted(...)"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        hint = (
            "decode it to str first (data.decode('utf-8')), or pass the bytes as a context of "
            "their own, where they are decoded for you"
        )
    else:
        hint = "convert it first: str(x), or dataclasses.asdict(x) / x.model_dump() for records"
    return _Refused(f"is {_a(kind)}: {_PASS_ONLY}; {hint}")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str.__str__(key)  # a plain str, also for str subclasses such as StrEnum
    if isinstance(key, int) and not isinstance(key, bool):
        return str(int(key))  # as JSON writes int keys
    if isinstance(key, os.PathLike):  # {Path("a.txt"): text}: a file map, keyed by its paths
        path = os.fspath(key)
        return path if isinstance(path, str) else str(key)
    raise _Refused(
        f"has a key of type {type(key).__name__} ({key!r:.60}): dict keys must be str "
        "(JSON object keys are text); convert them with str() first"
    )


# Values that are already what JSON gives back: kept as they are, without a call per value
# (a JSONL file of 200,000 records holds millions of them).
_PLAIN = frozenset({str, float, bool, type(None)})


def _scalar(value: Any) -> Any:
    if isinstance(value, str):
        return str.__str__(value)  # a plain str, also for subclasses (StrEnum)
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise _Refused("is an int too long for JSON: pass it as a str")
        return int(value)  # IntEnum and friends: the number JSON would write
    if isinstance(value, float):
        return float(value)
    raise _refusal(value)


def _item(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _PLAIN or (kind is int and value.bit_length() <= _MAX_INT_BITS):
        return value
    if isinstance(value, (Mapping, list, tuple)):
        return _container(value, depth)
    return _scalar(value)


def _container(value: Mapping[Any, Any] | list[Any] | tuple[Any, ...], depth: int) -> Any:
    if depth >= MAX_NESTING:
        raise _Refused(
            f"is nested more than {MAX_NESTING} levels deep (or contains itself): flatten it, "
            "or pass it as text (json.dumps(value))"
        )
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = k if type(k) is str else _key(k)
            if type(v) in _PLAIN:
                out[key] = v
                continue
            try:
                out[key] = _item(v, depth + 1)
            except _Refused as exc:
                exc.path.append(f"[{key!r:.60}]")
                raise
        return out
    items = []
    for i, v in enumerate(value):
        if type(v) in _PLAIN:
            items.append(v)
            continue
        try:
            items.append(_item(v, depth + 1))
        except _Refused as exc:
            exc.path.append(f"[{i}]")
            raise
    return items


def to_json_value(value: Any, where: str = "context") -> Any:
    """``value`` as the REPL will see it after its trip through JSON (tuples as lists, int
    keys as str), or a ContextError saying where in ``where`` it holds something JSON cannot
    carry and what to pass instead."""
    try:
        return _item(value, 0)
    except _Refused as exc:
        path = "".join(reversed(exc.path))
        if len(path) > 80:  # a value that contains itself: [0][0][0]...
            path = path[:40] + "..." + path[-30:]
        raise ContextError(f"{where}{path} {exc.why}") from None


# ---- parsing files ----------------------------------------------------------------------------


_AS_TEXT = "Fix it, or read it as text with --context-format text (format='text' in Python)"


def _bad(label: str, exc: ValueError) -> ContextError:
    if isinstance(exc, json.JSONDecodeError):
        why = f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
    else:  # an int too long to read, for one
        why = str(exc)
    return ContextError(f"{label} is not valid JSON ({why}). {_AS_TEXT}")


def _document(text: str, label: str, *, or_lines: bool = False) -> Any:
    """One JSON document; with ``or_lines``, JSON Lines when the text holds several values."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ContextError(f"{label} is nested too deeply to read: flatten it") from None
    except json.JSONDecodeError as exc:
        if or_lines and exc.msg == "Extra data":
            return _lines(text, label)
        raise _bad(label, exc) from None
    except ValueError as exc:  # an int too long to read
        raise _bad(label, exc) from None


def _lines(text: str, label: str) -> list[Any]:
    values = []
    # Split on "\n" only: str.splitlines would also cut at U+2028, which JSON strings may hold.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except RecursionError:
            raise ContextError(f"{label}: line {number} is nested too deeply to read") from None
        except ValueError as exc:
            why = (
                f", column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else ""
            )
            raise ContextError(
                f"{label} is not valid JSON Lines (line {number}{why}); each line must hold one "
                f"JSON value. {_AS_TEXT}"
            ) from None
    return values


def parse_json(text: str, label: str, *, lines: bool | None) -> Any:
    """The data in ``text`` (read from ``label``): one JSON document, or with ``lines`` a list
    of one value per non-blank line. ``lines=None`` (standard input, which has no file name to
    go by): a document, or JSON Lines when the text holds several values, one a line."""
    text = text.removeprefix("\ufeff")  # a byte-order mark is not JSON
    value = _lines(text, label) if lines else _document(text, label, or_lines=lines is None)
    _check_nesting(value, label)
    return value


def _check_nesting(value: Any, label: str) -> None:
    """A ContextError if parsed JSON nests deeper than :data:`MAX_NESTING`. Parsed JSON holds
    nothing else JSON cannot carry, so this walk over its containers alone is all the checking
    it needs (about five times faster than :func:`to_json_value` on a large JSON Lines file)."""
    stack = [(value, 0)] if type(value) is dict or type(value) is list else []
    while stack:
        node, depth = stack.pop()
        if depth >= MAX_NESTING:
            raise ContextError(
                f"{label} is nested more than {MAX_NESTING} levels deep: flatten it, or read it "
                "as text with --context-format text (format='text' in Python)"
            )
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))


# ---- describing data to the root model --------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, list):
        return "list"
    return _KINDS.get(type(value), type(value).__name__)


def is_documents(value: Any) -> bool:
    """True for text, and for a list or dict of texts (files, pages, a folder): shown to the
    model as text; anything else is data, shown as a Python literal."""
    if isinstance(value, str):
        return True
    items = value.values() if isinstance(value, dict) else value
    return isinstance(value, (dict, list)) and all(isinstance(v, str) for v in items)


def _key_text(key: str) -> str:
    return repr(key if len(key) <= 40 else key[:39] + "…")


def _dict_shape(value: dict[str, Any], level: int) -> str:
    n = len(value)
    if not n:
        return "{} (empty dict)"
    kinds = {_kind(v) for v in itertools.islice(value.values(), _SAMPLE)}
    if level >= _SHAPE_LEVELS or (n > _SHOWN_KEYS and len(kinds) == 1):
        return f"dict of {n:,} {kinds.pop()}" if len(kinds) == 1 else f"dict of {n:,} keys"
    shown = [
        f"{_key_text(k)}: {_shape(v, level + 1)}"
        for k, v in itertools.islice(value.items(), _SHOWN_KEYS)
    ]
    more = n - len(shown)
    return "{" + ", ".join(shown) + (f", ... ({more:,} more keys)" if more else "") + "}"


def _list_shape(value: list[Any], level: int) -> str:
    n = len(value)
    if not n:
        return "[] (empty list)"
    sample = value[:_SAMPLE]
    kinds = Counter(_kind(v) for v in sample)
    if len(kinds) > 1:
        counts = ", ".join(f"{c:,} {k}" for k, c in kinds.most_common())
        where = f" among the first {len(sample):,}" if n > len(sample) else ""
        return f"list of {n:,} items ({counts}{where})"
    kind = next(iter(kinds))
    if kind not in ("dict", "list") or level >= _SHAPE_LEVELS:
        return f"list of {n:,} {kind}"
    first = value[0]
    vary = kind == "dict" and any(d.keys() != first.keys() for d in sample)
    like = f"list of {n:,} {kind}{'s' if n > 1 else ''} like {_shape(first, level + 1)}"
    return like + (" (keys vary)" if vary else "")


def _shape(value: Any, level: int) -> str:
    if isinstance(value, dict):
        return _dict_shape(value, level)
    if isinstance(value, list):
        return _list_shape(value, level)
    return _kind(value)


def shape(value: Any) -> str:
    """The structure of ``value`` in one line, e.g. ``list of 3 dicts like {'role': str,
    'content': str}``: what code must index, without the data itself."""
    text = _shape(value, 0)
    return text if len(text) <= _SHAPE_CHARS else text[: _SHAPE_CHARS - 3] + "..."


def _literal(value: Any, room: int) -> Iterator[str]:
    """``repr(value)`` in pieces, so that a preview never builds the whole of a large value."""
    if isinstance(value, dict):
        yield "{"
        for i, (k, v) in enumerate(value.items()):
            yield (", " if i else "") + repr(k[: room + 1]) + ": "
            yield from _literal(v, room)
        yield "}"
    elif isinstance(value, list):
        yield "["
        for i, v in enumerate(value):
            if i:
                yield ", "
            yield from _literal(v, room)
        yield "]"
    elif isinstance(value, str):
        yield repr(value[: room + 1])  # a long string is cut before it is quoted
    else:
        yield repr(value)


def literal_preview(value: Any, n: int) -> str:
    """The first ``n`` characters of ``repr(value)``, built only as far as needed."""
    out: list[str] = []
    size = 0
    for piece in _literal(value, n):
        out.append(piece)
        size += len(piece)
        if size >= n:
            break
    return "".join(out)[:n]


def _joined(items: Iterable[tuple[str, Any]], n: int) -> str:
    """``header + preview`` for each item, one a line, until ``n`` characters are reached."""
    out: list[str] = []
    size = 0
    for header, value in items:
        out.append(header + _preview(value, n))
        size += len(out[-1]) + 1
        if size >= n:
            break
    return "\n".join(out)[:n]


def _preview(value: Any, n: int) -> str:
    """Text as it is, a list or dict of texts one under another, data as a Python literal."""
    if isinstance(value, str):
        return value[:n]
    if not is_documents(value):
        return literal_preview(value, n)
    if isinstance(value, dict):
        return _joined(((f"--- {k} ---\n", v) for k, v in value.items()), n)
    return _joined(((f"[{i}] ", v) for i, v in enumerate(value)), n)


def preview(value: Any, n: int, *, parts: bool = False) -> str:
    """The first ``n`` characters the root model sees of ``value``: text as it is, a list or
    dict of texts one under another, data as a Python literal. ``parts``: ``value`` is a list
    of separate inputs, each shown its own way."""
    if parts and isinstance(value, list):
        return _joined(((f"[{i}] ", part) for i, part in enumerate(value)), n)
    return _preview(value, n)
