"""Fan-out scheduling (issue 19): root turns before sub-calls, caps per provider, warm workers
for children, the first request sent while the sandbox starts, a lean HTTP client."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.abc
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from recursa import RLM, Limits, ScriptedLM
from recursa.limits import SandboxSlots
from recursa.lm._http import tls_for
from recursa.lm.base import BaseLM
from recursa.lm.openai import OpenAIChatLM
from recursa.lm.wrappers import (
    CallScope,
    FairLimiter,
    ProviderLimits,
    call_scope,
    compose,
    provider_key,
)
from recursa.sandbox.base import CallHandler, CallRefused, Sandbox, SandboxConfig
from recursa.sandbox.functions import DEFAULT_FUNCTIONS, FunctionTable
from recursa.sandbox.inprocess import InProcessSandbox
from recursa.sandbox.pool import WorkerPool, _Relay
from recursa.sandbox.process import ProcessSandbox
from recursa.testing import FakeLLMServer
from recursa.types import Completion, LMSettings, Message

from .conftest import make_rlm, repl


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ---- the fair limiter --------------------------------------------------------------------------


async def test_waiting_turns_are_let_in_before_waiting_sub_calls() -> None:
    limiter = FairLimiter(1)
    await limiter.acquire(1)  # the one slot is taken
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await limiter.acquire(priority)
        order.append(name)
        limiter.release()

    tasks = [asyncio.create_task(wait(n, 1)) for n in ("sub1", "sub2")]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(wait("turn", 0)))
    await asyncio.sleep(0)
    limiter.release()
    await asyncio.gather(*tasks)
    assert order == ["turn", "sub1", "sub2"]
    assert limiter.in_flight == 0


async def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    limiter = FairLimiter(1)
    await limiter.acquire(1)
    waiter = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    assert limiter.in_flight == 0
    await asyncio.wait_for(limiter.acquire(0), 5)  # nothing is stuck behind the cancelled one


def test_a_childs_next_turn_does_not_queue_behind_its_siblings_sub_calls() -> None:
    """Two children, six sub-calls each, a cap of 2: the child whose sub-calls finish first
    sends its next turn before the other child's sub-calls are all sent (with one queue for
    everything, that turn waited behind all of them)."""
    batch = repl("r = llm_query_batched([f'sub {i}' for i in range(6)])\nprint(len(r))")
    sub = ScriptedLM(
        rules=[
            (r"^sub \d$", "ok"),
            (r"Question: job", batch),
            (r"^Output", repl("FINAL('done')")),  # a child's second turn: its cell's output
        ],
        default=repl("FINAL('done')"),
        name="sub",
        latency_s=0.1,
    )
    rlm = make_rlm(
        [repl("r = rlm_query_batched(['job a', 'job b'])\nprint(r)"), repl("FINAL('ok')")],
        sub,
        limits=Limits(max_iterations=4, max_concurrency=2),
    )
    assert rlm.run("q", "ctx").answer == "ok"
    kinds = [
        "sub" if len(c) == 1 else f"turn{sum(m.role == 'assistant' for m in c)}" for c in sub.calls
    ]
    assert kinds.count("sub") == 12 and kinds.count("turn1") == 2
    first_second_turn = kinds.index("turn1")
    last_sub = len(kinds) - 1 - kinds[::-1].index("sub")
    assert first_second_turn < last_sub, kinds


# ---- caps per provider -------------------------------------------------------------------------


class _Counting(BaseLM):
    """A model that records how many of its provider's calls are in flight at once."""

    def __init__(self, name: str, board: dict[str, list[int]]) -> None:
        self.name = name
        self.board = board

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        provider = self.name.split(":")[0]
        now, peak = self.board.setdefault(provider, [0, 0])
        self.board[provider] = [now + 1, max(peak, now + 1)]
        self.board.setdefault("all", [0, 0])
        total = self.board["all"]
        self.board["all"] = [total[0] + 1, max(total[1], total[0] + 1)]
        await asyncio.sleep(0.01)
        self.board[provider][0] -= 1
        self.board["all"][0] -= 1
        return Completion("ok")


async def _calls(models: list[BaseLM], limits: ProviderLimits, n: int) -> None:
    wrapped = [compose(lm, limit=limits) for lm in models]
    await asyncio.gather(*(lm.complete([Message.user(str(i))]) for lm in wrapped for i in range(n)))


