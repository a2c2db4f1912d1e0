"""The RLM loop with scripted models: endings, feedback, sub-calls, children, failures."""

from __future__ import annotations

import pytest

from recursa import RLM, Limits, LMError, ScriptedLM, StopReason
from recursa.errors import LMServerError
from recursa.prompts import STANDARD, STRICT

from .conftest import make_rlm, repl

HAY = "filler line about nothing.\n" * 4000
NEEDLE_CTX = HAY[:50_000] + "The access code is 7315.\n" + HAY


def last_user(lm: ScriptedLM, call: int) -> str:
    return lm.prompts[call]


def test_final_called_in_code_ends_the_run():
    rlm = make_rlm(
        [repl("i = context.find('access code')\nprint(context[i:i+30])"), repl("FINAL('7315')")]
    )
    r = rlm.run("What is the access code?", NEEDLE_CTX)
    assert r.answer == "7315"
    assert r.stop_reason is StopReason.FINAL
    assert not r.partial
    assert r.iterations == 2
    # The model saw its output, and never the context itself.
    second = rlm.root_lm.calls[1]
    assert "access code is 7315" in second[-1].content
    assert all(len(m.content) < 20_000 for m in second)


def test_final_var_and_answer_dict():
    r = make_rlm([repl("code = context[context.find('is 73') + 3:][:4]\nFINAL_VAR('code')")]).run(
        "q", NEEDLE_CTX
    )
    assert r.answer == "7315"
    r = make_rlm([repl("answer = {'content': 'via dict', 'ready': True}")]).run("q", NEEDLE_CTX)
    assert r.answer == "via dict"


def test_first_prompt_carries_metadata_not_the_context():
    rlm = make_rlm([repl("FINAL('x')")])
    rlm.run("Where is it?", NEEDLE_CTX)
    first = rlm.root_lm.calls[0]
    assert first[0].role == "system"
    assert "Question: Where is it?" in first[1].content
    assert f"{len(NEEDLE_CTX):,} characters" in first[1].content
    assert "The access code is 7315" not in first[1].content


def test_bare_final_after_code_is_accepted_and_resolves_variables():
    rlm = make_rlm([repl("found = 'seven three one five'"), "Done.\nFINAL(found)"])
    assert rlm.run("q", NEEDLE_CTX).answer == "seven three one five"
    rlm = make_rlm([repl("print(1)"), 'FINAL("literal text")'])
    assert rlm.run("q", NEEDLE_CTX).answer == "literal text"


def test_strict_profile_refuses_an_answer_before_any_code_ran():
    rlm = make_rlm(
        ["FINAL(99)", repl("n = context.count('filler')\nprint(n)"), "FINAL(n)"],
        prompt_profile="strict",
    )
    r = rlm.run("How many filler lines?", NEEDLE_CTX)
    assert r.answer == str(NEEDLE_CTX.count("filler"))
    assert r.iterations == 3
    assert STRICT.final_before_code in last_user(rlm.root_lm, 1)


def test_strict_profile_defers_a_literal_final_written_beside_code():
    rlm = make_rlm([repl("print(2 + 2)") + "\nFINAL(5)", "FINAL(4)"], prompt_profile="strict")
    r = rlm.run("q", NEEDLE_CTX)
    assert r.answer == "4"
    assert STRICT.final_unverified in last_user(rlm.root_lm, 1)


def test_standard_profile_accepts_a_final_beside_code():
    r = make_rlm([repl("x = 1") + "\nFINAL(yes)"], prompt_profile="standard").run("q", "ctx")
    assert r.answer == "yes"


def test_reply_without_code_gets_told_to_write_some():
    rlm = make_rlm(["I think the answer is in there.", repl("FINAL('ok')")])
    assert rlm.run("q", NEEDLE_CTX).answer == "ok"
    assert STANDARD.no_code in last_user(rlm.root_lm, 1)


def test_repeating_code_with_the_same_output_gets_pushed_forward():
    code = repl("print(context[:20])")
    rlm = make_rlm([code, code, repl("FINAL('moved on')")])
    rlm.run("q", NEEDLE_CTX)
    assert STANDARD.repeated_code not in last_user(rlm.root_lm, 1)
    assert STANDARD.repeated_code in last_user(rlm.root_lm, 2)


