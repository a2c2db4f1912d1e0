"""The host's half of the frame protocol never trusts the worker."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recursa.errors import ProtocolError
from recursa.sandbox.protocol import encode_frame, read_frame, validate_worker_message

LIMIT = 1 << 16


async def frames_from(data: bytes) -> list[dict]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    out = []
    while True:
        try:
            out.append(await read_frame(reader, LIMIT))
        except EOFError:
            return out


def frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


async def test_well_formed_frames_round_trip():
    msgs = [
        {"type": "ready", "pid": 12, "protections": ["core"]},
        {"type": "call", "id": 1, "fn": "llm_query", "args": {"prompt": "hi", "model": None}},
        {"type": "call", "id": 2, "fn": "llm_query_batched", "args": {"prompts": ["a", "b"]}},
        {"type": "result", "id": 3, "stdout": "x", "stdout_chars": 1, "error": None, "final": None},
        {"type": "var", "found": True, "value": "v"},
    ]
    assert await frames_from(b"".join(encode_frame(m) for m in msgs)) == msgs


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        {"type": "nonsense"},
        {"type": "call", "id": 1, "fn": "os.system", "args": {}},
        {"type": "call", "id": "1", "fn": "llm_query", "args": {"prompt": "x"}},
        {"type": "call", "id": True, "fn": "llm_query", "args": {"prompt": "x"}},
        {"type": "call", "id": 1, "fn": "llm_query", "args": {"prompt": 3}},
        {"type": "call", "id": 1, "fn": "llm_query_batched", "args": {"prompts": [1]}},
        {"type": "call", "id": 1, "fn": "llm_query_batched", "args": {"prompts": ["a"] * 10_001}},
        {
            "type": "call",
            "id": 1,
            "fn": "rlm_query_batched",
            "args": {"prompts": ["a"], "contexts": []},
        },
        {"type": "result", "id": 1, "stdout": 5, "stdout_chars": 1},
        {"type": "result", "id": 1, "stdout": "", "stdout_chars": 0, "final": ["x"]},
        {"type": "var", "found": "yes"},
    ],
)
def test_malformed_messages_are_rejected(bad):
    with pytest.raises(ProtocolError):
        validate_worker_message(bad)


async def test_oversized_truncated_and_non_json_frames():
    with pytest.raises(ProtocolError, match="limit"):
        await frames_from(struct.pack(">I", LIMIT + 1) + b"x" * 10)
    with pytest.raises(ProtocolError, match="truncated"):
        await frames_from(struct.pack(">I", 100) + b"{}")
    with pytest.raises(ProtocolError, match="truncated frame header"):
        await frames_from(b"\x00\x00")
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        await frames_from(struct.pack(">I", 3) + b"\xff\xfe{")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise_anything_but_a_protocol_error(data):
    try:
        msgs = asyncio.run(frames_from(data))
    except ProtocolError:
        return
    for m in msgs:  # anything accepted is a well-formed message
        assert validate_worker_message(m) is m


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=20,
    )
)
def test_random_json_values_are_validated_not_trusted(value):
    try:
        msgs = asyncio.run(frames_from(frame(value)))
    except ProtocolError:
        return
    assert msgs == [value]
    assert isinstance(value, dict) and value["type"] in {"ready", "result", "call", "var"}