async def test_models_of_different_providers_do_not_share_a_cap() -> None:
    board: dict[str, list[int]] = {}
    await _calls([_Counting("alpha:m", board), _Counting("beta:m", board)], ProviderLimits(1), 3)
    assert board["alpha"][1] == 1 and board["beta"][1] == 1
    assert board["all"][1] == 2


async def test_models_of_one_provider_share_its_cap_across_runs() -> None:
    board: dict[str, list[int]] = {}
    # Two runs' limits (one each), two models of one provider: one slot in all.
    one, two = ProviderLimits(1), ProviderLimits(1)
    await asyncio.gather(
        _calls([_Counting("alpha:m1", board)], one, 3),
        _calls([_Counting("alpha:m2", board)], two, 3),
    )
    assert board["all"][1] == 1
    # A cap of its own for one provider.
    board.clear()
    await _calls([_Counting("gamma:m", board)], ProviderLimits(1, {"gamma": 3}), 6)
    assert board["gamma"][1] == 3


def test_an_http_models_provider_is_its_endpoint() -> None:
    a = OpenAIChatLM("m1", base_url="http://127.0.0.1:8001/v1", api_key="k")
    b = OpenAIChatLM("m2", base_url="http://127.0.0.1:8001/v1/", api_key="k")
    c = OpenAIChatLM("m1", base_url="http://127.0.0.1:8002/v1", api_key="k")
    assert provider_key(a) == provider_key(b) == "http://127.0.0.1:8001"
    assert provider_key(c) != provider_key(a)
    assert provider_key(ScriptedLM("x", name="sub")) == "scripted"


async def test_root_turns_wait_at_priority() -> None:
    """A root turn (as the gate marks it) takes the slot freed first, ahead of sub-calls."""
    order: list[str] = []

    class Recording(BaseLM):
        name = "delta:m"

        async def complete(
            self, messages: Sequence[Message], settings: LMSettings | None = None
        ) -> Completion:
            order.append(messages[-1].content)
            await asyncio.sleep(0.01)
            return Completion("ok")

    lm = compose(Recording(), limit=ProviderLimits(1))

    async def call(text: str, role: str) -> None:
        token = call_scope.set(CallScope(role, 1))
        try:
            await lm.complete([Message.user(text)])
        finally:
            call_scope.reset(token)

    first = asyncio.create_task(call("s0", "sub"))
    await asyncio.sleep(0)
    subs = [asyncio.create_task(call(f"s{i}", "sub")) for i in (1, 2)]
    await asyncio.sleep(0)
    turn = asyncio.create_task(call("turn", "root"))
    await asyncio.gather(first, *subs, turn)
    assert order == ["s0", "turn", "s1", "s2"]


# ---- warm workers for children -----------------------------------------------------------------


class _Factory:
    """A process sandbox factory that keeps every sandbox it made."""

    def __init__(self) -> None:
        self.made: list[tuple[ProcessSandbox, CallHandler]] = []

    def __call__(self, config: SandboxConfig, on_call: CallHandler) -> Sandbox:
        sandbox = ProcessSandbox(config, on_call)
        self.made.append((sandbox, on_call))
        return sandbox

    def pids(self) -> list[int]:
        return [sb.worker_pid for sb, _ in self.made if sb.worker_pid is not None]

    def pooled(self) -> int:
        return sum(isinstance(handler, _Relay) for _, handler in self.made)


def _children_rlm(factory: _Factory, latency_s: float = 0.0) -> RLM:
    child = ScriptedLM(
        rules=[(r"Question: job", repl("import os\nFINAL(str(os.getpid()))"))],
        name="child",
        latency_s=latency_s,
    )
    return make_rlm(
        [
            repl("pids = rlm_query_batched(['job 1', 'job 2', 'job 3'])\nprint(pids)"),
            repl("FINAL(','.join(pids))"),
        ],
        child,
        sandbox=factory,
        limits=Limits(max_iterations=4, max_depth=1, max_sandboxes=4),
    )


def test_children_run_in_warm_workers_used_once_and_all_are_shut_down() -> None:
    factory = _Factory()
    result = _children_rlm(factory).run("q", "ctx")
    pids = result.answer.split(",")
    assert len(pids) == 3 and len(set(pids)) == 3  # one worker per child
    # The root's own worker, and three warm ones for the three children: no child started
    # its own (the pool stays within max_sandboxes: 1 live + 3 warm).
    assert len(factory.made) == 4
    assert factory.pooled() == 3
    pooled_pids = {str(sb.worker_pid) for sb, h in factory.made if isinstance(h, _Relay)}
    assert set(pids) <= pooled_pids | {str(p) for p in factory.pids()}
    assert not any(_process_alive(p) for p in factory.pids())
    assert not any(sb.alive for sb, _ in factory.made)


