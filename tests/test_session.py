"""Sessions: several questions in one REPL, more contexts, the trace, and resuming."""

from __future__ import annotations

import asyncio
import json

import pytest

from recursa import RLM, ConfigError, Limits, ScriptedLM
from recursa.session import resume_session

from .conftest import repl

CTX = "alpha beta gamma\n" * 50


def scripted(*replies: str) -> ScriptedLM:
    return ScriptedLM(list(replies), name="root")


def test_variables_and_history_stay_across_questions(tmp_path):
    lm = scripted(
        repl("n = context.count('beta')\nFINAL(n)"),
        repl("print(n * 2, len(history), history[0]['answer'])"),
        repl("FINAL(str(n * 2) + ' ' + history[0]['question'])"),
    )
    rlm = RLM(lm, limits=Limits(max_iterations=4), runs_root=tmp_path)
    with rlm.session(CTX) as s:
        first = s.ask("How many beta?")
        second = s.ask("Twice that?")
        assert first.answer == "50"
        assert second.answer == "100 How many beta?"
        assert lm.calls[1][-1].content.count("question 2 of a session") == 1
        assert "100 1 50" in lm.calls[2][-1].content  # the cell saw n and history
        assert s.history == [
            {"question": "How many beta?", "answer": "50"},
            {"question": "Twice that?", "answer": "100 How many beta?"},
        ]
        assert first.run_id == second.run_id == s.session_id


def test_add_context_is_named_and_described(tmp_path):
    lm = scripted(
        repl("FINAL(context_1.upper())"),
        repl("FINAL(str('context_0' in globals()) + ' ' + context_2['k'])"),
    )
    rlm = RLM(lm, limits=Limits(max_iterations=3), runs_root=tmp_path)
    with rlm.session(CTX, "second text") as s:
        assert s.ask("Shout the second").answer == "SECOND TEXT"
        assert s.add_context({"k": "dict value"}) == "context_2"
        assert s.ask("And?").answer == "False dict value"
    prompt = lm.calls[1][1].content
    assert "`context_1` is another context: a str of 11 characters" in prompt
    assert "`context_2` is another context: a dict" in prompt


def test_one_trace_with_a_session_span_over_each_question(tmp_path):
    lm = scripted(repl("FINAL('a')"), repl("FINAL('b')"))
    rlm = RLM(lm, runs_root=tmp_path)
    trace = tmp_path / "s.jsonl"
    with rlm.session(CTX, trace=trace) as s:
        s.ask("one?")
        s.ask("two?")
    spans = [json.loads(line) for line in trace.read_text().splitlines()[1:]]
    session = [x for x in spans if x.get("kind") == "session"]
    runs = [x for x in spans if x.get("kind") == "run"]
    assert len(session) == 1 and len(runs) == 2
    assert all(r["parent_id"] == session[0]["id"] for r in runs)
    assert [r["attrs"]["question"] for r in runs] == ["one?", "two?"]


def test_resume_rebuilds_the_repl_without_asking_again(tmp_path):
    lm = scripted(
        repl("secret = sum(range(10))\nFINAL(secret)"),
        repl("more = llm_query('double ' + str(secret))\nFINAL(more)"),
    )
    sub = ScriptedLM(["90"], name="sub")
    rlm = RLM(lm, sub, runs_root=tmp_path)
    with rlm.session(CTX) as s:
        assert s.ask("first?").answer == "45"
        assert s.ask("second?").answer == "90"
        sid = s.session_id
    # A new process would build the RLM from the journal; here the models are scripted, and
    # given nothing: every call of the two questions must come from the journal.
    lm2, sub2 = scripted(repl("FINAL(str(secret) + more)")), ScriptedLM([], name="sub")
    again = RLM(lm2, sub2, runs_root=tmp_path)
    with again.resume_session(sid) as s2:
        assert [t.answer for t in s2.turns] == ["45", "90"]
        assert s2.ask("third?").answer == "4590"
    assert len(lm2.calls) == 1 and not sub2.calls


def test_resume_refuses_a_plain_run_and_ask_resume_refuses_a_session(tmp_path):
    rlm = RLM(scripted(repl("FINAL('x')")), runs_root=tmp_path)
    result = rlm.run("q?", CTX)
    with pytest.raises(ConfigError, match="not a session"):
        resume_session(result.run_id, rlm=rlm)
    rlm2 = RLM(scripted(repl("FINAL('y')")), runs_root=tmp_path)
    with rlm2.session(CTX) as s:
        s.ask("q?")
        sid = s.session_id
    with pytest.raises(ConfigError, match="is a session"):
        RLM(scripted(), runs_root=tmp_path).resume(sid)


def test_a_cancelled_question_leaves_the_session_usable(tmp_path):
    async def main() -> None:
        lm = scripted(
            repl("kept = 1\nFINAL('ok')"),
            repl("import time\ntime.sleep(30)"),
            repl("print(globals().get('kept'))\nFINAL('fresh')"),
        )
        rlm = RLM(lm, runs_root=tmp_path)
        async with rlm.asession(CTX) as s:
            assert (await s.ask("one?")).answer == "ok"
            task = asyncio.create_task(s.ask("slow?"))
            while len(lm.calls) < 2:  # its root turn was answered: its cell runs next
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await s.ask("three?")).answer == "fresh"
            assert [t.stop_reason for t in s.turns] == ["final", "cancelled", "final"]
            assert "REPL was restarted" in lm.calls[2][1].content
            assert s.history[-1]["answer"] == "fresh" and len(s.history) == 2

    asyncio.run(main())


def test_empty_question_and_closed_session_are_config_errors(tmp_path):
    rlm = RLM(scripted(), runs_root=tmp_path)
    s = rlm.session(CTX)
    with pytest.raises(ConfigError, match="empty"):
        s.ask("  ")
    s.close()
    with pytest.raises(ConfigError, match="closed"):
        s.ask("q?")
