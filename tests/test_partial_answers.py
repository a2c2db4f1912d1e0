"""After a limit stops a run, the partial answer is the best evidence the run has: the REPL's
``answer`` dict, else one "answer now" turn that runs no code, else plainly none."""

from __future__ import annotations

from recursa import Limits, ScriptedLM, StopReason

from .conftest import make_rlm, repl

NARRATION = "I will now count the items in the next chunk."
LOOP = f"{NARRATION}\n" + repl("print(len(context))")


def test_partial_answer_is_the_repl_answer_dict_not_narration():
    set_answer = repl('answer = {"content": "42 items so far", "ready": False}')
    rlm = make_rlm([set_answer] + [LOOP] * 5, limits=Limits(max_iterations=3))
    r = rlm.run("how many items?", "a b c")
    assert r.stop_reason is StopReason.MAX_ITERATIONS
    assert r.answer == "42 items so far"
    assert "answer dict" in r.detail
    assert len(rlm.root_lm.calls) == 3  # the REPL held an answer: no extra turn was needed


def test_no_partial_answer_is_said_plainly_not_narrated():
    rlm = make_rlm([LOOP] * 5, limits=Limits(max_iterations=2, final_answer_turn=False))
    r = rlm.run("how many items?", "a b c")
    assert r.stop_reason is StopReason.MAX_ITERATIONS
    assert r.answer == ""
    assert "no partial answer" in r.detail


def test_budget_stop_reads_the_repl_answer_dict():
    sub = ScriptedLM(lambda m: "ok", name="sub")
    code = repl('answer = {"content": "partial count " + llm_query("count")}')
    rlm = make_rlm([code] + [LOOP] * 5, sub, limits=Limits(max_llm_calls=4))
    r = rlm.run("q", "ctx")
    assert r.stop_reason is StopReason.MAX_LLM_CALLS
    assert r.answer == "partial count ok"


def test_answer_now_turn_runs_no_code_and_is_counted_and_traced_as_such():
    sub = ScriptedLM(lambda m: "ok", name="sub")
    last = 'FINAL(3)\n```repl\nllm_query("x")\nprint("RAN")\n```'
    rlm = make_rlm([LOOP] * 3 + [last], sub, limits=Limits(max_iterations=3))
    r = rlm.run("q", "ctx")
    assert r.stop_reason is StopReason.MAX_ITERATIONS
    assert r.answer == "3"
    assert r.iterations == 3
    assert len(rlm.root_lm.calls) == 4
    assert sub.calls == []  # the answer-now turn's code never ran
    its = [s for s in r.spans if s.kind == "iteration"]
    names = [s.name for s in its]
    assert names == ["iteration 1", "iteration 2", "iteration 3", "answer now (no code)"]
    assert not any(s.kind == "cell" and "RAN" in str(s.attrs.get("stdout")) for s in r.spans)


def test_answer_now_turn_without_final_gives_no_narrated_answer():
    rlm = make_rlm([LOOP] * 3 + [NARRATION], limits=Limits(max_iterations=2))
    r = rlm.run("q", "ctx")
    assert r.answer == ""
    assert "no partial answer" in r.detail


def test_cli_prints_the_repl_answer_dict_and_exits_3(tmp_path, doc, capsys):
    import json

    from recursa.cli import main

    f = tmp_path / "script.json"
    replies = [repl('answer = {"content": "partial: 2031", "ready": False}'), LOOP, LOOP]
    f.write_text(json.dumps({"replies": replies}))
    code = main(["ask", "-c", str(doc), "-m", f"scripted:{f}", "--max-iterations", "2", "q"])
    out, err = capsys.readouterr()
    assert code == 3
    assert out == "partial: 2031\n"
    assert "answer dict" in err
    assert NARRATION not in out
