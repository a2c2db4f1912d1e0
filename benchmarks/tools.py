"""The round trip of one tool call from model code, over ScriptedLM and the process sandbox.

Model code calls a trivial tool (``echo(i)``, which returns its argument) ``--calls`` times in
a loop and times each call with ``time.perf_counter`` inside the worker: the figure is what
a call costs the model's code (call frame -> host checks -> tool in its thread -> journal ->
reply frame), without any LM latency. Measured for a plain and an ``async`` tool, with the run
journal on (each result is committed to SQLite before the reply) and off, and beside
``llm_query`` on a ScriptedLM that answers at once (the same frame path, through the LM gate).

Run: ``python benchmarks/tools.py`` (``--calls 200`` by default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from recursa import RLM, Limits, ScriptedLM

LOOP = """
import time, json
times = []
for i in range({calls}):
    t = time.perf_counter()
    assert {call} is not None
    times.append(time.perf_counter() - t)
print("TIMES " + json.dumps(times))
"""


def echo(i: int) -> int:
    """Return `i`."""
    return i


async def echo_async(i: int) -> int:
    """Return `i`."""
    return i


def measure(call: str, calls: int, *, journal: bool) -> list[float]:
    """Seconds per call, as model code timed them."""
    code = "```repl\n" + LOOP.format(calls=calls, call=call) + "\n```"
    root = ScriptedLM([code, "```repl\nFINAL('done')\n```"], name="root")
    sub = ScriptedLM(lambda messages: "ok", name="sub")
    with tempfile.TemporaryDirectory() as tmp:
        rlm = RLM(
            root,
            sub,
            tools={"echo": echo, "echo_async": echo_async},
            journal=journal,
            runs_root=Path(tmp),
            limits=Limits(max_iterations=3, max_tool_calls=None),
        )
        result = rlm.run("Benchmark the tool calls.", "context")
    cell = next(s for s in result.spans if s.kind == "cell")
    line = next(x for x in cell.attrs["stdout"].splitlines() if x.startswith("TIMES "))
    return list(json.loads(line.removeprefix("TIMES ")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    rows = [
        ("tool (sync), journal on", "echo(i)", True),
        ("tool (sync), journal off", "echo(i)", False),
        ("tool (async), journal off", "echo_async(i)", False),
        ("llm_query (ScriptedLM), journal off", "llm_query(str(i))", False),
    ]
    print(f"{'call':40} {'median ms':>10} {'p90 ms':>8}  ({args.calls} calls each)")
    for label, call, journal in rows:
        times = sorted(measure(call, args.calls, journal=journal))
        median = statistics.median(times) * 1000
        p90 = times[int(len(times) * 0.9)] * 1000
        print(f"{label:40} {median:10.3f} {p90:8.3f}")


if __name__ == "__main__":
    main()
