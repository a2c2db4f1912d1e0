"""Hostile models and model servers against the limits and the HTTP backends (review issue 13).

Each test replays one attack the review found and asserts the fix:

- a run cannot start more sandbox workers than ``Limits.max_sandboxes``, and a child the budget
  cannot pay for starts none (``rlm_query_batched`` of 101 items under ``max_llm_calls=20``);
- runs have a wall-clock limit by default;
- a server reporting impossible usage (negative, strings, fractions, absurd numbers) or
  malformed replies gets a one-line :class:`LMResponseError`, and budgets are never fed a lie;
- a huge reply is cut at ``max_response_bytes`` without being held in memory;
- a server that trickles bytes cannot stretch a call past its timeout;
- budgets hold with many calls in flight, and retries count against ``max_llm_calls``.

Servers are the fake one from ``recursa.testing`` on 127.0.0.1; root models are scripted.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from recursa import RLM, ConfigError, Limits, PriceTable, ScriptedLM, StopReason
from recursa.errors import LMResponseError, LMTimeoutError
from recursa.limits import Budget, BudgetExhausted, SandboxSlots
from recursa.lm._http import DEFAULT_MAX_RESPONSE_BYTES, RetryPolicy
from recursa.lm.anthropic import AnthropicLM
from recursa.lm.openai import OpenAIChatLM
from recursa.pricing import ModelPrice
from recursa.sandbox import sandbox_factory
from recursa.testing import FakeLLMServer, Fault
from recursa.types import LMSettings, Message, Usage

from .conftest import repl

FAST = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.02)
HELLO = [Message.user("Say hello.")]


class CountingSandboxes:
    """A sandbox factory (the real worker-process tier) that counts live and started workers."""

    def __init__(self, tier: str = "process") -> None:
        self.inner = sandbox_factory(tier)
        self.live = 0
        self.peak = 0
        self.started = 0

    def __call__(self, config, on_call):
        box = self.inner(config, on_call)
        outer = self
        start, shutdown = box.start, box.shutdown
        alive = False

        async def counted_start() -> None:
            nonlocal alive
            await start()
            alive = True
            outer.started += 1
            outer.live += 1
            outer.peak = max(outer.peak, outer.live)

        async def counted_shutdown() -> None:
            nonlocal alive
            if alive:
                alive = False
                outer.live -= 1
            await shutdown()

        box.start, box.shutdown = counted_start, counted_shutdown
        return box


def run_tree(root, sub, limits: Limits, boxes: CountingSandboxes | None = None, **kw):
    rlm = RLM(root, sub, limits=limits, sandbox=boxes or "process", journal=False, **kw)
    return rlm.run("q", "ctx")


# ---- 4: live sandboxes are bounded per run tree; unpaid children start no worker ------------


def test_a_batch_of_children_never_runs_more_workers_than_max_sandboxes():
    boxes = CountingSandboxes()
    root = ScriptedLM(
        [
            repl("r = rlm_query_batched([f'task {i}' for i in range(12)], ['ctx'] * 12)\nprint(r)"),
            repl("FINAL(str(r.count('ok')))"),
        ],
        name="root",
    )
    # Slow children, so that many would be alive at once if nothing bounded them.
    child = ScriptedLM(default=repl("FINAL('ok')"), name="child", latency_s=0.3)
    r = run_tree(root, child, Limits(max_sandboxes=3, max_iterations=4, timeout_s=120), boxes)
    assert r.stop_reason is StopReason.FINAL
    assert r.answer == "12"  # every child ran, a few at a time
    assert boxes.started == 13
    assert 2 <= boxes.peak <= 3  # the root's worker and two children, never more
    assert boxes.live == 0


def test_children_the_budget_cannot_pay_for_never_start_a_worker():
    """The review's attack: 101 rlm_query_batched items under max_llm_calls=20 started 101
    live workers. Now at most max_sandboxes are alive, and no child starts unless its first
    call is reserved."""
    boxes = CountingSandboxes()
    root = ScriptedLM(
        [repl("r = rlm_query_batched(['go'] * 101, ['ctx'] * 101)\nprint(len(r))")]
        + [repl("print(1)")] * 3,
        name="root",
    )
    # Each child makes two calls: its first turn, and one llm_query inside it.
    child = ScriptedLM(
        rules=[("^go$", "fine")],
        default=repl("llm_query('go')\nFINAL('done')"),
        name="child",
    )
    limits = Limits(max_llm_calls=20, max_sandboxes=4, max_iterations=3, timeout_s=120)
    r = run_tree(root, child, limits, boxes)
    assert r.stop_reason is StopReason.MAX_LLM_CALLS
    assert r.usage.calls <= 20
    child_turns = [c for c in child.calls if c[0].role == "system"]
    assert boxes.started - 1 == len(child_turns)  # every child that got a worker made its call
    assert boxes.started <= 20
    assert boxes.peak <= 4
    assert boxes.live == 0


def test_nested_children_at_the_minimum_cap_do_not_deadlock():
    """max_depth=2 with max_sandboxes=3: every child waits for a grandchild. A plain semaphore
    would let four children take every slot and wait forever; the slots keep one free per
    level still to come."""
    boxes = CountingSandboxes()
    root = ScriptedLM(
        [
            repl(
                "r = rlm_query_batched([f'child task {i}' for i in range(4)], ['c'] * 4)\nprint(r)"
            ),
            repl("FINAL(' '.join(r))"),
        ],
        name="root",
    )
    sub = ScriptedLM(
        rules=[
            ("grand task", repl("FINAL('g')")),
            ("child task", repl("FINAL(rlm_query('grand task', 'c'))")),
        ],
        name="sub",
    )
    limits = Limits(max_depth=2, max_sandboxes=3, max_iterations=3, timeout_s=60)
    r = run_tree(root, sub, limits, boxes)
    assert r.stop_reason is StopReason.FINAL, r.detail
    assert r.answer == "g g g g"
    assert boxes.started == 9
    assert boxes.peak <= 3


async def test_slots_keep_room_for_the_levels_below():
    slots = SandboxSlots(3, max_depth=2)
    await slots.acquire(0)  # the root: two more stay free
    await slots.acquire(1)  # a child: one more stays free for its grandchild
    second_child = asyncio.create_task(slots.acquire(1))
    await asyncio.sleep(0.05)
    assert not second_child.done()  # it would take the grandchild's slot
    await asyncio.wait_for(slots.acquire(2), 5)  # the grandchild still gets one
    slots.release()
    slots.release()
    await asyncio.wait_for(second_child, 5)
    assert slots.peak == 3


def test_max_sandboxes_is_validated_against_max_depth():
    with pytest.raises(ConfigError, match="max_sandboxes"):
        Limits(max_depth=4, max_sandboxes=4)
    with pytest.raises(ConfigError, match="max_sandboxes"):
        Limits(max_sandboxes=0)
    assert Limits().max_sandboxes >= Limits().max_depth + 1


def test_the_cli_has_the_limit_flags():
    from typer.testing import CliRunner

    from recursa.cli import app

    for command in ("ask", "serve"):
        out = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        assert "--max-sandboxes" in out
        assert "--timeout" in out


# ---- 6: a default wall-clock limit ----------------------------------------------------------


def test_runs_have_a_wall_clock_limit_by_default():
    assert Limits().timeout_s is not None
    assert 0 < Limits().timeout_s <= 4 * 3600
    assert RLM(ScriptedLM(["x"]), journal=False).limits.timeout_s == Limits().timeout_s
    assert Limits(timeout_s=None).timeout_s is None  # still possible, on purpose


def test_ask_timeout_zero_means_no_limit(monkeypatch, tmp_path):
    from recursa.cli import main

    made = {}

    def fake_rlm(*a, **kw):
        made.update(kw)
        raise ConfigError("built: stop here")

    monkeypatch.setattr("recursa.rlm.RLM", fake_rlm)
    doc = tmp_path / "doc.txt"
    doc.write_text("some text")
    ask = ["ask", "-q", "--no-journal", "-c", str(doc)]
    assert main([*ask, "--timeout", "0", "q"]) == 2
    assert made["limits"].timeout_s is None
    assert main([*ask, "--timeout", "3600", "--max-sandboxes", "6", "q"]) == 2
    assert made["limits"].timeout_s == 3600.0
    assert made["limits"].max_sandboxes == 6


# ---- 11 and 16: impossible usage and malformed replies are protocol errors -------------------


@pytest.fixture
def srv():
    with FakeLLMServer(["hello back"]) as server:
        yield server


@pytest.fixture
async def lms():
    made: list = []

    def openai(srv: FakeLLMServer, **kw) -> OpenAIChatLM:
        kw.setdefault("retry", FAST)
        made.append(OpenAIChatLM("fake-model", base_url=srv.base_url, **kw))
        return made[-1]

    def anthropic(srv: FakeLLMServer, **kw) -> AnthropicLM:
        kw.setdefault("retry", FAST)
        made.append(AnthropicLM("fake-claude", api_key="k", base_url=srv.url, **kw))
        return made[-1]

    yield {"openai": openai, "anthropic": anthropic}
    for lm in made:
        await lm.aclose()


BAD_COUNTS = [-1_000_000, -1, "12", 12.5, True, [3], {"n": 1}, 10**12, float("nan")]


@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
@pytest.mark.parametrize(
    ("api", "field"),
    [
        ("openai", "prompt_tokens"),
        ("openai", "completion_tokens"),
        ("anthropic", "input_tokens"),
        ("anthropic", "output_tokens"),
        ("anthropic", "cache_read_input_tokens"),
    ],
)
async def test_impossible_usage_is_a_response_error(srv, lms, api, field, value):
    srv.fail_next(Fault.usage(**{field: value}), times=None)
    with pytest.raises(LMResponseError) as info:
        await lms[api](srv).complete(HELLO)
    message = str(info.value)
    assert field in message
    assert "\n" not in message
    assert len(srv.requests) == FAST.max_retries + 1


async def test_integral_floats_and_nulls_are_accepted(srv, lms):
    srv.fail_next(Fault.usage(prompt_tokens=7.0, completion_tokens=None))
    c = await lms["openai"](srv).complete(HELLO)
    assert (c.usage.input_tokens, c.usage.output_tokens) == (7, 0)


MALFORMED_OPENAI = [
    {"choices": [{"message": {"content": 42}}]},
    {"choices": [{"message": {"content": [{"type": "text", "text": 5}]}}]},
    {"choices": [{"message": {"content": "hi"}}], "usage": [1, 2]},
    {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": "12"}},
    {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens_details": "x"}},
    {"choices": "nope"},
]
MALFORMED_ANTHROPIC = [
    {"content": [{"type": "text", "text": 42}]},
    {"content": "hi"},
    {"content": [], "usage": "lots"},
    {"content": [], "usage": {"output_tokens": -3}},
]


@pytest.mark.parametrize(
    ("api", "body"),
    [("openai", b) for b in MALFORMED_OPENAI] + [("anthropic", b) for b in MALFORMED_ANTHROPIC],
)
async def test_malformed_json_replies_give_one_line_errors(srv, lms, api, body):
    srv.fail_next(Fault.json_body(body), times=None)
    with pytest.raises(LMResponseError) as info:
        await lms[api](srv).complete(HELLO)
    assert "\n" not in str(info.value)


async def test_odd_but_harmless_fields_are_tolerated(srv, lms):
    body = {
        "choices": [{"message": {"content": "hi"}, "finish_reason": {"weird": 1}}],
        "model": ["not", "a", "name"],
    }
    srv.fail_next(Fault.json_body(body))
    c = await lms["openai"](srv).complete(HELLO)
    assert (c.text, c.finish_reason, c.model) == ("hi", None, "fake-model")


def test_negative_usage_cannot_unlock_the_budget(srv):
    """The review ran 1,002 calls at -1,000,000 tokens each and reported -$999,999."""
    srv.fail_next(Fault.usage(prompt_tokens=-1_000_000, completion_tokens=-1), times=None)
    sub = OpenAIChatLM("fake-model", base_url=srv.base_url, retry=FAST)
    root = ScriptedLM(
        [repl("r = [llm_query(str(i)) for i in range(50)]\nprint(r[-1])")],
        default="FINAL(none)",
        name="root",
    )
    prices = PriceTable().with_overrides({"openai:fake-model": ModelPrice(1.0, 1.0)})
    rlm = RLM(
        root,
        sub,
        limits=Limits(max_tokens=200_000, max_cost_usd=1.0, max_iterations=2),
        prices=prices,
        trusted=True,
        journal=False,
    )
    r = rlm.run("q", "ctx")
    assert r.usage.input_tokens >= 0
    assert r.usage.cost_usd >= 0
    # No sub-call was charged: each failed with LMResponseError and was shown as an error.
    assert r.usage_by_model.get("openai:fake-model") is None
    shown = next(s.attrs["traceback"] for s in r.spans if s.kind == "cell")
    assert "LMResponseError" in shown and "impossible" in shown


def test_the_cli_prints_one_line_for_a_malformed_reply(tmp_path: Path):
    with FakeLLMServer() as server:
        server.fail_next(Fault.json_body({"choices": [{"message": {"content": 42}}]}), None)
        doc = tmp_path / "doc.txt"
        doc.write_text("hello")
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "RECURSA_DATA_DIR": str(tmp_path)}
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "recursa", "ask", "-q", "--no-journal", "-c", str(doc)),
                *("-m", "openai:fake", "--base-url", server.base_url, "What?"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "content" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3


# ---- 12: response size cap -----------------------------------------------------------------


@pytest.mark.parametrize("declare_length", [True, False])
async def test_a_huge_reply_is_cut_at_the_cap_and_not_retried(srv, lms, declare_length):
    srv.fail_next(Fault.huge(20 << 20, declare_length=declare_length), times=None)
    lm = lms["openai"](srv, max_response_bytes=1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(LMResponseError, match="max_response_bytes") as info:
            await lm.complete(HELLO)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "1,048,576 bytes" in str(info.value)
    assert peak < 8 << 20  # far below the 20 MiB the server sent
    assert len(srv.requests) == 1


async def test_the_default_cap_is_16_mib_and_applies_to_anthropic_too(srv, lms):
    assert DEFAULT_MAX_RESPONSE_BYTES == 16 << 20
    lm = lms["anthropic"](srv)
    assert lm.max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES
    srv.fail_next(Fault.huge(24 << 20, declare_length=False))
    with pytest.raises(LMResponseError, match="max_response_bytes"):
        await lm.complete(HELLO)
    srv.fail_next(Fault.huge(2 << 20))  # under the cap: fine
    c = await lm.complete(HELLO)
    assert len(c.text) >= 2 << 20


# ---- 13: a trickling server cannot stretch a call past its timeout ---------------------------


async def test_a_trickling_server_is_cut_off_at_the_call_timeout(srv, lms):
    # ~600 bytes at one per 0.05 s: every read comes in time, the answer would take ~30 s.
    srv.fail_next(Fault.trickle(0.05), times=None)
    lm = lms["openai"](srv, timeout_s=1.0, retry=RetryPolicy(max_retries=1, base_delay_s=0.01))
    started = time.monotonic()
    with pytest.raises(LMTimeoutError):
        await lm.complete(HELLO)
    assert time.monotonic() - started < 10  # two attempts of 1 s, not 2 x 30 s
    assert len(srv.requests) == 2


async def test_the_whole_call_is_bounded_retries_and_waits_included(srv, lms):
    srv.fail_next(Fault.hang(30), times=None)
    policy = RetryPolicy(max_retries=20, base_delay_s=0.01, max_delay_s=0.02, total_timeout_s=1.5)
    lm = lms["openai"](srv, timeout_s=0.6, retry=policy)
    started = time.monotonic()
    with pytest.raises(LMTimeoutError):
        await lm.complete(HELLO)
    assert time.monotonic() - started < 8
    assert len(srv.requests) <= 4  # not 21 attempts


async def test_a_retry_after_past_the_deadline_is_not_waited_for(srv, lms):
    srv.fail_next(Fault.rate_limit(retry_after=60), times=None)
    lm = lms["openai"](srv, timeout_s=1.0, retry=RetryPolicy(max_retries=4))
    started = time.monotonic()
    with pytest.raises(Exception, match="429"):
        await lm.complete(HELLO)
    assert time.monotonic() - started < 10
    assert len(srv.requests) == 1


async def test_settings_timeout_is_a_total_deadline_too(srv, lms):
    srv.fail_next(Fault.trickle(0.05))
    lm = lms["openai"](srv, timeout_s=600, retry=RetryPolicy(max_retries=0))
    started = time.monotonic()
    with pytest.raises(LMTimeoutError):
        await lm.complete(HELLO, LMSettings(timeout_s=0.5))
    assert time.monotonic() - started < 10


# ---- 14: budgets hold with calls in flight; retries count ------------------------------------


def _batch_run(srv: FakeLLMServer, limits: Limits, n: int = 40, retry=FAST, **kw):
    sub = OpenAIChatLM("fake-model", base_url=srv.base_url, retry=retry)
    root = ScriptedLM(
        [repl(f"r = llm_query_batched(['item ' + str(i) for i in range({n})])\nprint(len(r))")]
        + [repl("print(2)")] * 3,
        name="root",
    )
    rlm = RLM(root, sub, limits=limits, trusted=True, journal=False, **kw)
    return rlm.run("q", "ctx")


def test_max_tokens_holds_with_many_calls_in_flight():
    """The review's --max-tokens 1500 reached 1,700: concurrent calls each passed the check."""
    with FakeLLMServer(responder="word " * 2000, latency_s=0.2) as srv:
        limits = Limits(max_tokens=12_000, max_concurrency=16, max_iterations=4, timeout_s=120)
        r = _batch_run(srv, limits)
        sent = srv.completions()
    assert r.stop_reason is StopReason.MAX_TOKENS
    assert r.usage.total_tokens <= 12_000
    assert len(sent) >= 2
    # Every request carried an output cap, so the server could not pass what was reserved.
    assert all(isinstance(q.body.get("max_tokens"), int) for q in sent)