def test_repeated_code_whose_output_changed_is_not_nagged():
    code = repl("n = globals().get('n', 0) + 1\nprint(n)")
    rlm = make_rlm([code, code, repl("FINAL('x')")])
    rlm.run("q", "ctx")
    assert STANDARD.repeated_code not in last_user(rlm.root_lm, 2)


def test_long_output_is_cut_with_a_marker_saying_how_much():
    rlm = make_rlm(
        [repl("print('y' * 50_000)"), repl("FINAL('x')")], limits=Limits(max_output_chars=1000)
    )
    rlm.run("q", "ctx")
    shown = last_user(rlm.root_lm, 1)
    assert "characters of output cut" in shown
    assert "49,000 characters of output cut" in shown
    assert len(shown) < 2000


def test_batched_sub_calls_keep_order_and_a_failed_item_does_not_fail_the_batch():
    def sub(messages):
        prompt = messages[-1].content
        if "boom" in prompt:
            raise LMServerError("upstream down")
        return prompt.upper()

    rlm = make_rlm(
        [repl("r = llm_query_batched(['a', 'boom', 'c'])\nprint(r)"), repl("FINAL(repr(r))")],
        ScriptedLM(sub, name="sub"),
    )
    r = rlm.run("q", "ctx")
    items = eval(r.answer)
    assert items[0] == "A" and items[2] == "C"
    assert items[1].startswith("[llm_query error: LMServerError: upstream down")
    assert r.usage_by_depth[1].calls == 2  # the failed call is not charged


def test_a_failed_single_llm_query_raises_in_the_code():
    def sub(messages):
        raise LMServerError("upstream down")

    rlm = make_rlm([repl("llm_query('x')"), repl("FINAL('handled')")], ScriptedLM(sub))
    rlm.run("q", "ctx")
    assert "LLMQueryError" in last_user(rlm.root_lm, 1)


def test_rlm_query_starts_a_child_with_its_own_repl_and_depth():
    child = ScriptedLM(
        rules=[(r"Question: count the x", repl("FINAL(str(context.count('x')))"))], name="child"
    )
    rlm = make_rlm(
        [repl("n = rlm_query('count the x', context='x x x y')\nprint(n)"), repl("FINAL(n)")],
        child,
        limits=Limits(max_depth=1),
    )
    r = rlm.run("q", NEEDLE_CTX)
    assert r.answer == "3"
    assert r.usage_by_depth[0].calls == 2
    assert r.usage_by_depth[1].calls == 1
    runs = [s for s in r.spans if s.kind == "run"]
    assert sorted(s.attrs["depth"] for s in runs) == [0, 1]
    child_run = next(s for s in runs if s.attrs["depth"] == 1)
    assert child_run.parent_id is not None


def test_rlm_query_past_max_depth_is_a_plain_call_with_the_context():
    sub = ScriptedLM(lambda m: "plain:" + m[-1].content)
    rlm = make_rlm(
        [repl("print(rlm_query('summarise', context='abc'))"), repl("FINAL('x')")],
        sub,
        limits=Limits(max_depth=0),
    )
    rlm.run("q", "ctx")
    assert sub.prompts == ["summarise\n\nabc"]
    assert "plain:summarise" in last_user(rlm.root_lm, 1)


def test_children_in_a_batch_run_concurrently_in_their_own_sandboxes():
    child = ScriptedLM(
        rules=[(r"Question: job", repl("import os\nFINAL(str(os.getpid()))"))],
        name="child",
        latency_s=0.2,
    )
    rlm = make_rlm(
        [
            repl("pids = rlm_query_batched(['job 1', 'job 2', 'job 3'])\nprint(pids)"),
            repl("FINAL(','.join(pids))"),
        ],
        child,
    )
    r = rlm.run("q", "ctx")
    pids = r.answer.split(",")
    assert len(set(pids)) == 3 and all(p.isdigit() for p in pids)


def test_sub_calls_can_be_turned_off():
    rlm = make_rlm([repl("llm_query('x')"), repl("FINAL('done')")], sub_calls=False)
    r = rlm.run("q", "ctx")
    assert r.answer == "done"
    assert "turned off" in last_user(rlm.root_lm, 1)
    assert "llm_query(prompt)" not in rlm.root_lm.calls[0][0].content


def test_llm_query_may_pick_a_configured_model_only():
    other = ScriptedLM(lambda m: "from other", name="other")
    rlm = make_rlm(
        [
            repl("print(llm_query('x', model='scripted:other'))\nllm_query('y', model='gpt-9')"),
            repl("FINAL('ok')"),
        ],
        models=[other],
    )
    rlm.run("q", "ctx")
    shown = last_user(rlm.root_lm, 1)
    assert "from other" in shown
    assert "'gpt-9' is not available" in shown


