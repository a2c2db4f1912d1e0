"""Sandbox figures for this machine: start time, cell and llm_query round trips per tier, and the
count of attacks from the adversarial suite each tier contains.

    python benchmarks/sandbox.py                 # every available tier, with the attack count
    python benchmarks/sandbox.py --no-attacks    # timings only
    python benchmarks/sandbox.py --tiers process --starts 20 --cells 500

Timings are medians (with the 10th-90th percentile range). The attack count runs
``tests/test_adversarial.py`` and ``tests/test_sandbox_attacks_rlm.py`` with pytest and counts
passed tests per tier (``tests/test_adversarial_sandbox.py``, which runs on the process tier
only, counts there).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from recursa.sandbox import SandboxConfig, SandboxWarning, sandbox_factory
from recursa.sandbox.docker import docker_status
from recursa.sandbox.pyodide import find_deno, wasm_status

ROOT = Path(__file__).resolve().parent.parent


def spread(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    lo, hi = ms[len(ms) // 10], ms[(len(ms) * 9) // 10 - (1 if len(ms) >= 10 else 0)]
    return f"{statistics.median(ms):8.2f} ms  (p10 {lo:.2f}, p90 {hi:.2f}, n={len(ms)})"


async def echo(fn: str, args: dict) -> str:
    return "ok"


async def measure(tier: str, config: SandboxConfig, starts: int, cells: int) -> dict[str, list]:
    factory = sandbox_factory(tier)
    start_times: list[float] = []
    hardening: list[float] = []
    for _ in range(starts):
        box = factory(config, echo)
        t0 = time.perf_counter()
        await box.start()
        start_times.append(time.perf_counter() - t0)
        if "no-new-privs" in getattr(box, "protections", []):  # seccomp/Landlock applied
            hardening.append(box.hardening_s)
        await box.shutdown()
    box = factory(config, echo)
    await box.start()
    try:
        await box.execute("x = 1")  # warm
        cell_times = []
        for _ in range(cells):
            t0 = time.perf_counter()
            await box.execute("x + 1")
            cell_times.append(time.perf_counter() - t0)
        r = await box.execute(
            f"import time\nts = []\nfor _ in range({cells}):\n    t0 = time.perf_counter()\n"
            "    llm_query('q')\n    ts.append(time.perf_counter() - t0)\nprint(ts)"
        )
        call_times = ast.literal_eval(r.stdout.strip())
    finally:
        await box.shutdown()
    figures = {"start": start_times, "cell": cell_times, "llm_query": call_times}
    if hardening:  # seccomp + Landlock, timed inside the worker
        figures["hardening"] = hardening
    return figures


def count_attacks(tiers: list[str]) -> dict[str, tuple[int, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_adversarial.py",
            "tests/test_sandbox_attacks_rlm.py",
            "tests/test_adversarial_sandbox.py",  # the review's findings, process tier only
            f"--junitxml={report}",
        ]
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False)
        cases = ET.parse(report).getroot().iter("testcase")
        passed: Counter[str] = Counter()
        total: Counter[str] = Counter()
        for case in cases:
            m = re.search(r"\[(process|wasm|docker)", case.get("name", ""))
            tier = m.group(1) if m else None
            if tier is None and case.get("classname", "").endswith("test_adversarial_sandbox"):
                tier = "process"
            if tier is None or tier not in tiers:
                continue
            if case.find("skipped") is not None:
                continue
            total[tier] += 1
            if case.find("failure") is None and case.find("error") is None:
                passed[tier] += 1
    return {t: (passed[t], total[t]) for t in tiers}


def available_tiers() -> list[str]:
    tiers = ["process"]
    if find_deno() and wasm_status()["pyodide_installed"]:
        tiers.append("wasm")
    if docker_status()["available"]:
        tiers.append("docker")
    return tiers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiers", nargs="*", default=None)
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--no-attacks", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore", SandboxWarning)
    tiers = args.tiers or available_tiers()
    print(f"python {sys.version.split()[0]} on {sys.platform}; tiers: {', '.join(tiers)}")
    for tier in tiers:
        figures = asyncio.run(measure(tier, SandboxConfig(), args.starts, args.cells))
        print(f"\n[{tier}]")
        for name, values in figures.items():
            print(f"  {name:<10} {spread(values)}")
    if "process" in tiers:
        bare = asyncio.run(measure("process", SandboxConfig(hardening=False), args.starts, 1))
        print(f"\n[process, hardening off]\n  {'start':<10} {spread(bare['start'])}")
    if not args.no_attacks:
        print("\nattacks contained (tests passed / run):")
        for tier, (ok, total) in count_attacks(tiers).items():
            print(f"  {tier:<8} {ok}/{total}")


if __name__ == "__main__":
    main()