def test_max_cost_holds_with_many_calls_in_flight():
    """The review's --max-cost 0.05 spent $0.36."""
    prices = PriceTable().with_overrides({"openai:fake-model": ModelPrice(10.0, 40.0)})
    with FakeLLMServer(responder="word " * 2000, latency_s=0.2) as srv:
        limits = Limits(max_cost_usd=0.05, max_concurrency=16, max_iterations=4, timeout_s=120)
        r = _batch_run(srv, limits, prices=prices)
    assert r.stop_reason is StopReason.MAX_COST
    assert 0 < r.cost_usd <= 0.05


def test_retries_count_against_max_llm_calls_and_are_reported():
    """The review's --max-calls 50 sent ~243 requests to a server answering 429."""
    with FakeLLMServer() as srv:
        srv.fail_next(Fault.rate_limit(retry_after=0), times=None)
        limits = Limits(max_llm_calls=10, max_iterations=3, timeout_s=120)
        eager = RetryPolicy(max_retries=20, base_delay_s=0.001, max_delay_s=0.002)
        r = _batch_run(srv, limits, n=2, retry=eager)  # would send 2 x 21 requests
        http_requests = len(srv.completions())
    root_calls = 1  # the scripted root's first turn; the run stops before its second
    assert root_calls + http_requests == 10
    assert r.stop_reason is StopReason.MAX_LLM_CALLS
    assert r.retries == http_requests - 2
    assert r.to_dict()["retries"] == r.retries
    sub_spans = [s for s in r.spans if s.kind == "lm_call" and s.attrs.get("retries")]
    assert sum(s.attrs["retries"] for s in sub_spans) == r.retries