def test_warm_workers_nobody_took_are_shut_down_with_the_run() -> None:
    factory = _Factory()
    # The code names rlm_query (so workers are warmed) but starts no child.
    rlm = make_rlm(
        [repl("note = 'rlm_query is not called'\nprint(note)"), repl("FINAL('done')")],
        sandbox=factory,
        limits=Limits(max_iterations=4, max_depth=1, max_sandboxes=3),
    )
    assert rlm.run("q", "ctx").answer == "done"
    assert factory.pooled() == 2  # bounded by max_sandboxes beside the root's live worker
    assert not any(_process_alive(p) for p in factory.pids())
    assert not any(sb.alive for sb, _ in factory.made)


def test_no_worker_is_warmed_past_the_depth_limit() -> None:
    factory = _Factory()
    rlm = make_rlm(
        [repl("print(rlm_query('x'))"), repl("FINAL('done')")],
        ScriptedLM(default="plain", name="sub"),
        sandbox=factory,
        limits=Limits(max_iterations=4, max_depth=0),
    )
    assert rlm.run("q", "ctx").answer == "done"
    assert len(factory.made) == 1 and factory.pooled() == 0


async def test_a_cancelled_run_leaves_no_worker_behind() -> None:
    factory = _Factory()
    rlm = _children_rlm(factory, latency_s=30.0)  # children wait on a slow model
    task = asyncio.create_task(rlm.arun("q", "ctx"))
    child = rlm.sub_lm
    assert isinstance(child, ScriptedLM)
    for _ in range(400):  # until the children's first turns are in flight
        if len(child.calls) >= 3:
            break
        await asyncio.sleep(0.05)
    assert len(child.calls) >= 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert factory.made
    assert not any(_process_alive(p) for p in factory.pids())
    assert not any(sb.alive for sb, _ in factory.made)


# ---- the first request does not wait for the sandbox -------------------------------------------


def test_the_first_request_is_sent_while_the_sandbox_starts() -> None:
    events: list[str] = []
    first_call = asyncio.Event()

    class SlowStart(InProcessSandbox):
        async def start(self) -> None:
            # Starts only once the first request went out: a run that waited for the start
            # before sending it would never get there (the wait_for below fails it).
            await asyncio.wait_for(first_call.wait(), 10)
            events.append("sandbox started")
            await super().start()

    def reply(messages: Sequence[Message]) -> str:
        events.append("first request" if len(messages) == 2 else "next request")
        first_call.set()
        return repl("print(len(context))") if len(messages) == 2 else repl("FINAL('done')")

    rlm = make_rlm(ScriptedLM(reply, name="root"), sandbox=lambda c, h: SlowStart(c, h))
    assert rlm.run("q", "ctx").answer == "done"
    assert events == ["first request", "sandbox started", "next request"]


# ---- a lean HTTP client ------------------------------------------------------------------------


async def test_a_plain_http_client_loads_no_certificates() -> None:
    plain = OpenAIChatLM("m", base_url="http://127.0.0.1:9/v1", api_key="k")
    tls = OpenAIChatLM("m", base_url="https://example.invalid/v1", api_key="k")
    try:
        for lm, cas in ((plain, 0), (tls, 1)):
            session = lm._http().transport._open()  # type: ignore[attr-defined]
            ctx = session.connector._ssl  # what every connection of this backend verifies with
            assert isinstance(ctx, ssl.SSLContext)
            assert min(ctx.cert_store_stats()["x509_ca"], 1) == cas  # https: the system's CAs
            assert ctx.verify_mode == ssl.CERT_REQUIRED  # and nothing goes unverified
    finally:
        await plain.aclose()
        await tls.aclose()
    assert plain._sender is None and tls._sender is None  # their connections were closed
    assert tls_for("HTTP://localhost:8000/v1") is not True and tls_for("https://x/v1") is True


class _ImportSpy(importlib.abc.MetaPathFinder):
    """Counts the imports of ``sniffio`` that reach the finders (a cached module never does;
    a missing one does on every attempt)."""

    def __init__(self) -> None:
        self.lookups = 0

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "sniffio":
            self.lookups += 1
        return None


