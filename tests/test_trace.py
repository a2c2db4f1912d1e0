import json

import pytest

from recursa import ScriptedLM, TraceError
from recursa.trace.jsonl import read_trace
from recursa.trace.show import render_tree

from .conftest import make_rlm, repl


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "run.jsonl"
    sub = ScriptedLM(lambda m: "sub answer", name="sub")
    rlm = make_rlm(
        [repl("r = llm_query_batched(['a', 'b'])\nprint(r)"), repl("FINAL('done')")], sub
    )
    result = rlm.run("What happened?", "some context", trace=path)
    assert result.trace_path == path
    return path


def test_trace_is_versioned_jsonl_and_forms_one_tree(trace_file):
    lines = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert lines[0]["type"] == "header"
    assert lines[0]["format"] == "recursa.trace" and lines[0]["version"] == 1
    spans = lines[1:]
    assert spans[-1]["kind"] == "run"  # the root ends last
    ids = {s["id"] for s in spans}
    roots = [s for s in spans if s["parent_id"] is None]
    assert len(roots) == 1
    assert all(s["parent_id"] in ids for s in spans if s["parent_id"] is not None)
    kinds = [s["kind"] for s in spans]
    assert kinds.count("iteration") == 2
    assert kinds.count("lm_call") == 4  # two root turns, two sub-calls
    assert kinds.count("sub_call") == 1 and kinds.count("cell") == 2
    run = spans[-1]["attrs"]
    assert run["answer"] == "done" and run["stop_reason"] == "final"
    assert run["usage"]["calls"] == 4
    cell = next(s for s in spans if s["kind"] == "cell")
    assert "llm_query_batched" in cell["attrs"]["code"]
    assert "sub answer" in cell["attrs"]["stdout"]
    sub = [s for s in spans if s["kind"] == "lm_call" and s["attrs"]["role"] == "sub"]
    assert {s["attrs"]["depth"] for s in sub} == {1}
    assert all(s["attrs"]["input_tokens"] > 0 for s in sub)


def test_read_back_and_render(trace_file):
    trace = read_trace(trace_file)
    assert len(trace.roots()) == 1
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(render_tree(trace, full=True))
    text = console.export_text()
    assert "What happened?" in text
    assert "llm_query_batched ×2" in text
    assert "FINAL: done" in text


def test_a_torn_last_line_is_tolerated_but_a_bad_middle_line_is_not(trace_file):
    text = trace_file.read_text()
    trace_file.write_text(text + '{"type": "span", "id": "tor')
    assert len(read_trace(trace_file).spans) == len(text.splitlines()) - 1
    lines = text.splitlines()
    lines.insert(2, "garbage")
    trace_file.write_text("\n".join(lines))
    with pytest.raises(TraceError, match="line 3"):
        read_trace(trace_file)


def test_not_a_trace(tmp_path):
    with pytest.raises(TraceError, match="no such trace"):
        read_trace(tmp_path / "missing.jsonl")
    f = tmp_path / "x.jsonl"
    f.write_text("")
    with pytest.raises(TraceError, match="empty"):
        read_trace(f)
    f.write_text('{"hello": 1}\n')
    with pytest.raises(TraceError, match="not a recursa trace"):
        read_trace(f)
    f.write_text('{"format": "recursa.trace", "version": 99}\n')
    with pytest.raises(TraceError, match="version 99"):
        read_trace(f)
