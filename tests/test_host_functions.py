"""The host functions are one table: the worker's builtins, the protocol's checks and the
host's dispatch all come from it."""

from __future__ import annotations

import inspect

import pytest

from recursa.errors import ProtocolError
from recursa.sandbox.functions import DEFAULT_FUNCTIONS, FunctionTable, HostFunction, Param
from recursa.sandbox.protocol import validate_worker_message
from recursa.sandbox.worker import Repl


def test_each_row_gives_a_single_and_a_batched_entry() -> None:
    assert DEFAULT_FUNCTIONS.names() == [
        "llm_query",
        "llm_query_batched",
        "rlm_query",
        "rlm_query_batched",
        "llm_map",  # list operations take a list already: no batched twin
        "llm_classify",
        "llm_filter",
    ]
    batched = DEFAULT_FUNCTIONS.get("rlm_query_batched")
    assert batched is not None and batched.batch
    items = batched.items({"prompts": ["a", "b"], "contexts": [None, "c"]})
    assert items == [{"prompt": "a", "context": None}, {"prompt": "b", "context": "c"}]


def test_the_worker_builds_real_functions_from_the_table() -> None:
    sent: list[tuple[str, dict]] = []

    def call(fn: str, args: dict) -> object:
        sent.append((fn, args))
        return ["x"] * len(args.get("prompts", [1]))

    repl = Repl(call, functions=DEFAULT_FUNCTIONS.wire())
    ns = repl.namespace
    assert str(inspect.signature(ns["llm_query"])) == "(prompt, model=None)"
    assert ns["llm_query"].__doc__.startswith("Ask a language model")
    ns["llm_query"](42)
    ns["llm_query_batched"]((1, 2), model="m")
    assert ns["rlm_query_batched"]([]) == []  # an empty batch never reaches the host
    ns["rlm_query_batched"](["p"])
    assert sent == [
        ("llm_query", {"prompt": "42", "model": None}),
        ("llm_query_batched", {"prompts": ["1", "2"], "model": "m"}),
        ("rlm_query_batched", {"prompts": ["p"], "contexts": [None]}),
    ]
    with pytest.raises(ValueError, match="prompts and contexts differ in length"):
        ns["rlm_query_batched"](["a"], ["b", "c"])
    with pytest.raises(TypeError, match="rlm_query context must be str, list or dict"):
        ns["rlm_query"]("q", object())
    with pytest.raises(TypeError):
        ns["llm_query"]()  # bound like a real function
    # Model code that overwrites a host function gets it back after the cell.
    repl.run_cell("llm_query = None")
    assert callable(repl.namespace["llm_query"])


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        ("nope", {"prompt": "x"}),
        ("llm_query", {"model": None}),
        ("llm_query", {"prompt": 3}),
        ("llm_query", {"prompt": "x", "model": 5}),
        ("llm_query_batched", {"prompts": "abc"}),
        ("llm_query_batched", {"prompts": [1]}),
        ("rlm_query_batched", {"prompts": ["a"], "contexts": [1, 2]}),
        ("rlm_query_batched", {"prompts": ["a"]}),
        ("llm_query", ["not", "an", "object"]),
    ],
)
def test_the_protocol_checks_call_frames_against_the_table(fn: str, args: object) -> None:
    with pytest.raises(ProtocolError):
        validate_worker_message({"type": "call", "id": 1, "fn": fn, "args": args})


def test_a_new_function_is_one_row() -> None:
    table = FunctionTable(
        [HostFunction("echo", (Param("prompt", "text"),), handler="llm", doc="Echo.")]
    )
    msg = {"type": "call", "id": 1, "fn": "echo_batched", "args": {"prompts": ["a"]}}
    assert validate_worker_message(msg, table) is msg
    with pytest.raises(ProtocolError):
        validate_worker_message({**msg, "fn": "llm_query"}, table)
    with pytest.raises(ValueError, match="defined twice"):
        FunctionTable([table.rows[0], table.rows[0]])


async def test_every_tier_declares_the_sandbox_protocol() -> None:
    from recursa.sandbox import ProcessSandbox, Sandbox
    from recursa.sandbox.base import HasWorkerProcess
    from recursa.sandbox.inprocess import InProcessSandbox

    box = InProcessSandbox()
    assert isinstance(box, Sandbox) and not isinstance(box, HasWorkerProcess)
    assert not box.alive
    await box.start()
    await box.set_var("x", [1, 2])
    assert box.alive and await box.get_var("x") == "[1, 2]"
    await box.shutdown()
    assert not box.alive
    proc = ProcessSandbox()
    assert isinstance(proc, Sandbox) and isinstance(proc, HasWorkerProcess)