def test_a_crashed_worker_is_replaced_and_the_model_is_told():
    rlm = make_rlm(
        [
            repl("mine = 5\nimport os; os._exit(1)"),
            repl("print(len(context), 'mine' in globals())"),
            repl("FINAL('x')"),
        ]
    )
    rlm.run("q", "abc")
    told = last_user(rlm.root_lm, 1)
    assert "REPL process died" in told and "every variable you made is lost" in told
    assert "3 False" in last_user(rlm.root_lm, 2)


def test_a_runaway_cell_is_stopped_and_the_run_goes_on():
    rlm = make_rlm(
        [repl("while True: pass"), repl("FINAL('after')")], limits=Limits(cell_timeout_s=0.5)
    )
    r = rlm.run("q", "ctx")
    assert r.answer == "after"
    assert "longer than 0.5s" in last_user(rlm.root_lm, 1)


def test_several_contexts_are_a_list_with_named_parts():
    r = make_rlm([repl("FINAL(context_1 + str(len(context)))")]).run("q", "first", "second")
    assert r.answer == "second2"


def test_root_model_failure_raises_with_the_partial_result_attached(tmp_path):
    def broken(messages):
        raise LMServerError("server down")

    trace = tmp_path / "t.jsonl"
    with pytest.raises(LMError) as e:
        RLM(ScriptedLM(broken)).run("q", "ctx", trace=trace)
    result = e.value.result
    assert result.stop_reason is StopReason.ERROR
    assert "server down" in result.detail
    assert trace.read_text().count('"kind": "run"') == 1


def test_script_mismatch_is_loud():
    from recursa import ScriptMismatch

    with pytest.raises(ScriptMismatch, match="2 replies"):
        make_rlm([repl("x = 1"), repl("y = 2")]).run("q", "ctx")


def test_async_run_and_empty_question():
    import asyncio

    from recursa import ConfigError

    rlm = make_rlm([repl("FINAL('async')")])
    assert asyncio.run(rlm.arun("q", "ctx")).answer == "async"
    with pytest.raises(ConfigError, match="question is empty"):
        rlm.run("  ", "ctx")
    with pytest.raises(ConfigError, match="no context"):
        rlm.run("q")


def test_trusted_in_process_sandbox_is_explicit():
    from recursa import ConfigError

    with pytest.raises(ConfigError, match="trusted=True"):
        make_rlm([repl("FINAL(1)")], sandbox="inprocess")
    rlm = make_rlm([repl("import os\nFINAL(str(os.getpid()))")], trusted=True)
    import os

    assert rlm.run("q", "ctx").answer == str(os.getpid())


def test_strict_profile_checks_a_final_given_in_the_first_code_block_once():
    guess = repl("FINAL('WORD')")  # a small model's guess before it has seen anything
    rlm = make_rlm([guess, guess], prompt_profile="strict")
    r = rlm.run("What is the code?", NEEDLE_CTX)
    assert STRICT.final_unverified in last_user(rlm.root_lm, 1)
    assert r.answer == "WORD"  # asked again, the model insists: accepted the second time
    assert r.iterations == 2


def test_strict_profile_sends_back_an_answer_no_output_showed():
    rlm = make_rlm(
        [
            repl("print(context.count('vault'))"),
            "FINAL(1970)",
            repl("print('1970?')"),
            "FINAL(1970)",
        ],
        prompt_profile="strict",
    )
    r = rlm.run("What year?", NEEDLE_CTX)
    assert 'Your answer "1970" does not appear in any output' in last_user(rlm.root_lm, 2)
    assert r.answer == "1970"
    assert r.iterations == 4


def test_strict_profile_accepts_an_answer_the_output_showed():
    rlm = make_rlm(
        [repl("i = context.find('access code')\nprint(context[i:i+30])"), "FINAL(7315)"],
        prompt_profile="strict",
    )
    r = rlm.run("What is the access code?", NEEDLE_CTX)
    assert r.answer == "7315"
    assert r.iterations == 2


def test_standard_profile_never_sends_an_answer_back():
    r = make_rlm([repl("FINAL('WORD')")], prompt_profile="standard").run("q", NEEDLE_CTX)
    assert r.answer == "WORD"
    assert r.iterations == 1