async def test_a_reservation_waits_for_calls_in_flight_then_fits():
    budget = Budget(Limits(max_tokens=1000))
    first = budget.try_reserve(400, max_output_tokens=500)  # 100 + 500 tokens
    assert first is not None and first.tokens == 600
    assert budget.try_reserve(400, max_output_tokens=500) is None  # must wait, not overshoot
    waiter = asyncio.create_task(budget.wait_settled())
    await asyncio.sleep(0)
    first.sent = True
    budget.release(first)
    budget.ledger.charge("m", 0, Usage(input_tokens=100, output_tokens=50))
    await asyncio.wait_for(waiter, 5)
    second = budget.try_reserve(400, max_output_tokens=500)
    assert second is not None and second.output_tokens == 500
    assert budget.calls_reserved == 2


def test_the_last_call_gets_a_lowered_cap_and_the_next_is_refused():
    budget = Budget(Limits(max_tokens=1000))
    res = budget.try_reserve(2000, max_output_tokens=None)  # 500 prompt tokens
    assert res is not None and res.output_tokens == 500  # lowered from the 4096 default
    with pytest.raises(BudgetExhausted) as info:
        Budget(Limits(max_tokens=100)).try_reserve(400)  # the prompt alone fills it
    assert info.value.reason is StopReason.MAX_TOKENS


