"""Run journals and resuming: nothing answered is asked again, and damage stays contained."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from recursa import RLM, JournalError, Limits, ScriptedLM, StopReason
from recursa.journal import Journal, list_runs, remove_run

from .conftest import repl

BATCH = repl("r = llm_query_batched([f'item {i}' for i in range(10)])\nprint(len(r))")
DONE = repl("FINAL(';'.join(r))")


def sub_model(log: list[str], gate: asyncio.Event | None = None, stop_after: int = 10**9):
    """A sub model that answers 'ans N', logs prompts, and signals after ``stop_after`` calls."""

    def reply(messages):
        prompt = messages[-1].content
        log.append(prompt)
        if len(log) >= stop_after and gate is not None:
            gate.set()
        return "ans " + prompt.split()[-1]

    return ScriptedLM(reply, name="sub", latency_s=0.01)


def rlm_for(tmp_path, root_replies, sub, **kw):
    return RLM(
        ScriptedLM(root_replies, name="root"),
        sub,
        runs_root=tmp_path,
        limits=Limits(max_concurrency=1, max_iterations=5),
        **kw,
    )


def test_a_run_is_journaled_and_listed(tmp_path):
    log: list[str] = []
    r = rlm_for(tmp_path, [BATCH, DONE], sub_model(log)).run("q", "the context")
    assert r.stop_reason is StopReason.FINAL
    j = Journal.open(r.run_id, root=tmp_path)
    try:
        assert j.meta("status") == "final"
        assert j.meta("question") == "q"
        assert j.context().value == "the context"
        assert j.counts() == (12, 2)  # 2 root turns + 10 sub-calls; 2 cells
        assert j.meta("config")["limits"]["max_concurrency"] == 1
    finally:
        j.close()
    assert r.trace_path == tmp_path / "runs" / r.run_id / "trace.jsonl"
    [summary] = list_runs(tmp_path)
    assert summary.run_id == r.run_id and summary.calls == 12 and summary.status == "final"


async def test_an_interrupted_run_resumes_without_asking_anything_twice(tmp_path):
    first_log: list[str] = []
    reached = asyncio.Event()
    rlm = rlm_for(tmp_path, [BATCH, DONE], sub_model(first_log, reached, stop_after=6))
    task = asyncio.create_task(rlm.arun("q", "ctx", run_id="run-1"))
    await reached.wait()
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    j = Journal.open("run-1", root=tmp_path)
    answered = j.counts()[0] - 1  # minus the root turn
    assert j.meta("status") == "interrupted"
    j.close()
    assert 5 <= answered < 10

    second_log: list[str] = []
    root2 = ScriptedLM([DONE], name="root")  # the first root turn comes from the journal
    resumed = RLM(
        root2, sub_model(second_log), runs_root=tmp_path, limits=Limits(max_concurrency=1)
    )
    r = await resumed.aresume("run-1")
    assert r.answer == ";".join(f"ans {i}" for i in range(10))
    assert r.replayed_calls == 1 + answered
    # Only the items never answered went to the model the second time.
    assert second_log == [f"item {i}" for i in range(answered, 10)]
    # The root's first turn came from the journal; only the final turn was asked again.
    assert len(root2.calls) == 1
    j = Journal.open("run-1", root=tmp_path)
    assert j.meta("status") == "final"
    j.close()


def test_resuming_a_finished_run_replays_it_without_any_model_call(tmp_path):
    log: list[str] = []
    r = rlm_for(tmp_path, [BATCH, DONE], sub_model(log)).run("q", "ctx")
    root2, log2 = ScriptedLM([], name="root"), []
    again = RLM(root2, sub_model(log2), runs_root=tmp_path).resume(r.run_id)
    assert again.answer == r.answer
    assert root2.calls == [] and log2 == []
    assert again.replayed_calls == 12


def test_a_cell_that_prints_something_else_on_replay_is_reported(tmp_path):
    code = repl("import time\nprint(time.time_ns())")
    r = RLM(ScriptedLM([code, repl("FINAL('x')")]), runs_root=tmp_path).run("q", "ctx")
    again = RLM(ScriptedLM([repl("FINAL('y')")]), runs_root=tmp_path).resume(r.run_id)
    assert again.answer == "y"
    assert any("replay diverged at cell 1 of root" in w for w in again.warnings)
    # The next root request includes the new output, so it is not in the journal: asked again.
    assert again.replayed_calls == 1


def test_from_journal_rebuilds_the_configuration(tmp_path):
    script = tmp_path / "s.json"
    script.write_text('{"replies": ["```repl\\nFINAL(1)\\n```"]}')
    r = RLM(f"scripted:{script}", runs_root=tmp_path, limits=Limits(max_iterations=7)).run("q", "c")
    rebuilt = RLM.from_journal(r.run_id, runs_root=tmp_path)
    assert rebuilt.limits.max_iterations == 7
    assert rebuilt.root_lm.name == f"scripted:{script.stem}"


def test_a_corrupted_journal_is_a_clear_error_and_other_runs_are_fine(tmp_path):
    ok = RLM(ScriptedLM([repl("FINAL(1)")]), runs_root=tmp_path).run("q", "c", run_id="good")
    bad = RLM(ScriptedLM([repl("FINAL(2)")]), runs_root=tmp_path).run("q", "c", run_id="bad")
    path = tmp_path / "runs" / "bad" / "journal.sqlite"
    for extra in path.parent.glob("journal.sqlite-*"):
        extra.unlink()
    data = bytearray(path.read_bytes())
    data[100:4000] = b"\xde\xad" * 1950
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=r"cannot be used.*recursa runs rm bad"):
        RLM.from_journal("bad", runs_root=tmp_path)
    statuses = {s.run_id: s.status for s in list_runs(tmp_path)}
    assert statuses == {"good": "final", "bad": "broken"}
    assert ok.answer == "1" and bad.answer == "2"
    again = RLM(ScriptedLM([]), runs_root=tmp_path).resume("good")
    assert again.answer == "1"


def test_a_truncated_journal_is_a_clear_error(tmp_path):
    RLM(ScriptedLM([repl("FINAL(1)")]), runs_root=tmp_path).run("q", "c" * 50_000, run_id="t")
    path = tmp_path / "runs" / "t" / "journal.sqlite"
    for extra in path.parent.glob("journal.sqlite-*"):
        extra.unlink()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])

    def read_everything():
        j = Journal.open("t", root=tmp_path)
        j.replay()
        j.context()

    with pytest.raises(JournalError):
        read_everything()


def test_missing_run_and_removal(tmp_path):
    with pytest.raises(JournalError, match="no run 'nope'"):
        Journal.open("nope", root=tmp_path)
    RLM(ScriptedLM([repl("FINAL(1)")]), runs_root=tmp_path).run("q", "c", run_id="x")
    remove_run("x", root=tmp_path)
    assert list_runs(tmp_path) == []
    for bad in ("x", "..", "a/b"):
        with pytest.raises(JournalError):
            remove_run(bad, root=tmp_path)


def test_journal_can_be_turned_off(tmp_path):
    r = RLM(ScriptedLM([repl("FINAL(1)")]), runs_root=tmp_path, journal=False).run("q", "c")
    assert r.trace_path is None
    assert list_runs(tmp_path) == []


def test_journal_writes_are_committed_as_they_happen(tmp_path):
    """Another connection sees each response while the run is still going."""
    seen: list[int] = []

    def root(messages):
        conn = sqlite3.connect(tmp_path / "runs" / "live" / "journal.sqlite")
        seen.append(conn.execute("SELECT COUNT(*) FROM lm_calls").fetchone()[0])
        conn.close()
        return repl("print(1)") if len(seen) < 3 else repl("FINAL('x')")

    RLM(ScriptedLM(root), runs_root=tmp_path).run("q", "c", run_id="live")
    assert seen == [0, 1, 2]
