"""What one HTTP client costs per request when many are in flight: httpx with its own pool
(httpcore), httpx over recursa's aiohttp transport (what the backends use), and bare aiohttp.

Each round sends ``--n`` concurrent POSTs (an OpenAI-style chat body) to the project's fake
server (in a subprocess, see ``fanout.fake_server``) at ``--latency`` seconds, twice on one
client: on fresh connections, then on the warm pool. Prints the median wall time (against the
latency, the limit) and the median CPU seconds of this process per round.

Run: ``python benchmarks/http_clients.py`` (``--n 40``, ``--rounds 3``, ``--latency 0.2``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import httpx

from fanout import fake_server
from recursa.lm._aiohttp import AiohttpTransport
from recursa.lm._http import tls_for

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "sub 1"}]}).encode()
HEADERS = {"content-type": "application/json"}


async def _timed(n: int, send: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(send() for _ in range(n)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def _httpx(url: str, n: int, transport: httpx.AsyncBaseTransport | None) -> list[Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    kwargs: dict[str, Any] = {"transport": transport} if transport else {"limits": limits}
    async with httpx.AsyncClient(**kwargs) as client:

        async def send() -> bytes:
            return (await client.post(url, content=BODY, headers=HEADERS)).content

        return [await _timed(n, send), await _timed(n, send)]


async def _aiohttp(url: str, n: int) -> list[Any]:
    async with aiohttp.ClientSession() as session:

        async def send() -> bytes:
            async with session.post(url, data=BODY, headers=HEADERS) as resp:
                return await resp.read()

        return [await _timed(n, send), await _timed(n, send)]


async def main(n: int, rounds: int, latency_s: float) -> None:
    with fake_server(latency_s) as srv:
        url = f"{srv.base_url}/chat/completions"
        clients: dict[str, Callable[[], Awaitable[list[Any]]]] = {
            "httpx (httpcore pool)": lambda: _httpx(url, n, None),
            "httpx over recursa's aiohttp transport": lambda: _httpx(
                url, n, AiohttpTransport(verify=tls_for(url))
            ),
            "bare aiohttp": lambda: _aiohttp(url, n),
        }
        got: dict[str, list[list[Any]]] = {name: [] for name in clients}
        for _ in range(rounds):  # interleaved, so a slow spell hits every client alike
            for name, run in clients.items():
                got[name].append(await run())
    print(f"{n} concurrent requests at {latency_s:g} s latency, {rounds} rounds, medians")
    for name, runs in got.items():
        for i, label in enumerate(("fresh connections", "warm pool")):
            wall = statistics.median(r[i][0] for r in runs)
            cpu = statistics.median(r[i][1] for r in runs)
            print(
                f"  {name:<40} {label:<17} wall {wall:6.3f} s ({wall / latency_s:4.2f}x)"
                f"  CPU {cpu * 1000:6.1f} ms ({cpu / n * 1000:5.2f} ms a request)"
            )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--latency", type=float, default=0.2)
    a = p.parse_args()
    asyncio.run(main(a.n, a.rounds, a.latency))