async def test_http_calls_do_not_retry_a_failed_import_each_time() -> None:
    spy = _ImportSpy()
    with FakeLLMServer(responder="ok") as srv:
        lm = OpenAIChatLM("m", base_url=srv.base_url, api_key="k")
        try:
            await lm.complete([Message.user("warm up")])
            sys.meta_path.insert(0, spy)
            try:
                await asyncio.gather(*(lm.complete([Message.user(str(i))]) for i in range(20)))
            finally:
                sys.meta_path.remove(spy)
        finally:
            await lm.aclose()
    assert "sniffio" in sys.modules, "sniffio is a dependency: httpcore imports it per request"
    assert spy.lookups == 0


def test_pid_helper_sees_this_process() -> None:
    assert _process_alive(os.getpid())


class _Fake:
    """A sandbox that only records its start and shutdown."""

    def __init__(self, config: SandboxConfig, on_call: CallHandler) -> None:
        self.config, self.on_call = config, on_call
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.stopped = True


async def test_a_warm_worker_serves_only_its_own_configuration_and_one_child() -> None:
    made: list[_Fake] = []

    def factory(config: SandboxConfig, on_call: CallHandler) -> Sandbox:
        made.append(_Fake(config, on_call))
        return made[-1]  # type: ignore[return-value]

    pool = WorkerPool(factory, SandboxSlots(4), size=2)
    config = SandboxConfig()
    fewer = dataclasses.replace(config, functions=FunctionTable(DEFAULT_FUNCTIONS.rows[:1]))
    assert pool.warm(config, 5) == 2  # bounded by the pool's size
    with pytest.raises(CallRefused):  # not serving anyone yet
        await made[0].on_call("llm_query", {"prompt": "x"})
    assert await pool.take(dataclasses.replace(config, memory_limit_mb=1), _answer) is None
    assert await pool.take(fewer, _answer) is None  # another function table
    first = await pool.take(config, _answer)
    second = await pool.take(config, _answer)
    assert first is made[0] and second is made[1] and made[0].started
    assert await pool.take(config, _answer) is None  # each is used once
    assert await made[0].on_call("llm_query", {"prompt": "x"}) == "answered llm_query"
    await pool.aclose()
    assert not made[0].stopped  # taken: its child shuts it down
    assert pool.warm(config, 1) == 0  # closed


async def test_the_pool_shuts_down_what_nobody_took_and_retired_workers() -> None:
    made: list[_Fake] = []

    def factory(config: SandboxConfig, on_call: CallHandler) -> Sandbox:
        made.append(_Fake(config, on_call))
        return made[-1]  # type: ignore[return-value]

    slots = SandboxSlots(3)
    await slots.acquire(0)
    await slots.acquire(0)
    pool = WorkerPool(factory, slots, delay_s=0)
    assert pool.warm(SandboxConfig(), 4) == 1  # 2 live + 1 warm fill max_sandboxes
    retired = _Fake(SandboxConfig(), _answer)
    pool.retire(retired, slots.release)  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert made[0].started
    await pool.aclose()
    assert made[0].stopped and retired.stopped and slots.live == 1


async def test_a_warm_start_waits_for_the_childrens_requests_unless_a_child_wants_it() -> None:
    made: list[_Fake] = []

    def factory(config: SandboxConfig, on_call: CallHandler) -> Sandbox:
        made.append(_Fake(config, on_call))
        return made[-1]  # type: ignore[return-value]

    pool = WorkerPool(factory, SandboxSlots(4), size=2, delay_s=30)
    assert pool.warm(SandboxConfig(), 2) == 2
    await asyncio.sleep(0.05)
    assert not made[0].started and not made[1].started  # still within the delay
    taken = await asyncio.wait_for(pool.take(SandboxConfig(), _answer), 5)
    assert taken is made[0] and made[0].started  # wanted: started at once
    await asyncio.wait_for(pool.aclose(), 5)  # does not wait out the delay
    assert not made[1].started and not made[1].stopped  # never started: nothing to stop


async def _answer(fn: str, args: dict[str, object]) -> str:
    return f"answered {fn}"


def test_a_run_stopped_before_its_first_turn_starts_no_worker() -> None:
    factory = _Factory()
    rlm = make_rlm(
        [repl("FINAL('never')")], sandbox=factory, limits=Limits(max_llm_calls=1, max_tokens=1)
    )
    result = rlm.run("q", "ctx")
    assert result.partial and factory.made == []
