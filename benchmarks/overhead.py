"""What recursa itself costs, measured against the fake LLM server with a fixed latency.

(a) engine overhead per iteration beyond the root LM call: from the trace, each iteration's
    duration minus its root ``lm_call``'s, for iterations whose cell is trivial (goal < 5 ms
    median), with the run journal on (the default) and off;
(b) sandbox worker start: ``ProcessSandbox.start()`` (then ``shutdown()``), median (goal < 100 ms);
(c) loading a 100 MB string as ``context`` into the REPL (goal < 2 s), and the host's memory while
    doing so, measured in a fresh child process: RSS before building the string, peak RSS after;
(d) ``llm_query_batched`` over 100 prompts at 200 ms each with the default concurrency of 16,
    from its ``sub_call`` span (goal: within 1.5x of ceil(100/16) x 200 ms).

Run: ``python benchmarks/overhead.py`` (``--quick`` for fewer repetitions).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from recursa import RLM, Limits
from recursa.sandbox import ProcessSandbox
from recursa.testing import FakeLLMServer

Row = tuple[str, str, str, bool | None]  # label, measured, goal, passed (None: no goal)


def _final(messages: list[dict[str, str]]) -> str:
    return '```repl\nFINAL("done")\n```'


# ---- (a) engine overhead per iteration ---------------------------------------------------------


async def engine_overhead(iterations: int, latency_s: float, journal: bool) -> list[float]:
    """Per-iteration overhead in seconds for ``iterations`` trivial cells."""
    replies = [f"```repl\nx = {i}\n```" for i in range(iterations)]
    with (
        FakeLLMServer(replies, responder=_final, latency_s=latency_s) as srv,
        tempfile.TemporaryDirectory() as tmp,
    ):
        rlm = RLM(
            "openai:bench-root",
            base_url=srv.base_url,
            limits=Limits(max_iterations=iterations + 2),
            journal=journal,
            runs_root=tmp,
        )
        result = await rlm.arun("Benchmark: run the cells.", "a small context " * 100)
    if result.answer != "done":
        raise RuntimeError(
            f"the benchmark run did not finish: {result.stop_reason} {result.detail}"
        )
    lm_calls = {s.parent_id: s for s in result.spans if s.kind == "lm_call"}
    iters = sorted((s for s in result.spans if s.kind == "iteration"), key=lambda s: s.start)
    trivial = iters[:-1]  # the last one runs FINAL
    return [s.duration_s - lm_calls[s.id].duration_s for s in trivial]


# ---- (b) sandbox start -------------------------------------------------------------------------


async def sandbox_starts(n: int) -> tuple[list[float], list[float]]:
    starts, stops = [], []
    for _ in range(n):
        sb = ProcessSandbox()
        t0 = time.perf_counter()
        await sb.start()
        t1 = time.perf_counter()
        await sb.shutdown()
        t2 = time.perf_counter()
        starts.append(t1 - t0)
        stops.append(t2 - t1)
    return starts, stops


# ---- (c) 100 MB context, in a fresh child process ----------------------------------------------


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _child_load(mb: int) -> dict[str, Any]:
    sb = ProcessSandbox()
    await sb.start()
    try:
        baseline = _rss_kb()
        # 100 characters a line, so the string is built once, at exactly ``mb`` million characters
        # (a slice or a concatenation would briefly hold a second copy and blur the peak).
        line = (
            "2026-11-23T10:00:00Z INFO GET /v1/items served in 12 ms by worker 7".ljust(99) + "\n"
        )
        text = line * (mb * 10_000)
        t0 = time.perf_counter()
        await sb.load_context(text)
        elapsed = time.perf_counter() - t0
        n = await sb.execute("print(len(context))")
        if n.stdout.strip() != str(len(text)):
            raise RuntimeError(f"the worker holds a context of {n.stdout!r} characters")
    finally:
        await sb.shutdown()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"seconds": elapsed, "baseline_kb": baseline, "peak_kb": peak}


def load_context_in_child(mb: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child-load-context", str(mb)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- (d) llm_query_batched ---------------------------------------------------------------------


async def batched(n_prompts: int, latency_s: float) -> float:
    code = f"r = llm_query_batched([f'item {{i}}' for i in range({n_prompts})])\nprint(len(r))"
    replies = [f"```repl\n{code}\n```"]
    rules = [(r"^item \d+$", "ok")]
    with (
        FakeLLMServer(replies, rules=rules, responder=_final, latency_s=latency_s) as srv,
        tempfile.TemporaryDirectory() as tmp,
    ):
        rlm = RLM("openai:bench-root", base_url=srv.base_url, journal=False, runs_root=tmp)
        result = await rlm.arun("Benchmark: one batch.", "context")
        subs = [r for r in srv.completions() if r.last_user.startswith("item ")]
    if result.answer != "done" or len(subs) != n_prompts:
        raise RuntimeError(f"the batch run went wrong: {result.stop_reason} {result.detail}")
    span = next(s for s in result.spans if s.kind == "sub_call")
    return span.duration_s


# ---- the table ---------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def measure(quick: bool) -> list[Row]:
    n_iter, n_starts, n_batches = (30, 20, 1) if quick else (60, 40, 3)
    latency = 0.02
    rows: list[Row] = []
    on = asyncio.run(engine_overhead(n_iter, latency, journal=True))
    off = asyncio.run(engine_overhead(n_iter, latency, journal=False))
    rows.append((f"(a) iteration overhead, journal on (n={len(on)})", ms(statistics.median(on)),
                 "< 5 ms median", statistics.median(on) < 0.005))  # fmt: skip
    rows.append(("    same, p95", ms(_p95(on)), "", None))
    rows.append((f"    journal off (n={len(off)})", ms(statistics.median(off)), "", None))
    starts, stops = asyncio.run(sandbox_starts(n_starts))
    rows.append((f"(b) sandbox start (n={n_starts})", ms(statistics.median(starts)),
                 "< 100 ms median", statistics.median(starts) < 0.1))  # fmt: skip
    rows.append(("    sandbox shutdown", ms(statistics.median(stops)), "", None))
    load = load_context_in_child(100)
    base, peak = load["baseline_kb"] / 1024, load["peak_kb"] / 1024
    rows.append(("(c) load a 100 MB str context", f"{load['seconds']:.3f} s", "< 2 s",
                 load["seconds"] < 2.0))  # fmt: skip
    rows.append(("    host RSS before the string", f"{base:.0f} MiB", "", None))
    rows.append(("    host peak RSS after loading", f"{peak:.0f} MiB", "", None))
    rows.append(("    difference (the string is 95 MiB)", f"{peak - base:.0f} MiB", "", None))
    walls = [asyncio.run(batched(100, 0.2)) for _ in range(n_batches)]
    wall, ideal = statistics.median(walls), math.ceil(100 / 16) * 0.2
    rows.append((f"(d) llm_query_batched 100 x 200 ms (n={n_batches})", f"{wall:.3f} s",
                 f"<= {1.5 * ideal:.2f} s", wall <= 1.5 * ideal))  # fmt: skip
    rows.append(("    ideal ceil(100/16) x 200 ms", f"{ideal:.3f} s", "", None))
    rows.append(("    ratio measured / ideal", f"{wall / ideal:.2f}x", "<= 1.5x", None))
    return rows


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 2 else samples[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--child-load-context", type=int, metavar="MB", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_load_context:
        print(json.dumps(asyncio.run(_child_load(args.child_load_context))))
        return
    rows = measure(args.quick)
    width = max(len(r[0]) for r in rows)
    run = "quick" if args.quick else "full"
    print(f"recursa overhead ({run} run, Python {sys.version.split()[0]})")
    print(f"{'figure':<{width}}  {'measured':>12}  {'goal':<16} result")
    for label, value, goal, passed in rows:
        verdict = "" if passed is None else ("PASS" if passed else "MISS")
        print(f"{label:<{width}}  {value:>12}  {goal:<16} {verdict}")


if __name__ == "__main__":
    main()
