"""``executor="ray"`` on a real local Ray cluster (127.0.0.1, no mocks of Ray) against the fake
OpenAI-compatible server. One cluster serves the whole module: each start costs seconds."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from recursa import RLM, Limits  # noqa: E402
from recursa.batch import BatchLimits, batch, read_results  # noqa: E402
from recursa.lm.scripted import ScriptedLM  # noqa: E402
from recursa.testing import FakeLLMServer  # noqa: E402
from tests.test_batch import items, responder  # noqa: E402

TASK_TITLE = "ray::run_batch_item"


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def server():
    with FakeLLMServer(responder=responder) as srv:
        yield srv


def make_rlm(srv: FakeLLMServer, tmp_path) -> RLM:
    return RLM(
        "openai:fake",
        base_url=srv.base_url,
        runs_root=tmp_path / "runs",
        limits=Limits(max_iterations=4),
    )


def test_items_run_as_ray_tasks_with_the_shared_limiter(cluster, server, tmp_path):
    out = tmp_path / "r.jsonl"
    limits = BatchLimits(requests_per_minute=100_000, tokens_per_minute=10_000_000)
    got = list(batch(make_rlm(server, tmp_path), items(6), out=out, executor="ray", workers=4,
                     limits=limits))  # fmt: skip
    assert sorted(r["id"] for r in got) == [f"i{k}" for k in range(6)]
    lines = read_results(out)
    assert {k: r["answer"] for k, r in lines.items()} == {f"i{k}": f"ans-i{k}" for k in range(6)}
    assert len(out.read_text().splitlines()) == 6
    assert len(server.completions()) == 12
    assert ray.is_initialized()  # a cluster the caller started is left running


def test_batch_totals_hold_across_workers(cluster, server, tmp_path):
    got = list(batch(make_rlm(server, tmp_path), items(4), executor="ray", workers=4,
                     limits=BatchLimits(max_llm_calls=3)))  # fmt: skip
    assert len(server.completions()) <= 3
    assert any(r["stop_reason"] == "max_llm_calls" for r in got)


def test_lm_objects_cannot_travel(cluster, tmp_path):
    rlm = RLM(ScriptedLM(["x"]), runs_root=tmp_path)
    with pytest.raises(Exception, match="models given by name"):
        list(batch(rlm, items(1), executor="ray"))


def _task_workers() -> list[int]:
    """Pids of Ray workers running an item now (Ray titles them after the task)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and cmdline.startswith(TASK_TITLE.encode()):
            found.append(int(entry.name))
    return found


def test_a_killed_worker_loses_and_duplicates_no_result(cluster, server, tmp_path):
    server.latency_s = 0.3
    out = tmp_path / "r.jsonl"
    ids = [f"i{k}" for k in range(8)]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            list(batch(make_rlm(server, tmp_path), items(8), out=out, executor="ray", workers=4))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    server.wait_for_requests(3, timeout_s=120)
    deadline = time.monotonic() + 60
    while not (victims := _task_workers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victims, "no Ray worker was running an item"
    os.kill(victims[0], signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive() and not errors
    lines = [line for line in out.read_text().splitlines() if line.strip()]
    written = sorted(json.loads(line)["id"] for line in lines)
    assert written == ids  # every id exactly once
    assert [r["error"] for r in read_results(out).values() if r["error"]] == []


def test_bench_run_uses_the_ray_executor(cluster, tmp_path):
    from recursa.bench.harness import ROWS_FILE, read_rows
    from recursa.cli import main
    from tests.conftest import repl
    from tests.test_bench_cli import GREP

    script = tmp_path / "model.json"
    script.write_text(json.dumps({"default": repl(GREP)}))
    out = tmp_path / "run"
    args = [
        "bench", "run", "-b", "niah", "--lengths", "2k", "--methods", "direct,rlm",
        "--model", f"scripted:{script}", "--n", "2", "--out", str(out), "--window", "4096",
        "--quiet", "--no-report", "--executor", "ray",
    ]  # fmt: skip
    assert main(args) == 0
    rows = read_rows(out / ROWS_FILE)
    assert len(rows) == 4 and not any(r["error"] for r in rows)
    assert {r["method"]: r["score"] for r in rows} == {"rlm": 1.0, "direct": 0.0}
    assert main(args) == 0  # resumed: every row is there already
    assert len(read_rows(out / ROWS_FILE)) == 4
