"""benchmarks/fanout.py and benchmarks/http_clients.py run end to end on a short setting and
print the figures the issue asks for (a measurement no one can rerun is no measurement)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=BENCH.parent
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_fanout_prints_each_scenario_against_its_limit_and_its_floor() -> None:
    out = _run(
        str(BENCH / "fanout.py"), "--runs", "1", "--latency", "0.05",
        "--only", "startup", "--only", "batch100", "--only", "depth2_cap64",
    )  # fmt: skip
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert set(lines) == {"startup", "batch100", "depth2_cap64"}, out
    assert "goal <= 30 ms" in lines["startup"]
    for name, limit in (("batch100", 9 * 0.05), ("depth2_cap64", 5 * 0.05)):
        row = lines[name]
        assert f"of {limit:.2f} s" in row, row
        wall = float(re.search(r"median\s+([\d.]+) s", row).group(1))  # type: ignore[union-attr]
        floor = float(re.search(r"of the floor ([\d.]+) s", row).group(1))  # type: ignore[union-attr]
        assert wall >= limit and floor >= limit  # nothing beats the server's latency


def test_http_clients_compares_the_three_clients() -> None:
    out = _run(str(BENCH / "http_clients.py"), "--n", "8", "--rounds", "1", "--latency", "0.05")
    rows = [line for line in out.splitlines() if "ms a request" in line]
    assert len(rows) == 6, out  # three clients, fresh and warm
    assert any(row.strip().startswith("httpx over recursa's aiohttp transport") for row in rows)
