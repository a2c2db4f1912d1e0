"""A worker never outlives its host: SIGKILL the host mid-cell and the worker dies too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .waiting import wait_until

HOST = r"""
import asyncio
from recursa.sandbox import ProcessSandbox

async def main():
    sb = ProcessSandbox()
    await sb.start()
    print(sb.worker_pid, flush=True)
    await sb.execute("import time; time.sleep(120)", timeout_s=300)

asyncio.run(main())
"""


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is dead)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
    except FileNotFoundError:
        return False
    return "Z" not in state.split()[1]


def test_worker_dies_when_its_host_is_killed():
    host = subprocess.Popen([sys.executable, "-c", HOST], stdout=subprocess.PIPE, text=True)
    worker = int(host.stdout.readline())
    assert alive(worker)
    os.kill(host.pid, signal.SIGKILL)
    host.wait(timeout=10)
    wait_until(lambda: not alive(worker), "the worker to die with its host", timeout=10)
