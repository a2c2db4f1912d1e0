"""`recursa trace export --sft`: one chat example per root turn, rebuilt exactly from the trace.

Each root ``lm_call`` span carries ``new_messages`` (the messages added since the model's
previous reply, kept whole) and its whole response, so every root turn can be rebuilt exactly.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from recursa import Limits, ScriptedLM
from recursa.cli import main
from recursa.trace.jsonl import read_trace
from recursa.trace.sft import SFTFilter, examples_from_spans, export_sft
from recursa.trace.spans import Tracer

from .conftest import make_rlm, repl


class Score:
    """What bench runs do: write a score into the root run span's attributes."""

    def __init__(self, score: float) -> None:
        self.score = score

    def on_start(self, span) -> None:
        return None

    def on_end(self, span) -> None:
        if span.kind == "run" and span.parent_id is None:
            span.attrs["score"] = self.score


ROOT = [
    repl("print(len(context))"),
    repl("r = llm_query('summarise: ' + context[:20])\nprint(r)"),
    repl("FINAL('the answer')"),
]


def expected(lm: ScriptedLM, replies: list[str]) -> list[list[dict]]:
    return [
        [m.to_dict() for m in call] + [{"role": "assistant", "content": reply}]
        for call, reply in zip(lm.calls, replies, strict=True)
    ]


def test_each_root_turn_is_one_example_with_the_exact_messages(tmp_path):
    path = tmp_path / "t.jsonl"
    sub = ScriptedLM(lambda m: "a summary", name="sub")
    rlm = make_rlm(list(ROOT), sub)
    assert rlm.run("What is it?", "some context text", trace=path).answer == "the answer"
    examples = examples_from_spans(read_trace(path).spans)
    assert [e.turn for e in examples] == [1, 2, 3]
    assert [list(e.messages) for e in examples] == expected(rlm.root_lm, ROOT)
    first = examples[0].messages
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert "What is it?" in first[1]["content"]
    assert all(e.depth == 0 and e.run_id for e in examples)
    # Sub-calls are not root turns.
    assert not any("summarise" in e.messages[-2]["content"] for e in examples[:2])


def test_stop_reason_filter_and_the_last_answer_now_turn(tmp_path):
    path = tmp_path / "t.jsonl"
    replies = [repl("print(1)"), repl("print(2)"), "FINAL(best guess)"]
    rlm = make_rlm(list(replies), limits=Limits(max_iterations=2))
    assert rlm.run("q", "ctx", trace=path).stop_reason.value == "max_iterations"
    spans = read_trace(path).spans
    skipped: Counter[str] = Counter()
    assert examples_from_spans(spans, skipped=skipped) == []
    assert skipped == {"stop reason max_iterations": 1}
    got = examples_from_spans(spans, SFTFilter(stop_reasons=frozenset({"max_iterations"})))
    assert [list(e.messages) for e in got] == expected(rlm.root_lm, replies)
    assert [m["role"] for m in got[-1].messages[-3:]] == ["user", "user", "assistant"]


def test_child_runs_are_exported_when_asked(tmp_path):
    path = tmp_path / "t.jsonl"
    child_replies = [repl("print(context)"), repl("FINAL('from child')")]
    sub = ScriptedLM(list(child_replies), name="sub")
    root = [repl("print(rlm_query('child q', 'child ctx'))"), repl("FINAL('ok')")]
    rlm = make_rlm(list(root), sub)
    rlm.run("q", "ctx", trace=path)
    spans = read_trace(path).spans
    assert len(examples_from_spans(spans)) == 2
    both = examples_from_spans(spans, SFTFilter(children=True))
    children = [list(e.messages) for e in both if e.depth == 1]
    assert children == expected(sub, child_replies)


def test_min_score(tmp_path):
    for name, score in (("low", 0.2), ("high", 0.9)):
        rlm = make_rlm([repl("print(1)"), repl("FINAL('x')")], processors=[Score(score)])
        rlm.run("q", "ctx", trace=tmp_path / f"{name}.jsonl")
    rlm = make_rlm([repl("print(1)"), repl("FINAL('x')")])
    rlm.run("q", "ctx", trace=tmp_path / "unscored.jsonl")
    out = tmp_path / "sft.jsonl"
    report = export_sft([tmp_path], out, SFTFilter(min_score=0.5), meta=True)
    assert (report.traces, report.traces_used, report.examples) == (3, 1, 2)
    assert report.skipped == {"score below 0.5": 1, "no score": 1}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["metadata"]["score"] for line in lines} == {0.9}
    assert export_sft([tmp_path], out).examples == 6  # no score filter: every final run


def test_traces_without_whole_messages_are_skipped_not_guessed(tmp_path):
    path = tmp_path / "old.jsonl"
    make_rlm([repl("print(1)"), repl("FINAL('x')")]).run("q", "ctx", trace=path)
    spans = read_trace(path).spans
    for s in spans:  # as an older recursa wrote them
        s.attrs.pop("new_messages", None)
    skipped: Counter[str] = Counter()
    assert examples_from_spans(spans, skipped=skipped) == []
    assert list(skipped) == ["no full root messages in the trace (written by an older recursa)"]


def _one_turn(**lm_attrs):
    tracer = Tracer()
    run = tracer.start("run", "rlm", None, depth=0)
    it = tracer.start("iteration", "iteration 1", run, index=1, depth=0)
    call = tracer.start("lm_call", "m", it, role="root", depth=0, **lm_attrs)
    tracer.end(call, response="FINAL(1)")
    tracer.end(it)
    tracer.end(run, stop_reason="final")
    return tracer.finished


def test_incomplete_records_are_detected():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    ok = examples_from_spans(_one_turn(new_messages=msgs, n_messages=2))
    assert [m["role"] for m in ok[0].messages] == ["system", "user", "assistant"]
    for attrs, reason in (
        ({"new_messages": msgs, "n_messages": 3}, "root messages are missing from the trace"),
        ({"new_messages": msgs, "response_chars": 99}, "a root response was clipped in the trace"),
        ({"new_messages": [{"role": "tool", "content": "x"}]}, "malformed root messages"),
    ):
        skipped: Counter[str] = Counter()
        assert examples_from_spans(_one_turn(**attrs), skipped=skipped) == []
        assert list(skipped) == [reason]


def test_export_command(tmp_path, capsys):
    runs = tmp_path / "runs"
    for i in range(2):
        rlm = make_rlm(list(ROOT), ScriptedLM(lambda m: "s", name="sub"))
        rlm.run("q", "ctx", trace=runs / f"r{i}.jsonl")
    (runs / "junk.jsonl").write_text("not a trace\n")
    out = tmp_path / "out" / "sft.jsonl"
    assert main(["trace", "export", str(runs), "--sft", str(out)]) == 0
    err = capsys.readouterr().err
    assert "6 example(s) from 2 of 3 trace(s)" in err
    assert "skipped 1: not a readable recursa trace" in err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6
    assert all(set(line) == {"messages"} for line in lines)  # plain chat format by default
    assert all(line["messages"][-1]["role"] == "assistant" for line in lines)


def test_export_command_errors(tmp_path, capsys):
    assert main(["trace", "export", str(tmp_path)]) == 2
    assert "--sft FILE" in capsys.readouterr().err
    missing = Path(tmp_path / "nope.jsonl")
    assert main(["trace", "export", str(missing), "--sft", str(tmp_path / "o.jsonl")]) == 2
    assert "no such trace file or folder" in capsys.readouterr().err
