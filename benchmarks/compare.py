"""recursa against the other RLM implementations, on the same scenarios, against the same fake
model server, interleaved, so that anyone can rerun the comparison on their own machine.

Scenarios (see ``compare_cells.SCENARIOS``): startup to the first model request; 10 trivial
iterations; 100 ``llm_query_batched`` sub-calls at 200 ms; depth 2 (four concurrent children,
ten sub-calls each). Frameworks: recursa, and where installed ``rlms`` (``pip install
rlms==0.1.3``) and ``dspy`` (``dspy.RLM``; its Deno/Pyodide sandbox needs the network the first
time, else it runs with DSPy's ``LocalInterpreter``, and the header says which). Each framework
runs in a warm process of its own, after one unmeasured run (``--cold``: a fresh process per
run); rounds go recursa, rlms, dspy, recursa, ... so that a slow spell on the machine hits every
framework alike. The fake server runs in this process, on its own threads, so no framework
shares an event loop or a GIL with it. A run counts only if it answered ``done`` after exactly
the scenario's number of model requests (the same work in every framework).

For every scenario it prints the median, the range, the physical limit (the sum of the fake
server's latencies on the critical path: what an implementation with no overhead would take)
and median / limit.

Run: ``python benchmarks/compare.py`` (``--rounds 5``, ``--scenarios startup,depth2``,
``--frameworks recursa,rlms``, ``--cold``, ``--backlog 5``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import queue
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_cells import SCENARIOS, SUB, Scenario, responder
from compare_dspy import INTERPRETER_ENV, choose_interpreter
from recursa.testing import FakeLLMServer

CELLS = Path(__file__).resolve().parent / "compare_cells.py"
FRAMEWORKS = {"recursa": "recursa", "rlms": "rlm", "dspy": "dspy"}  # name -> import name
PACKAGES = {"recursa": "recursa", "rlms": "rlms", "dspy": "dspy"}
INSTALL = {"rlms": "pip install rlms==0.1.3", "dspy": "pip install dspy"}


@dataclass
class Cell:
    times: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(fw: str) -> str:
    try:
        return importlib.metadata.version(PACKAGES[fw])
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _header(frameworks: list[str]) -> None:
    cmd = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"machine: {_cpu()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}")
    versions = ", ".join(f"{fw} {_version(fw)}" for fw in frameworks)
    print(f"versions: python {platform.python_version()}, {versions}")
    print(f"command: {cmd}")


def available(frameworks: list[str]) -> list[str]:
    """The frameworks that can run here; a line for each that cannot, saying what to do."""
    ready = []
    for fw in frameworks:
        if importlib.util.find_spec(FRAMEWORKS[fw]) is None:
            print(f"{fw}: not installed: {INSTALL.get(fw, 'pip install ' + fw)} (skipped)")
            continue
        if fw == "dspy":
            kind, note = choose_interpreter()
            print(f"dspy: {note}" if kind else f"dspy: skipped: {note}")
            if kind is None:
                continue
            os.environ[INTERPRETER_ENV] = kind  # read by the dspy driver processes
        ready.append(fw)
    return ready


class Driver:
    """Where a framework's cells run: one warm process fed one cell per line (the default), or
    with ``cold`` a fresh process per cell. Its stderr goes to a file, read only on failure."""

    def __init__(self, fw: str, cold: bool, timeout_s: float) -> None:
        self.fw, self.cold, self.timeout_s = fw, cold, timeout_s
        self._err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by close())
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def _start(self) -> subprocess.Popen[str]:
        cmd = [sys.executable, str(CELLS), "--serve", self.fw]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True
        )
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(proc, self._lines), daemon=True).start()
        return proc

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # the process ended

    def run(self, scenario: str, base_url: str, tag: str) -> dict[str, Any]:
        if self.cold:
            cmd = [sys.executable, str(CELLS), self.fw, scenario, base_url, tag]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                return {"error": f"timed out after {self.timeout_s:.0f} s"}
            return _result(proc.stdout.splitlines(), proc.stderr)
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{scenario} {base_url} {tag}\n")
        self._proc.stdin.flush()
        seen: list[str] = []
        deadline = time.monotonic() + self.timeout_s
        while True:  # a framework may print lines of its own before the result
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                return {"error": f"timed out after {self.timeout_s:.0f} s"}
            if line is None:
                self._err.seek(0)
                return _result(seen, self._err.read())
            seen.append(line)
            out = _result([line], "")
            if "error" not in out or out["error"] != "no result line":
                return out

    def close(self, final: bool = False) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        if final:
            self._err.close()


def _result(lines: list[str], stderr: str) -> dict[str, Any]:
    for line in reversed(lines):
        try:
            out = json.loads(line)
        except ValueError:
            continue
        if isinstance(out, dict) and ("error" in out or "elapsed" in out):
            return out
    tail = stderr.strip().splitlines()
    return {"error": tail[-1][:200] if tail else "no result line"}


def run_cell(srv: FakeLLMServer, driver: Driver, scenario: Scenario) -> tuple[float | None, str]:
    """One run: (seconds, "") or (None, why it failed)."""
    tag = uuid.uuid4().hex[:12]
    before = len(srv.completions())
    out = driver.run(scenario.name, srv.base_url, tag)
    made = srv.completions()[before:]
    if "error" in out:
        return None, str(out["error"])[:200]
    if out["answer"] != "done":
        return None, f"answered {str(out['answer'])[:80]!r}, not 'done'"
    if len(made) != scenario.requests:
        subs = sum(r.last_user.startswith(SUB) for r in made)
        return None, (
            f"made {len(made)} model requests ({subs} sub-calls), not {scenario.requests}: "
            "it did other work than the script"
        )
    if scenario.measure == "elapsed":
        return float(out["elapsed"]), ""
    seen = [r.time for r in srv.requests if any(tag in m["content"] for m in r.messages)]
    if not seen:
        return None, "the server never saw its first request"
    return min(seen) - float(out["t0"]), ""


def _fmt(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def report(scenario: Scenario, results: dict[str, Cell]) -> None:
    limit = _fmt(scenario.limit_s) if scenario.limit_s else "0 (no latency)"
    print(f"\n{scenario.name}: {scenario.what}; physical limit {limit}")
    print(f"  {'framework':<10}{'median':>10}{'min-max':>20}{'median/limit':>14}  runs")
    for fw, cell in results.items():
        if not cell.times:
            print(f"  {fw:<10}{'failed':>10}  {cell.errors[0] if cell.errors else ''}")
            continue
        med = statistics.median(cell.times)
        span = f"{_fmt(min(cell.times))}-{_fmt(max(cell.times))}"
        ratio = f"{med / scenario.limit_s:.2f}x" if scenario.limit_s else "-"
        note = f"  ({len(cell.errors)} failed: {cell.errors[0]})" if cell.errors else ""
        print(f"  {fw:<10}{_fmt(med):>10}{span:>20}{ratio:>14}  {len(cell.times)}{note}")


def compare(scenarios: list[Scenario], frameworks: list[str], args: argparse.Namespace) -> None:
    drivers = {fw: Driver(fw, args.cold, args.timeout) for fw in frameworks}
    try:
        with FakeLLMServer(responder=responder, backlog=args.backlog) as srv:
            for driver in drivers.values():  # unmeasured: imports done, page cache warm
                run_cell(srv, driver, SCENARIOS["startup"])
            for scenario in scenarios:
                srv.latency_s = scenario.latency_s
                results = {fw: Cell() for fw in frameworks}
                for _ in range(args.rounds):
                    for fw, driver in drivers.items():
                        seconds, error = run_cell(srv, driver, scenario)
                        if seconds is None:
                            results[fw].errors.append(error)
                        else:
                            results[fw].times.append(seconds)
                report(scenario, results)
    finally:
        for driver in drivers.values():
            driver.close(final=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    p.add_argument(
        "--backlog",
        type=int,
        default=1024,
        help="the fake server's listen backlog (5 reproduces the 1 s stalls of dropped SYNs)",
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="a fresh process per run, so imports and first-use set-up count (default: one "
        "warm process per framework, after one unmeasured run)",
    )
    args = p.parse_args()
    names = [s for s in args.scenarios.split(",") if s]
    wanted = [f for f in args.frameworks.split(",") if f]
    unknown = [n for n in names if n not in SCENARIOS] + [f for f in wanted if f not in FRAMEWORKS]
    if unknown or args.rounds < 1:
        p.error(
            f"unknown scenario/framework {unknown}; scenarios: {', '.join(SCENARIOS)}; "
            f"frameworks: {', '.join(FRAMEWORKS)}; --rounds must be at least 1"
        )
    _header(wanted)
    mode = "a fresh process per run" if args.cold else "one warm process per framework"
    print(f"mode: {mode}; interleaved rounds: {args.rounds}; fake server backlog: {args.backlog}")
    frameworks = available(wanted)
    started = time.perf_counter()
    try:
        compare([SCENARIOS[n] for n in names], frameworks, args)
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    print(f"\nthe whole comparison took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
