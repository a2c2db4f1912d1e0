"""Kill a real `recursa ask` with SIGKILL in the middle of a 50-prompt batch, resume it, and
check that nothing already answered was asked again and that the answer is right."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

from recursa.testing import FakeLLMServer

from .waiting import wait_until

N = 50
BATCH = (
    f"```repl\nanswers = llm_query_batched([f'item {{i}}' for i in range({N})])\n"
    "total = sum(int(a.split()[-1]) for a in answers)\nprint('batch done', total)\n```"
)


def reply(messages) -> str:
    last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    if last.startswith("item "):
        return "ans " + last.split()[-1]
    if "batch done" in last:
        return "```repl\nFINAL(str(total))\n```"
    return BATCH


def journaled_sub_answers(journal: Path) -> set[int]:
    conn = sqlite3.connect(journal)
    try:
        rows = conn.execute("SELECT response FROM lm_calls WHERE role = 'sub'").fetchall()
    finally:
        conn.close()
    import json

    return {int(json.loads(r[0])["text"].split()[-1]) for r in rows}


def wait_for_journal(journal: Path, at_least: int, proc: subprocess.Popen, timeout: float = 60):
    def far_enough() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            return journal.exists() and len(journaled_sub_answers(journal)) >= at_least
        except sqlite3.OperationalError:
            return False  # the table is being created

    wait_until(far_enough, f"{at_least} journaled sub-call answers", timeout=timeout, poll_s=0.05)


def test_kill_9_during_a_batch_then_resume(tmp_path):
    env = {**os.environ, "RECURSA_DATA_DIR": str(tmp_path / "data"), "OPENAI_API_KEY": "k"}
    with FakeLLMServer(responder=reply, latency_s=0.15) as srv:
        cmd = [
            sys.executable,
            "-m",
            "recursa",
            "ask",
            "-q",
            "--model",
            "openai:fake-model",
            "--base-url",
            srv.base_url,
            "--concurrency",
            "4",
            "--context",
            "-",
        ]
        proc = subprocess.Popen(
            [*cmd, "What is the total?"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.stdin.write(b"numbers from 0 to 49, one per item")
        proc.stdin.close()
        runs = tmp_path / "data" / "runs"

        def journal_appeared() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode()
            return runs.exists() and any(runs.glob("*/journal.sqlite"))

        wait_until(journal_appeared, "the run's journal to appear", timeout=30)
        run_id = next(runs.glob("*/journal.sqlite")).parent.name
        journal = runs / run_id / "journal.sqlite"
        wait_for_journal(journal, 12, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        before = journaled_sub_answers(journal)
        assert 12 <= len(before) < N, "the kill must land in the middle of the batch"
        seen_before = len(srv.requests)
        # Its owner is gone: the run is listed as dead, not "running" forever.
        listed = subprocess.run(
            [sys.executable, "-m", "recursa", "runs", "list"],
            env={**env, "COLUMNS": "200"},
            capture_output=True,
            timeout=60,
        )
        [line] = [ln for ln in listed.stdout.decode().splitlines() if run_id in ln]
        assert line.split()[1] == "dead", line

        resumed = subprocess.run(
            [sys.executable, "-m", "recursa", "ask", "-q", "--resume", run_id],
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert resumed.returncode == 0, resumed.stderr.decode()
        assert resumed.stdout.decode().strip() == str(sum(range(N)))

        requests = srv.requests
    items = Counter(r.last_user for r in requests if r.last_user.startswith("item "))
    # Every item answered (and journaled) before the kill was never asked again...
    for i in before:
        assert items[f"item {i}"] == 1, f"item {i} was asked {items[f'item {i}']} times"
    # ...and every item was asked at least once.
    assert set(items) == {f"item {i}" for i in range(N)}
    # The root's first turn was replayed, not asked again; only the final turn is new.
    roots = [r for r in requests if not r.last_user.startswith("item ")]
    assert len(roots) == 2
    assert len(requests) > seen_before
