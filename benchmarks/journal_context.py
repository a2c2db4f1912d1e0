"""What journaling a large context costs a run: wall time and the host's peak memory.

For a 10 MB and a 100 MB context, given as a ``str`` and as a file, one run of one turn
(a scripted root model that answers ``FINAL`` at once) with the run journal on and off. Each
run happens in a fresh child process, so its peak RSS (``ru_maxrss``) is that run's alone; the
runs are interleaved (on, off, on, off...) so that a busy machine slows both alike. The wall
time covers loading the context (reading the file) and the whole run, journal included (a run
returns only once its journal is complete).

Goal (issue 19): journal on <= 1.1x journal off in wall time, and peak RSS <= 1.2x.

With the default latency of 0 the model answers at once, so whatever the journal makes the
first cell wait for shows in full; ``--latency 0.5`` shows a run whose first request takes as
long as a real model's does.

Run: ``python benchmarks/journal_context.py`` (``--n 5`` repetitions, ``--sizes 10,100``,
``--kinds str``, ``--latency 0.5``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LINE = "2026-11-23T10:00:00Z INFO GET /v1/items served in 12 ms by worker 7".ljust(99) + "\n"
REPLY = '```repl\nFINAL("done")\n```'


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _child(
    kind: str, mb: float, journal: bool, file: str, runs: str, latency: float
) -> dict[str, Any]:
    from recursa import RLM, ScriptedLM, load_context

    baseline = _rss_kb()
    rlm = RLM(ScriptedLM(REPLY, latency_s=latency), journal=journal, runs_root=runs)
    # Built once at its full size: a slice or a concatenation would hold a second copy.
    text = LINE * round(mb * 10_000) if kind == "str" else None
    t0 = time.perf_counter()
    ctx = load_context(text if text is not None else Path(file))
    result = await rlm.arun("Benchmark: answer at once.", ctx)
    wall = time.perf_counter() - t0
    if result.answer != "done":
        raise RuntimeError(f"the benchmark run did not finish: {result.stop_reason}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"wall_s": wall, "baseline_kb": baseline, "peak_kb": peak}


def run_child(kind: str, mb: float, journal: bool, file: Path, latency: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as runs:
        args = [kind, str(mb), "on" if journal else "off", str(file), runs, str(latency)]
        proc = subprocess.run(
            [sys.executable, __file__, "--child", *args],
            capture_output=True,
            text=True,
            timeout=600,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"the child run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(kind: str, mb: float, n: int, file: Path, latency: float) -> list[str]:
    samples: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(n):
        for journal in (True, False):
            samples[journal].append(run_child(kind, mb, journal, file, latency))
    wall = {j: statistics.median(s["wall_s"] for s in samples[j]) for j in samples}
    peak = {j: statistics.median(s["peak_kb"] for s in samples[j]) / 1024 for j in samples}
    spread = {
        j: f"{min(s['wall_s'] for s in samples[j]):.3f}-{max(s['wall_s'] for s in samples[j]):.3f}"
        for j in samples
    }
    wall_x, rss_x = wall[True] / wall[False], peak[True] / peak[False]
    label = f"{mb:g} MB {kind}"
    return [
        f"{label:<12} wall on {wall[True]:.3f} s ({spread[True]})  off {wall[False]:.3f} s "
        f"({spread[False]})  ratio {wall_x:.2f}x {'PASS' if wall_x <= 1.1 else 'MISS'} "
        f"(+{wall[True] - wall[False]:.3f} s)",
        f"{'':<12} peak RSS on {peak[True]:.0f} MiB  off {peak[False]:.0f} MiB  "
        f"ratio {rss_x:.2f}x {'PASS' if rss_x <= 1.2 else 'MISS'}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="runs per cell (median reported)")
    ap.add_argument(
        "--sizes",
        default="0.01,10,100",
        help="context sizes in MB, comma-separated (0.01: what the journal costs at all)",
    )
    ap.add_argument("--kinds", default="str,file", help="str, file or both")
    ap.add_argument(
        "--latency", type=float, default=0.0, help="the root model's latency in seconds"
    )
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, mb, journal, file, runs, latency = args.child
        out = asyncio.run(_child(kind, float(mb), journal == "on", file, runs, float(latency)))
        print(json.dumps(out))
        return
    print(
        f"journal context cost (n={args.n} per cell, medians, root model latency "
        f"{args.latency:g} s, Python {sys.version.split()[0]})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for mb in (float(s) for s in args.sizes.split(",")):
            file = Path(tmp) / f"context-{mb}mb.log"
            file.write_text(LINE * round(mb * 10_000))
            for kind in args.kinds.split(","):
                for line in measure(kind, mb, args.n, file, args.latency):
                    print(line, flush=True)


if __name__ == "__main__":
    main()
