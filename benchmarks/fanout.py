"""Fan-out at the physical limit: recursa's wall time against what the model's latency allows.

Every scenario runs against the project's fake server (:class:`recursa.testing.FakeLLMServer`)
in a subprocess of its own (so its threads do not share this process's GIL), answering every
request after a fixed latency (200 ms by default). The scripted model lives in :func:`respond`:
the root's or a child's turn is recognised by its system message and first user message, a
sub-call by having neither.

Scenarios (each a function returning seconds, so ``benchmarks/compare.py`` can reuse them):

- ``startup``: from the ``RLM.arun()`` call to the first request arriving at the server, on a
  small context (no physical limit: the goal is at most 30 ms);
- ``batch100``/``batch1000``: one root cell runs ``llm_query_batched`` over 100/1000 prompts,
  then the root answers; limit = (2 root turns + ceil(n / cap) waves) x latency;
- ``depth2``: the root runs 4 children with ``rlm_query_batched``; each child makes 10
  sub-calls in one batch, then answers; limit = (2 root turns + 2 child turns +
  ceil(40 / cap) waves) x latency, the critical path of LM latencies (run at the default cap of
  16 and at a cap of 64, where all 40 sub-calls fit in one wave).

Run: ``python benchmarks/fanout.py`` (``--runs 5``, ``--latency 0.2``, ``--only depth2``).
Prints median, min and max over the runs, the median's ratio to the limit, its ratio to the
floor (the same requests from a bare aiohttp client against the same server, run interleaved:
what this server and machine allow; see ``floor_batch``), and the median CPU seconds of this
(the host's) process per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recursa import RLM, Limits

LATENCY_S = 0.2
CHILDREN, CHILD_SUBS = 4, 10

# ---- the scripted model (runs inside the server's process) -----------------------------------


def _repl(code: str) -> str:
    return f"```repl\n{code}\n```"


def respond(messages: list[dict[str, str]]) -> str:
    """The fake model: what the root, a child or a sub-call is answered with."""
    if not messages or messages[0]["role"] != "system":
        return "ok"  # a sub-call: one user message, no system prompt
    first = next((m["content"] for m in messages if m["role"] == "user"), "")
    turn = sum(1 for m in messages if m["role"] == "assistant")
    if turn > 0:
        return _repl('FINAL("done")')
    if m := re.search(r"FANOUT child (\d+)", first):
        n = int(m.group(1))
        return _repl(f"r = llm_query_batched([f'sub {{i}}' for i in range({n})])\nprint(len(r))")
    if m := re.search(r"FANOUT depth2 (\d+) (\d+)", first):
        kids, subs = int(m.group(1)), int(m.group(2))
        prompts = f"[f'FANOUT child {subs} #{{i}}' for i in range({kids})]"
        return _repl(f"r = rlm_query_batched({prompts})\nprint(r)")
    if m := re.search(r"FANOUT batch (\d+)", first):
        n = int(m.group(1))
        return _repl(f"r = llm_query_batched([f'item {{i}}' for i in range({n})])\nprint(len(r))")
    return _repl('FINAL("done")')


def _serve(latency_s: float, log: str) -> None:
    """``--serve``: the fake server in this process until stdin closes."""
    from recursa.testing import FakeLLMServer

    with FakeLLMServer(responder=respond, latency_s=latency_s, log_path=log) as srv:
        print(srv.base_url, flush=True)
        sys.stdin.read()


@dataclass
class Server:
    """A fake server running in a subprocess; its request log carries arrival times."""

    base_url: str
    log: Path

    def arrivals(self, after: float) -> list[float]:
        """Arrival times (``time.time()``) of the requests that came after ``after``."""
        times = [json.loads(line)["time"] for line in self.log.read_text().splitlines() if line]
        return sorted(t for t in times if t >= after)


@contextmanager
def fake_server(latency_s: float = LATENCY_S) -> Iterator[Server]:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "requests.jsonl"
        cmd = [sys.executable, __file__, "--serve", str(latency_s), str(log)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            yield Server(proc.stdout.readline().strip(), log)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)


# ---- scenarios ---------------------------------------------------------------------------------


def _rlm(srv: Server, runs_root: str, concurrency: int = 16) -> RLM:
    limits = Limits(max_concurrency=concurrency, max_depth=1, max_sandboxes=CHILDREN + 1)
    return RLM("openai:fanout", base_url=srv.base_url, limits=limits, runs_root=runs_root)


async def _timed(srv: Server, question: str, concurrency: int = 16) -> tuple[float, float]:
    """(wall seconds of the run, seconds from the call to the first request's arrival)."""
    with tempfile.TemporaryDirectory() as tmp:
        rlm = _rlm(srv, tmp, concurrency)
        t0 = time.time()
        result = await rlm.arun(question, "a small context " * 64)
        wall = time.time() - t0
    if result.answer != "done":
        raise RuntimeError(f"the benchmark run failed: {result.stop_reason} {result.detail}")
    return wall, srv.arrivals(t0)[0] - t0


async def startup(srv: Server) -> float:
    """Seconds from ``arun()`` to the first request at the server (small context)."""
    return (await _timed(srv, "FANOUT startup: answer done."))[1]


async def batch(srv: Server, n: int, concurrency: int = 16) -> float:
    return (await _timed(srv, f"FANOUT batch {n}", concurrency))[0]


async def depth2(srv: Server, concurrency: int = 16) -> float:
    return (await _timed(srv, f"FANOUT depth2 {CHILDREN} {CHILD_SUBS}", concurrency))[0]


def batch_limit(n: int, latency_s: float, cap: int = 16) -> float:
    return (2 + math.ceil(n / cap)) * latency_s


def depth2_limit(latency_s: float, cap: int = 16) -> float:
    return (4 + math.ceil(CHILDREN * CHILD_SUBS / cap)) * latency_s


# ---- the floor: the same requests from a bare aiohttp client ---------------------------------
#
# The limit above counts the server as answering in exactly its latency. A real server (this
# fake one included: Python threads, a new thread per connection) adds a little to every
# request, and two cores are shared with it. The floor is what a client with no RLM around it
# gets from this server: the same requests, in the same order and with the same cap on
# sub-calls, sent by a bare aiohttp session. recursa / floor is recursa's own overhead.


async def _raw(session: Any, url: str, messages: list[dict[str, str]]) -> None:
    body = {"model": "fanout", "messages": messages}
    async with session.post(url, json=body) as resp:
        await resp.read()


_TURN = [{"role": "system", "content": "s"}, {"role": "user", "content": "floor"}]


async def floor_batch(srv: Server, n: int, cap: int = 16) -> float:
    import aiohttp

    url = f"{srv.base_url}/chat/completions"
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(cap)

        async def sub(i: int) -> None:
            async with sem:
                await _raw(session, url, [{"role": "user", "content": f"sub {i}"}])

        t0 = time.perf_counter()
        await _raw(session, url, _TURN)
        await asyncio.gather(*(sub(i) for i in range(n)))
        await _raw(session, url, _TURN)
        return time.perf_counter() - t0


async def floor_depth2(srv: Server, cap: int = 16) -> float:
    import aiohttp

    url = f"{srv.base_url}/chat/completions"
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(cap)

        async def sub(i: int) -> None:
            async with sem:
                await _raw(session, url, [{"role": "user", "content": f"sub {i}"}])

        async def child() -> None:
            await _raw(session, url, _TURN)
            await asyncio.gather(*(sub(i) for i in range(CHILD_SUBS)))
            await _raw(session, url, _TURN)

        t0 = time.perf_counter()
        await _raw(session, url, _TURN)
        await asyncio.gather(*(child() for _ in range(CHILDREN)))
        await _raw(session, url, _TURN)
        return time.perf_counter() - t0


FLOORS: dict[str, Callable[[Server], Awaitable[float]]] = {
    "batch100": lambda s: floor_batch(s, 100),
    "batch1000": lambda s: floor_batch(s, 1000),
    "depth2": lambda s: floor_depth2(s),
    "depth2_cap64": lambda s: floor_depth2(s, 64),
}

Scenario = tuple[str, Callable[[Server], Awaitable[float]], float | None]


def scenarios(latency_s: float) -> list[Scenario]:
    """(name, run, physical limit in seconds; ``None``: none, a goal of 30 ms instead)."""
    return [
        ("startup", startup, None),
        ("batch100", lambda s: batch(s, 100), batch_limit(100, latency_s)),
        ("batch1000", lambda s: batch(s, 1000), batch_limit(1000, latency_s)),
        ("depth2", lambda s: depth2(s), depth2_limit(latency_s)),
        ("depth2_cap64", lambda s: depth2(s, 64), depth2_limit(latency_s, 64)),
    ]


def _row(
    name: str, times: list[float], limit: float | None, cpu: list[float], floor: float | None
) -> str:
    med = statistics.median(times)
    ratio = f"{med / limit:5.2f}x of {limit:.2f} s" if limit else "goal <= 30 ms"
    unit, k = ("ms", 1000.0) if limit is None else ("s", 1.0)
    against = f"  {med / floor:5.2f}x of the floor {floor:.3f} s" if floor else ""
    return (
        f"{name:<14} median {med * k:8.3f} {unit}  min {min(times) * k:8.3f}  "
        f"max {max(times) * k:8.3f}  {ratio}{against}  host CPU {statistics.median(cpu):.3f} s"
    )


async def measure(run: Callable[[], Awaitable[float]]) -> tuple[float, float]:
    """(what ``run`` measured, this process's CPU seconds during it): the CPU is recursa's
    host side alone (the server and the workers are other processes), a figure that a busy
    machine blurs less than wall time."""
    cpu = time.process_time()
    value = await run()
    return value, time.process_time() - cpu


async def main(runs: int, latency_s: float, only: set[str]) -> None:
    with fake_server(latency_s) as srv:
        await startup(srv)  # warm-up: imports, the first worker's files in the page cache
        for name, run, limit in scenarios(latency_s):
            if only and name not in only:
                continue
            got, floors = [], []
            for _ in range(runs):  # interleaved, so a slow spell hits both alike
                got.append(await measure(lambda: run(srv)))  # noqa: B023
                if floor_of := FLOORS.get(name):
                    floors.append(await floor_of(srv))
            floor = statistics.median(floors) if floors else None
            print(_row(name, [g[0] for g in got], limit, [g[1] for g in got], floor), flush=True)


def _parse(argv: list[str]) -> Any:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--latency", type=float, default=LATENCY_S)
    p.add_argument("--only", action="append", default=[], help="a scenario name (repeatable)")
    p.add_argument("--serve", nargs=2, metavar=("LATENCY", "LOG"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    args = _parse(sys.argv[1:])
    if args.serve:
        _serve(float(args.serve[0]), args.serve[1])
    else:
        asyncio.run(main(args.runs, args.latency, set(args.only)))
