"""llm_map / llm_classify / llm_filter: packing, parsing, retries, and the REPL functions."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence

import pytest

from recursa import RLM, Limits
from recursa.lm.scripted import ScriptedLM
from recursa.sandbox.functions import DEFAULT_FUNCTIONS
from recursa.sandbox.worker import Repl, split_chunks, split_lines, split_records
from recursa.semantic import (
    MAX_ITEMS,
    Operation,
    pack,
    parse_pack,
    render_pack,
    run_operation,
)
from recursa.types import Message

LABELS = ("fruit", "vehicle", "other")


def _items(prompt: str) -> list[tuple[int, str]]:
    return [(int(k), t) for k, t in re.findall(r"^(\d+)\. (.*)$", prompt, re.MULTILINE)]


def _label(text: str) -> str:
    if any(w in text for w in ("apple", "pear", "plum")):
        return "fruit"
    if any(w in text for w in ("car", "bus", "bike")):
        return "vehicle"
    return "other"


def _answer_all(prompt: str) -> str:
    """A sub-model that answers a packed prompt correctly, whatever the operation."""
    if "Item:" in prompt:  # a single-item prompt
        item = prompt.split("Item: ", 1)[1].split("\n", 1)[0]
        return _label(item) if "Labels" in prompt else "yes"
    out = []
    for k, text in _items(prompt):
        if "Labels:" in prompt:
            out.append(f"{k}: {_label(text)}")
        elif prompt.startswith("Condition:"):
            out.append(f"{k}: {'yes' if _label(text) == 'fruit' else 'no'}")
        else:
            out.append(f"{k}: {text.upper()}")
    return "\n".join(out)


# ---- pure steps ---------------------------------------------------------------------------------
def test_pack_keeps_order_and_respects_both_limits() -> None:
    texts = ["x" * 10] * 7 + ["y" * 100] + ["z"]
    groups = pack(texts, room_chars=60, max_items=3)
    assert [i for g in groups for i in g] == list(range(9))
    assert all(len(g) <= 3 for g in groups)
    assert all(sum(len(texts[i]) + 8 for i in g) <= 60 or len(g) == 1 for g in groups)
    assert [7] in groups  # an item larger than the room still gets a pack of its own


def test_every_prompt_of_an_operation_starts_with_the_same_header() -> None:
    op = Operation("classify", "What is it?", LABELS)
    a, b = render_pack(op, ["apple", "car"]), render_pack(op, ["bus", "plum", "rock"])
    shared = len(op.header())
    assert a[:shared] == b[:shared] == op.header()
    assert "What is it?" in op.header() and all(f"- {x}" in op.header() for x in LABELS)
    assert a.index("1. apple") > shared and "from 1 to 3" in b


def test_parse_pack_reads_numbered_lines_in_any_order_and_marks_bad_ones() -> None:
    op = Operation("classify", "", LABELS)
    reply = "Here you go:\n2: Vehicle\n1. fruit\n3) a mineral\n4 - other\n1: vehicle"
    assert parse_pack(op, reply, 5) == ["fruit", "vehicle", None, "other", None]


def test_parse_pack_reads_unnumbered_lines_only_when_their_count_fits() -> None:
    op = Operation("filter", "is a fruit")
    assert parse_pack(op, "yes\nno\nYes.", 3) == [True, False, True]
    assert parse_pack(op, "yes\nno", 3) == [None, None, None]


@pytest.mark.parametrize(
    ("said", "label"),
    [
        ("numeric value", "numeric value"),
        ("Numeric", "numeric value"),
        ("**location**", "location"),
        ("the label is human being", "human being"),
        ("locaton", "location"),
        ("something else", None),
        ("", None),
    ],
)
def test_labels_are_matched_forgivingly_but_never_invented(said: str, label: str | None) -> None:
    op = Operation("classify", "", ("numeric value", "location", "human being", "entity"))
    assert op.read(said) == label


def test_an_operation_needs_what_it_works_with() -> None:
    with pytest.raises(ValueError, match="two different labels"):
        Operation("classify", "", ("a", "a"))
    with pytest.raises(ValueError, match="condition"):
        Operation("filter", " ")
    with pytest.raises(ValueError, match="instruction"):
        Operation("map", "")


# ---- running ------------------------------------------------------------------------------------
def _run(op: Operation, items: Sequence[str], replies, **kw):  # type: ignore[no-untyped-def]
    asked: list[tuple[str, int]] = []

    async def ask(prompt: str, max_tokens: int) -> str:
        asked.append((prompt, max_tokens))
        return replies(prompt, len(asked))

    result = asyncio.run(run_operation(op, items, ask, room_chars=8000, **kw))
    return result, asked


def test_items_are_packed_answered_and_aligned() -> None:
    items = [f"{w} {i}" for i in range(60) for w in ("apple", "car")][:100]
    result, asked = _run(Operation("classify", "", LABELS), items, lambda p, n: _answer_all(p))
    assert result.values == [_label(t) for t in items]
    assert len(asked) == -(-100 // MAX_ITEMS["classify"])
    assert result.failed == result.retried == 0 and result.note("llm_classify") == ""
    assert all(tokens < 1000 for _, tokens in asked)  # sized to the pack, not a default


def test_identical_items_are_answered_once() -> None:
    items = ["apple", "car", "apple", "apple", "car"]
    result, asked = _run(Operation("classify", "", LABELS), items, lambda p, n: _answer_all(p))
    assert result.values == ["fruit", "vehicle", "fruit", "fruit", "vehicle"]
    assert len(asked) == 1 and len(_items(asked[0][0])) == 2


def test_only_items_that_failed_to_parse_are_asked_again() -> None:
    items = ["apple", "car", "plum", "bus"]

    def replies(prompt: str, n: int) -> str:
        if n == 1:  # the first reply forgets item 3 and garbles item 4
            return "1: fruit\n2: vehicle\n4: ???"
        return _answer_all(prompt)

    result, asked = _run(Operation("classify", "", LABELS), items, replies)
    assert result.values == ["fruit", "vehicle", "fruit", "vehicle"]
    assert result.retried == 2
    assert [t for _, t in _items(asked[1][0])] == ["plum", "bus"]


def test_items_that_never_parse_become_none_and_are_counted_in_a_note() -> None:
    result, asked = _run(
        Operation("classify", "", LABELS), ["apple", "car"], lambda p, n: "no idea"
    )
    assert result.values == [None, None] and result.failed == 2
    assert "2 of 2 items got no usable answer" in result.note("llm_classify")
    assert any("Item: apple" in p for p, _ in asked)  # the last round asks one item at a time
    filtered, _ = _run(Operation("filter", "is a fruit"), ["apple"], lambda p, n: "maybe")
    assert filtered.values == [False]


def test_a_failing_call_is_retried_and_a_fatal_one_propagates() -> None:
    calls = {"n": 0}

    def flaky(prompt: str, n: int) -> str:
        calls["n"] += 1
        if n == 1:
            raise RuntimeError("server hiccup")
        return _answer_all(prompt)

    result, _ = _run(Operation("map", "upper-case it"), ["a", "b"], flaky)
    assert result.values == ["A", "B"] and result.errors == ["RuntimeError: server hiccup"]

    class Stop(Exception):
        pass

    def stop(prompt: str, n: int) -> str:
        raise Stop("budget gone")

    with pytest.raises(Stop):
        _run(Operation("map", "x"), ["a"], stop, fatal=(Stop,))


# ---- the REPL side ------------------------------------------------------------------------------
def _repl(reply):  # type: ignore[no-untyped-def]
    sent: list[tuple[str, dict]] = []

    def call(fn: str, args: dict) -> object:
        sent.append((fn, args))
        return reply(fn, args)

    return Repl(call, functions=DEFAULT_FUNCTIONS.wire()), sent


def test_filter_returns_the_callers_own_objects_and_the_note_is_printed() -> None:
    repl, sent = _repl(lambda fn, a: {"values": [True, False, True], "note": "[1 item failed]"})
    out = repl.run_cell(
        "rows = [('apple', 1), ('car', 2), ('plum', 3)]\nkept = llm_filter(rows, 'fruit')\nprint(kept)"
    )
    assert out["error"] is None
    assert "[('apple', 1), ('plum', 3)]" in out["stdout"] and "[1 item failed]" in out["stdout"]
    assert sent == [
        (
            "llm_filter",
            {
                "items": ["('apple', 1)", "('car', 2)", "('plum', 3)"],
                "condition": "fruit",
                "model": None,
            },
        )
    ]


def test_a_text_given_where_a_list_belongs_is_a_clear_error() -> None:
    repl, sent = _repl(lambda fn, a: {"values": [], "note": ""})
    out = repl.run_cell("llm_classify('one line\\nanother', ['a', 'b'])")
    assert "items must be a list, not str" in out["error"] and "split_lines" in out["error"]
    assert sent == []


def test_the_repl_starts_with_an_answer_dict_that_ends_the_run_when_ready() -> None:
    repl, _ = _repl(lambda fn, a: None)
    assert repl.run_cell("answer")["stdout"].strip() == "{'content': '', 'ready': False}"
    assert repl.run_cell("answer['content'] = 'draft'")["final"] is None
    assert repl.run_cell("answer['ready'] = True")["final"] == "draft"


def test_split_helpers() -> None:
    assert split_lines("a\n\n b \nc\n") == ["a", " b", "c"]
    assert split_lines(["a\nb", "c"]) == ["a", "b", "c"]
    assert split_records("one\ntwo\n\n\nthree\n \nfour") == ["one\ntwo", "three", "four"]
    assert split_records("T1 x T2 y", r"\s(?=T\d)") == ["T1 x", "T2 y"]
    text = "".join(f"line {i}\n" for i in range(100))
    chunks = split_chunks(text, 50)
    assert "".join(chunks) == text and all(len(c) <= 50 for c in chunks)
    assert all(c.endswith("\n") for c in chunks)
    assert split_chunks("x" * 120, 50) == ["x" * 50, "x" * 50, "x" * 20]


# ---- through a whole run ------------------------------------------------------------------------
ROOT_CODE = """```repl
lines = split_lines(context)
kinds = llm_classify(lines, ["fruit", "vehicle", "other"], "What is it?")
fruit = llm_filter(lines, "is a fruit")
loud = llm_map(lines[:2], "upper-case it")
answer["content"] = f"{kinds.count('fruit')} {len(fruit)} {loud}"
answer["ready"] = True
```"""


def _sub() -> ScriptedLM:
    def reply(messages: Sequence[Message]) -> str:
        return _answer_all(messages[-1].content)

    return ScriptedLM(rules=[(r".", reply)])


def test_a_run_answers_with_the_list_operations_and_traces_each_as_one_operation() -> None:
    context = "\n".join(["apple pie", "a red car", "plum", "rock", "bus stop"] * 30)
    sub = _sub()
    result = RLM(ScriptedLM(replies=[ROOT_CODE]), sub, journal=False).run("count", context)
    assert result.answer == "60 60 ['APPLE PIE', 'A RED CAR']"
    ops = {s.name: s for s in result.spans if s.kind == "sub_call"}
    assert set(ops) == {"llm_classify", "llm_filter", "llm_map"}
    classify = ops["llm_classify"]
    assert classify.attrs["n"] == 150
    assert classify.attrs["labels"] == ["fruit", "other", "vehicle"]  # sorted: order is no matter
    assert classify.attrs["items"][0] == ["apple pie", "fruit"] and classify.attrs["failed"] == 0
    calls = [s for s in result.spans if s.kind == "lm_call" and s.parent_id == classify.id]
    assert len(calls) == classify.attrs["prompts"] == 1  # 5 distinct lines: one packed prompt
    assert len(sub.calls) == 3


def test_the_budget_stops_an_operation_midway_and_the_code_sees_why() -> None:
    code = """```repl
try:
    kinds = llm_classify([f"item {i}" for i in range(200)], ["a", "b"])
except Exception as exc:
    print("refused:", exc)
```"""
    root = ScriptedLM(replies=[code])
    sub = ScriptedLM(rules=[(r".", lambda m: "1: a")])
    result = RLM(root, sub, limits=Limits(max_llm_calls=4), journal=False).run("q", "ctx")
    assert result.stop_reason.value == "max_llm_calls"
    assert len(sub.calls) == 3  # 8 packs wanted; the budget paid for 3 and refused the rest
    cell = next(s for s in result.spans if s.kind == "cell")
    assert "refused: budget exhausted" in cell.attrs["stdout"]


def test_a_backend_that_can_choose_gets_one_scored_prompt_per_distinct_item() -> None:
    def pick(messages: Sequence[Message]) -> str:
        return _label(messages[-1].content.rsplit("Item: ", 1)[1])

    sub = ScriptedLM(rules=[(r"Item: ", pick)])
    sub.capabilities = dataclasses.replace(sub.capabilities, choices=True)
    code = """```repl
kinds = llm_classify(split_lines(context), ["fruit", "vehicle", "other"])
FINAL(" ".join(kinds))
```"""
    result = RLM(ScriptedLM(replies=[code]), sub, journal=False).run("q", "plum\nbus\nplum\nrock")
    assert result.answer == "fruit vehicle fruit other"
    assert len(sub.calls) == 3  # one prompt per distinct item, no packed prompt
    prompts = [c[-1].content for c in sub.calls]
    head = prompts[0].rsplit("Item: ", 1)[0]
    assert all(p.startswith(head) for p in prompts)  # everything but the item is shared
    calls = [s for s in result.spans if s.kind == "lm_call" and s.attrs.get("role") == "sub"]
    assert {c.attrs.get("finish_reason") for c in calls} <= {"stop", None, "choice"}


def test_label_order_does_not_change_the_prompts() -> None:
    a = Operation("classify", "", ("b", "a", "c"))
    b = Operation("classify", "", ("c", "b", "a", "a"))
    assert a.labels == b.labels == ("a", "b", "c")
    assert render_pack(a, ["x"]) == render_pack(b, ["x"])


def test_trace_show_names_an_operations_prompts_and_unanswered_items() -> None:
    from recursa.trace.show import span_label
    from recursa.trace.spans import Span

    span = Span("sub_call", "llm_classify", attrs={"n": 40, "op": "classify", "prompts": 2})
    assert "×40 in 2 prompts" in span_label(span, False, None)
    span.attrs["failed"] = 3
    assert "3 unanswered" in span_label(span, False, None)
