"""Journaling overhead per LM call (goal: under 1 ms median).

Two figures:

1. the journal write itself: ``Journal.record_lm`` for a typical response, median of N;
2. the whole gate path: the same sub-calls through ``LMGate.complete`` with the journal on and
   off, using a zero-latency scripted model, so the difference is what journaling adds to a call
   (request key hashing + the committed write).

Run: ``python benchmarks/journal.py`` (``--n 2000`` for more samples, ``--sync full`` to measure
fsync-per-write durability).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from recursa import Limits, ScriptedLM, load_context
from recursa.gate import LMGate
from recursa.journal import Journal
from recursa.limits import Budget
from recursa.store import request_key
from recursa.trace.spans import Tracer
from recursa.types import Completion, Message, Usage

PROMPT = "Classify this question into one of six categories:\n" + "What is the capital? " * 40
RESPONSE = Completion("The category is LOCATION. " * 8, Usage(180, 60, calls=1), "m", "stop")


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_write(journal: Journal, n: int) -> list[float]:
    out = []
    for i in range(n):
        key = request_key("openai:m", [Message.user(f"{PROMPT} {i}")], None)
        t = time.perf_counter()
        journal.record_lm(key, "openai:m", "sub", 1, RESPONSE)
        out.append(time.perf_counter() - t)
    return out


async def bench_gate(journal: Journal | None, n: int) -> list[float]:
    lm = ScriptedLM(lambda m: RESPONSE.text, name="bench")
    gate = LMGate(Budget(Limits()), Tracer(), 16, journal=journal)
    out = []
    for i in range(n):
        msgs = [Message.user(f"{PROMPT} {i}")]
        t = time.perf_counter()
        await gate.complete(lm, msgs, role="sub", depth=1, parent=None)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--sync", choices=["normal", "full"], default="normal")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ctx = load_context("benchmark context")
        j1 = Journal.create("w", question="q", context=ctx, config={}, root=root, sync=args.sync)
        write = bench_write(j1, args.n)
        j2 = Journal.create("g", question="q", context=ctx, config={}, root=root, sync=args.sync)
        with_journal = asyncio.run(bench_gate(j2, args.n))
        without = asyncio.run(bench_gate(None, args.n))
    added = median_ms(with_journal) - median_ms(without)
    rows = [
        ("journal write (record_lm), median", median_ms(write)),
        ("journal write, p95", statistics.quantiles(write, n=20)[-1] * 1000),
        ("gate call with journal, median", median_ms(with_journal)),
        ("gate call without journal, median", median_ms(without)),
        ("overhead added per LM call, median", added),
    ]
    print(f"journaling overhead, sync={args.sync}, n={args.n}")
    for label, ms in rows:
        print(f"  {label:<40} {ms:8.3f} ms")
    verdict = "PASS" if added < 1.0 else "MISS"
    print(f"  goal: overhead < 1 ms median -> {verdict}")


if __name__ == "__main__":
    main()
