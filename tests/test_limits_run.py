"""Each limit actually stops a run, with its typed stop reason and the best partial answer."""

from __future__ import annotations

import time

import pytest

from recursa import LimitExceeded, Limits, PriceTable, ScriptedLM, StopReason
from recursa.pricing import ModelPrice
from recursa.prompts import STANDARD

from .conftest import make_rlm, repl

LOOP = repl("print(len(context))")


def test_max_iterations_then_one_answer_now_turn():
    rlm = make_rlm([LOOP] * 3 + ["FINAL(best guess)"], limits=Limits(max_iterations=3))
    r = rlm.run("q", "ctx")
    assert r.stop_reason is StopReason.MAX_ITERATIONS
    assert r.partial
    assert r.answer == "best guess"
    assert r.iterations == 3
    assert len(rlm.root_lm.calls) == 4
    assert STANDARD.final_turn in rlm.root_lm.prompts[3]


def test_max_iterations_without_the_extra_turn():
    rlm = make_rlm([LOOP] * 2, limits=Limits(max_iterations=2, final_answer_turn=False))
    r = rlm.run("q", "ctx")
    assert r.stop_reason is StopReason.MAX_ITERATIONS
    assert len(rlm.root_lm.calls) == 2


def test_max_llm_calls_counts_root_and_sub_calls_and_none_pass_it():
    sub = ScriptedLM(lambda m: "ok", name="sub")
    rlm = make_rlm(
        [repl("for i in range(100):\n    llm_query(str(i))")] + [LOOP] * 5,
        sub,
        limits=Limits(max_llm_calls=10),
    )
    r = rlm.run("q", "ctx")
    assert r.stop_reason is StopReason.MAX_LLM_CALLS
    assert len(rlm.root_lm.calls) + len(sub.calls) == 10
    assert r.usage.calls == 10


def test_budget_exhaustion_inside_a_batch_turns_the_rest_into_error_strings():
    sub = ScriptedLM(lambda m: "ok", name="sub")
    rlm = make_rlm(
        [repl("r = llm_query_batched([str(i) for i in range(20)])\nprint(r.count('ok'))"), LOOP],
        sub,
        limits=Limits(max_llm_calls=6, max_concurrency=1),
    )
    r = rlm.run("q", "ctx")
    assert r.stop_reason is StopReason.MAX_LLM_CALLS
    assert len(sub.calls) == 5


def test_max_tokens():
    rlm = make_rlm([repl("print('z' * 9000)")] * 5, limits=Limits(max_tokens=3000))
    r = rlm.run("q", "ctx")
    assert r.stop_reason is StopReason.MAX_TOKENS
    assert r.usage.total_tokens <= 3000 + 3000  # at most one call in flight past the check


class PricedLM(ScriptedLM):
    """A scripted model with a name the price table knows."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.name = "test:priced"


def test_max_cost_with_a_user_price_table():
    prices = PriceTable().with_overrides({"test:priced": ModelPrice(input=1000.0, output=1000.0)})
    root = PricedLM([LOOP] * 10)
    rlm = make_rlm(root, prices=prices, limits=Limits(max_cost_usd=1.5, max_iterations=10))
    r = rlm.run("q", "ctx")
    assert r.stop_reason is StopReason.MAX_COST
    # Calls are reserved at their worst case: the run stops before a call that could pass the
    # cap, never after it (this used to be `>= 1.5`: the overshoot the budget now prevents).
    assert 0 < r.cost_usd <= 1.5
    assert "could pass it" in r.detail
    assert r.cost_complete


def test_timeout_while_a_cell_runs():
    rlm = make_rlm([repl("import time\ntime.sleep(30)")], limits=Limits(timeout_s=1.0))
    started = time.monotonic()
    r = rlm.run("q", "ctx")
    assert r.stop_reason is StopReason.TIMEOUT
    assert time.monotonic() - started < 25  # stopped long before the cell would have ended


def test_timeout_while_an_lm_call_is_in_flight():
    slow = ScriptedLM([LOOP], latency_s=30)
    r = make_rlm(slow, limits=Limits(timeout_s=0.5)).run("q", "ctx")
    assert r.stop_reason is StopReason.TIMEOUT
    assert r.wall_time_s < 25


def test_timeout_while_sub_calls_are_in_flight():
    sub = ScriptedLM(lambda m: "late", latency_s=30)
    r = make_rlm([repl("llm_query_batched(['a', 'b'])")], sub, limits=Limits(timeout_s=0.5)).run(
        "q", "ctx"
    )
    assert r.stop_reason is StopReason.TIMEOUT


def test_max_consecutive_errors():
    rlm = make_rlm(
        [repl("1/0")] * 3 + ["no code here"] * 3, limits=Limits(max_consecutive_errors=3)
    )
    r = rlm.run("q", "ctx")
    assert r.stop_reason is StopReason.MAX_CONSECUTIVE_ERRORS
    assert r.iterations == 3


def test_a_working_cell_resets_the_error_count():
    rlm = make_rlm(
        [repl("1/0"), repl("1/0"), LOOP, repl("1/0"), repl("1/0"), repl("FINAL(1)")],
        limits=Limits(max_consecutive_errors=3),
    )
    assert rlm.run("q", "ctx").stop_reason is StopReason.FINAL


def test_raise_on_limit_carries_the_partial_result():
    rlm = make_rlm(
        [LOOP] * 2 + ["FINAL(partial)"], limits=Limits(max_iterations=2, raise_on_limit=True)
    )
    with pytest.raises(LimitExceeded) as e:
        rlm.run("q", "ctx")
    assert e.value.stop_reason is StopReason.MAX_ITERATIONS
    assert e.value.result.answer == "partial"


def test_limits_are_shared_by_children():
    child = ScriptedLM(default=repl("llm_query('from child')\nprint(1)"), name="child")
    rlm = make_rlm(
        [repl("rlm_query_batched(['a', 'b', 'c'])")] + [LOOP] * 5,
        child,
        limits=Limits(max_llm_calls=5, max_iterations=4),
    )
    r = rlm.run("q", "ctx")
    assert r.usage.calls == 5
    assert r.stop_reason is StopReason.MAX_LLM_CALLS
