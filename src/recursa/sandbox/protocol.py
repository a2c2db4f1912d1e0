"""Host side of the frame protocol: length-prefixed JSON, size-capped and type-checked.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON holding one object with
a ``type``. The worker's half of the protocol lives in ``worker.py`` (which must stay
standard-library only); this half never trusts what the worker sends: a frame that is too large,
not JSON, not an object, of an unknown type, or missing a field is a :class:`ProtocolError`, and
the sandbox kills the worker.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from recursa.errors import ProtocolError
from recursa.sandbox.functions import DEFAULT_FUNCTIONS, FunctionTable

__all__ = [
    "HEADER",
    "encode_frame",
    "read_frame",
    "read_frame_sized",
    "validate_worker_message",
]

HEADER = struct.Struct(">I")


def encode_frame(msg: dict[str, Any]) -> bytes:
    body = json.dumps(msg, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
    return HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> dict[str, Any]:
    """Read one frame. Raises ``EOFError`` at a clean end, :class:`ProtocolError` on garbage
    (any frame the host cannot read, however it fails)."""
    msg, _size = await read_frame_sized(reader, max_bytes)
    return msg


async def read_frame_sized(
    reader: asyncio.StreamReader, max_bytes: int, functions: FunctionTable = DEFAULT_FUNCTIONS
) -> tuple[dict[str, Any], int]:
    """:func:`read_frame`, also returning the frame's size on the wire; ``call`` frames are
    checked against ``functions`` (the sandbox's own table)."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("the worker sent a truncated frame header") from exc
        raise EOFError("the worker closed its end") from exc
    (size,) = HEADER.unpack(header)
    if size > max_bytes:
        raise ProtocolError(f"the worker sent a {size}-byte frame (limit {max_bytes})")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("the worker sent a truncated frame") from exc
    try:
        msg = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"the worker sent a frame that is not UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:  # "[[[[..." nested past the parser's recursion limit
        raise ProtocolError("the worker sent JSON nested too deeply to parse") from exc
    except MemoryError as exc:
        raise ProtocolError(f"the worker sent a {size}-byte frame the host cannot decode") from exc
    return validate_worker_message(msg, functions), HEADER.size + size


def _need(msg: dict[str, Any], key: str, types: type | tuple[type, ...]) -> Any:
    value = msg.get(key)
    # bool is an int subclass; never accept it where a number is meant.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise ProtocolError(f"'{msg.get('type')}' frame: bad or missing field {key!r}")
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def validate_worker_message(
    msg: Any, functions: FunctionTable = DEFAULT_FUNCTIONS
) -> dict[str, Any]:
    """Check that ``msg`` is a well-formed worker -> host message; return it. A ``call``
    frame must name one of ``functions`` with arguments that fit it."""
    if not isinstance(msg, dict):
        raise ProtocolError("the worker sent a frame that is not a JSON object")
    kind = msg.get("type")
    if kind == "result":
        _need(msg, "id", int)
        _need(msg, "stdout", str)
        _need(msg, "stdout_chars", int)
        for key in ("error", "final"):
            if msg.get(key) is not None and not isinstance(msg[key], str):
                raise ProtocolError(f"result frame: {key} must be a string or null")
    elif kind == "call":
        _need(msg, "id", int)
        functions.check(msg.get("fn"), msg.get("args"))
    elif kind == "var":
        _need(msg, "found", bool)
        if msg.get("value") is not None and not isinstance(msg["value"], str):
            raise ProtocolError("var frame: value must be a string or null")
    elif kind == "ready":
        _need(msg, "pid", int)
        protections = msg.get("protections", [])
        if not isinstance(protections, list):
            raise ProtocolError("ready frame: protections must be a list")
    else:
        raise ProtocolError(f"the worker sent an unknown frame type {kind!r}")
    return msg
