"""Contexts that are JSON data: Python values and .json/.jsonl files reach the REPL as real
lists and dicts, with metadata that shows their structure; what JSON cannot carry is refused."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import pytest

from recursa import ContextError, Limits, ScriptedLM, load_context
from recursa.cli import main
from recursa.journal import Journal

from .conftest import make_rlm, repl

CHAT = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "My order 4471 never arrived."},
    {"role": "assistant", "content": "Sorry! Let me check order 4471."},
]
DATA = {
    "train": [{"q": "2+2?", "a": 4, "ok": True}, {"q": "capital of France?", "a": "Paris"}],
    "test": [{"q": "3*3?", "a": None}],
    "meta": {"source": "hand-made", "version": 1.5},
}


def seen_by_model(rlm, call: int = 1) -> str:
    """The feedback the root model got before its ``call``-th turn (the output of its code)."""
    return rlm.root_lm.calls[call][-1].content


# ---- the REPL sees real lists and dicts ----------------------------------------------------------


def test_chat_messages_are_a_list_of_dicts_in_the_repl():
    code = "print(type(context).__name__, type(context[1]).__name__, context[1]['content'])"
    rlm = make_rlm([repl(code), repl("FINAL(context[1]['role'])")])
    r = rlm.run("Which order is missing?", CHAT)
    assert r.answer == "user"
    assert "list dict My order 4471 never arrived." in seen_by_model(rlm)


def test_a_dict_of_lists_keeps_its_nested_types_in_the_repl():
    code = (
        "print(type(context).__name__, type(context['train']).__name__, "
        "context['train'][0]['a'] + 1, context['train'][0]['ok'] is True, "
        "context['test'][0]['a'] is None, context['meta']['version'] * 2)"
    )
    rlm = make_rlm([repl(code), repl("FINAL('done')")])
    rlm.run("q", DATA)
    assert "dict list 5 True True 3.0" in seen_by_model(rlm)


def test_a_data_part_among_several_inputs_is_data_too():
    code = "print(type(context_0).__name__, type(context_1).__name__, context_1[2]['role'])"
    rlm = make_rlm([repl(code), repl("FINAL('ok')")])
    rlm.run("q", "some notes", CHAT)
    assert "str list assistant" in seen_by_model(rlm)


def test_rlm_query_hands_a_child_json_data():
    child = ScriptedLM(
        rules=[
            (r"Question: sum", repl("FINAL(str(sum(context['nums'])) + type(context).__name__)"))
        ],
        name="child",
    )
    rlm = make_rlm(
        [
            repl("r = rlm_query('sum them', context={'nums': [1, 2, 39]})\nprint(r)"),
            repl("FINAL(r)"),
        ],
        child,
        limits=Limits(max_depth=1),
    )
    assert rlm.run("q", "ctx").answer == "42dict"


# ---- what the root model is told -----------------------------------------------------------------


def test_metadata_shows_structure_and_a_literal_preview():
    text = load_context(CHAT).describe()
    assert "Structure: list of 3 dicts like {'role': str, 'content': str}" in text
    assert "Preview (first 500 characters of repr(context)):" in text
    assert "[{'role': 'system', 'content': 'You are a support agent.'}" in text
    assert "Part lengths in characters: 0: 30, 1: 32, 2: 40" in text

    nested = load_context(DATA).describe()
    assert "'train': list of 2 dicts like {'q': str, 'a': int, 'ok': bool} (keys vary)" in nested
    assert "'meta': {'source': str, 'version': float}" in nested
    assert "Parts: 3" in nested


def test_metadata_of_mixed_lists_and_of_texts():
    assert "list of 3 items (1 str, 1 int, 1 None)" in load_context(["a", 1, None]).describe()
    texts = load_context(["alpha", "beta"]).describe()  # documents keep the text preview
    assert "Structure: list of 2 str" in texts
    assert "[0] alpha\n[1] beta" in texts
    assert "repr(context)" not in texts


def test_first_prompt_carries_the_structure_not_the_data():
    rlm = make_rlm([repl("FINAL('x')")])
    big = [{"id": i, "text": "filler " * 200} for i in range(200)]
    rlm.run("q", big)
    first = rlm.root_lm.calls[0][1].content
    assert "list of 200 dicts like {'id': int, 'text': str}" in first
    assert len(first) < 5_000


def test_preview_is_built_lazily_and_cut():
    huge = [{"k": "v" * 10_000}] * 100_000
    assert len(load_context(huge).preview()) == 500


# ---- normalising and refusing values -------------------------------------------------------------


class Colour(enum.IntEnum):
    RED = 1


def test_values_take_the_shape_json_gives_them():
    ctx = load_context({"pair": (1, 2), 3: Colour.RED, Path("a.txt"): "x", "f": 0.5})
    assert ctx.value == {"pair": [1, 2], "3": 1, "a.txt": "x", "f": 0.5}
    assert type(ctx.value["3"]) is int


def test_bytes_items_of_a_list_are_still_decoded():
    assert load_context([b"caf\xc3\xa9", "x"]).value == ["café", "x"]


def _self_containing() -> list:
    loop: list = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"tags": {"a", "b"}}, r"context\['tags'\] is a set: .*pass a list"),
        ([{"blob": b"\x00\x01"}], r"context\[0\]\['blob'\] is a bytes: .*decode it"),
        ([object()], r"context\[0\] is an object: .*convert it first"),
        ({(1, 2): "x"}, r"key of type tuple .*dict keys must be str"),
        ([10**5000], r"int too long for JSON: pass it as a str"),
        (_self_containing(), r"nested more than 100 levels deep \(or contains itself\)"),
        ({}, r"the context is empty"),
        (frozenset({"a"}), r"context is a frozenset"),
        (42, r"unsupported context type int"),
    ],
)
def test_what_json_cannot_carry_is_refused_with_what_to_do(value, message):
    with pytest.raises(ContextError, match=message):
        load_context(value)


def test_several_sources_name_the_part_that_is_refused():
    with pytest.raises(ContextError, match=r"context_1\[0\] is a set"):
        load_context("text", [{1}])


# ---- .json / .jsonl files --------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    chat = tmp_path / "chat.jsonl"
    # A blank line is skipped; U+2028 inside a JSON string must not split a line.
    chat.write_text(
        "\n".join(json.dumps(m) for m in CHAT[:2]) + '\n\n{"role": "x", "content": "a\u2028b"}\n',
        encoding="utf-8",
    )
    data = tmp_path / "data.json"
    data.write_text("\ufeff" + json.dumps(DATA, indent=2), encoding="utf-8")  # with a BOM
    notes = tmp_path / "notes.txt"
    notes.write_text('{"not": "parsed under auto"}')
    return {"chat": chat, "data": data, "notes": notes}


def test_files_are_text_unless_asked(files):
    ctx = load_context(files["data"])
    assert isinstance(ctx.value, str) and ctx.kind == "file"


def test_format_json_parses_documents_and_json_lines(files):
    chat = load_context(files["chat"], format="json")
    assert chat.kind == "jsonl"
    assert chat.value == [*CHAT[:2], {"role": "x", "content": "a\u2028b"}]
    data = load_context(files["data"], format="json")
    assert data.kind == "json" and data.value == DATA
    assert load_context(files["notes"], format="json").value == {"not": "parsed under auto"}


def test_format_auto_goes_by_the_file_name(files, tmp_path):
    ctx = load_context(files["chat"], files["data"], files["notes"], format="AUTO")
    assert [type(v).__name__ for v in ctx.value] == ["list", "dict", "str"]
    folder = load_context(tmp_path, format="auto")  # files inside a folder stay text
    assert isinstance(folder.value["data.json"], str)


def test_bytes_under_json_are_a_document_or_json_lines():
    assert load_context(b'{"a": [1, 2]}', format="json").value == {"a": [1, 2]}
    assert load_context(b'{"a": 1}\n{"a": 2}\n', format="json").value == [{"a": 1}, {"a": 2}]
    assert load_context(b'{"a": 1}', format="auto").value == '{"a": 1}'  # no name to go by


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.json",
            '{\n  "a": 1,\n  "b": \n}\n',
            r"bad.json is not valid JSON \(line 4, column 1",
        ),
        ("bad.jsonl", '{"a": 1}\n\n{"a": 2\n', r"bad.jsonl is not valid JSON Lines \(line 3, col"),
        ("one.json", "42", r"one.json holds a single int \(42\), not text, a list or an object"),
        ("deep.json", "[" * 200 + "]" * 200, r"deep.json is nested more than 100 levels deep"),
    ],
)
def test_bad_json_names_the_file_and_line(tmp_path, name, text, message):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ContextError, match=message):
        load_context(f, format="json")


def test_a_json_error_says_how_to_read_the_file_as_text(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("{oops}")
    with pytest.raises(ContextError, match=r"--context-format text \(format='text' in Python\)"):
        load_context(f, format="auto")


def test_an_unknown_format_is_refused():
    with pytest.raises(ContextError, match=r"unknown context format 'yaml'.*text, json, auto"):
        load_context("x", format="yaml")


# ---- the journal keeps data as data ----------------------------------------------------------------


def test_a_data_context_survives_the_journal(tmp_path):
    ctx = load_context("notes", DATA)
    Journal.create("r1", question="q", context=ctx, config={}, root=tmp_path).close()
    journal = Journal.open("r1", root=tmp_path)
    try:
        back = journal.context()
    finally:
        journal.close()
    assert back.value == ["notes", DATA]
    assert back.describe() == ctx.describe()


# ---- the command line --------------------------------------------------------------------------------


def script(tmp_path: Path, replies: list[str]) -> str:
    f = tmp_path / "script.json"
    f.write_text(json.dumps({"replies": replies}))
    return f"scripted:{f}"


def test_cli_context_format_json_loads_a_jsonl_file(tmp_path, files, capsys):
    code = repl(
        "FINAL(type(context).__name__ + ':' + str(context[1]['content'] if isinstance(context, list) else ''))"
    )
    argv = ["ask", "-c", str(files["chat"]), "-m", script(tmp_path, [code]), "-q", "q"]
    assert main([*argv[:-1], "--context-format", "json", "q"]) == 0
    assert capsys.readouterr().out == "list:My order 4471 never arrived.\n"
    assert main(argv) == 0  # default: text
    assert capsys.readouterr().out.startswith("str:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context-format", "yaml"], "unknown context format 'yaml' (--context-format"),
        (["--context-format", "json"], "bad.json is not valid JSON (line 1, column 7"),
    ],
)
def test_cli_bad_json_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": }')
    code = main(["ask", "-c", str(bad), "-m", script(tmp_path, []), *args, "q"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err