def test_a_call_that_never_went_out_is_not_counted():
    budget = Budget(Limits(max_llm_calls=1))
    res = budget.try_reserve(10)
    budget.release(res)  # not sent
    assert budget.calls_reserved == 0
    budget.try_reserve(10)
    with pytest.raises(BudgetExhausted):
        budget.reserve_retry()


async def test_a_lone_surrogate_in_a_prompt_is_sent_as_a_replacement_character():
    """Text that cannot be UTF-8 (a broken decode upstream) reaches the server as U+FFFD
    instead of crashing the backend with UnicodeEncodeError."""
    from recursa.lm.openai import OpenAIChatLM
    from recursa.testing import FakeLLMServer
    from recursa.types import Message

    with FakeLLMServer(["ok"]) as server:
        lm = OpenAIChatLM("m", base_url=server.base_url)
        try:
            reply = await lm.complete([Message.user("bad \udc80 text")])
        finally:
            await lm.aclose()
        assert reply.text == "ok"
        sent = server.requests[-1].body["messages"][0]["content"]
        assert sent == "bad \ufffd text"


def test_a_base_url_is_for_the_root_models_provider_only(monkeypatch):
    """`recursa ask --model openai:x --sub-model anthropic:y --base-url U` must not send the
    Anthropic key to U (nor the OpenAI key to Anthropic): each provider keeps its own URL."""
    from recursa import RLM

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-anthropic")
    proxy = "http://127.0.0.1:9/v1"
    rlm = RLM(model="openai:x", sub_model="anthropic:y", base_url=proxy)
    assert rlm.root_lm.base_url == proxy
    assert rlm.sub_lm.base_url != proxy
    assert "127.0.0.1" not in rlm.sub_lm.base_url
    same = RLM(model="openai:x", sub_model="openai:y", base_url=proxy)
    assert same.sub_lm.base_url == proxy  # one provider: the URL serves both


def test_the_default_sandbox_cap_grows_with_a_deep_max_depth():
    from recursa.errors import ConfigError
    from recursa.limits import Limits

    assert Limits(max_depth=9).max_sandboxes == 10  # one per level of a root->child chain
    assert Limits(max_depth=1).max_sandboxes == 8
    with pytest.raises(ConfigError, match="--max-sandboxes"):
        Limits(max_depth=6, max_sandboxes=3)
