"""The bench harness: rows, resumption, bounded concurrency, failures, order; and the report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from recursa.bench.harness import (
    ROWS_FILE,
    BenchConfig,
    jobs_in_order,
    read_rows,
    row_key,
    run_bench,
)
from recursa.bench.methods import build_env
from recursa.bench.report import cells, markdown, write_report
from recursa.bench.tasks import make_tasks
from recursa.errors import ConfigError, LMServerError
from recursa.limits import Limits
from recursa.lm.base import BaseLM
from recursa.types import Completion, LMSettings, Message, Usage
from tests.test_bench_methods import needle_reply

pytest.importorskip("bm25s")  # the rag baseline (the bench extra)


class CountingLM(BaseLM):
    """Answers S-NIAH prompts after a short wait and records how many calls overlap."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.name = "scripted:counting"
        self.in_flight = 0
        self.peak = 0
        self.calls = 0
        self.fail_on = fail_on

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if self.fail_on and self.fail_on in messages[-1].content:
                raise LMServerError("503 from the fake server", model=self.name, status=503)
        finally:
            self.in_flight -= 1
        text = needle_reply(messages)
        return Completion(text, Usage(input_tokens=100, output_tokens=5, calls=1), self.name)


def config(tmp_path: Path, **kw) -> BenchConfig:
    base = {
        "benchmarks": ("niah",),
        "lengths": (2048, 4096),
        "methods": ("direct", "rag"),
        "out_dir": tmp_path / "run",
        "n": 3,
    }
    base.update(kw)
    return BenchConfig(**base)


def env(lm: BaseLM):
    return build_env(lm, window=8192, limits=Limits(max_iterations=3), rag_tokens=512)


async def test_rows_are_written_for_every_task_and_method(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    events: list[str] = []
    rows = await run_bench(cfg, env(CountingLM()), on_event=lambda kind, _: events.append(kind))
    assert len(rows) == 2 * 2 * 3
    on_disk = read_rows(cfg.out_dir / ROWS_FILE)
    assert [r["task_id"] for r in on_disk] == [r["task_id"] for r in rows]
    row = on_disk[0]
    for key in ("answer", "score", "usage", "cost_usd", "wall_time_s", "trace", "task_sha256"):
        assert key in row
    assert row["score"] == 1.0 and row["error"] is None and row["model"] == "scripted:counting"
    assert (cfg.out_dir / row["trace"]).exists()
    recorded = json.loads((cfg.out_dir / "config.json").read_text())
    assert recorded["latest"]["window_tokens"] == 8192 and len(recorded["invocations"]) == 1
    assert events[0] == "start" and events[-1] == "end" and events.count("row") == 12


async def test_a_rerun_resumes_without_redoing_finished_rows(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    await run_bench(cfg, env(CountingLM()))
    lm = CountingLM()
    assert await run_bench(cfg, env(lm)) == []
    assert lm.calls == 0
    # A killed run leaves a torn last line and misses rows: only the missing ones run again.
    path = cfg.out_dir / ROWS_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:40])
    rows = await run_bench(cfg, env(lm))
    assert len(rows) == 2 and lm.calls == 2
    keys = [row_key(r) for r in read_rows(path)]
    assert len(set(keys)) == 12


async def test_failures_become_error_rows_and_are_retried(tmp_path: Path) -> None:
    cfg = config(tmp_path, methods=("direct",), lengths=(2048,))
    rows = await run_bench(cfg, env(CountingLM(fail_on="Excerpts")))  # rag would fail; direct not
    assert all(r["error"] is None for r in rows)
    cfg = config(tmp_path, methods=("rag",), lengths=(2048,))
    rows = await run_bench(cfg, env(CountingLM(fail_on="Excerpts")))
    assert len(rows) == 3 and all("LMServerError" in r["error"] for r in rows)
    assert all(r["score"] == 0.0 for r in rows)
    retried = await run_bench(cfg, env(CountingLM()))
    assert len(retried) == 3 and all(r["error"] is None for r in retried)


async def test_concurrency_is_bounded(tmp_path: Path) -> None:
    lm = CountingLM()
    await run_bench(config(tmp_path, concurrency=3, methods=("direct",)), env(lm))
    assert lm.peak == 3
    lm = CountingLM()
    await run_bench(config(tmp_path / "b", concurrency=1, methods=("direct",)), env(lm))
    assert lm.peak == 1


def test_jobs_run_length_by_length_then_method_by_method() -> None:
    tasks = make_tasks("niah", [2048, 4096], 2, seed=0)
    jobs = [(t.length, m) for t, m in jobs_in_order(tasks, ["direct", "rlm"])]
    assert (
        jobs
        == [(2048, "direct")] * 2
        + [(2048, "rlm")] * 2
        + [(4096, "direct")] * 2
        + [(4096, "rlm")] * 2
    )


def test_config_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        config(tmp_path, concurrency=0)


async def test_report_table_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    cfg = config(tmp_path)
    await run_bench(cfg, env(CountingLM()))
    path = write_report(cfg.out_dir)
    text = path.read_text()
    assert "| method | 2k | 4k |" in text
    assert "| direct | 2k | 3 |" in text
    for name in ("niah-score-vs-length.png", "niah-cost-vs-score.png"):
        png = cfg.out_dir / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in text


def test_report_counts_cuts_and_errors() -> None:
    rows = [
        {"benchmark": "b", "method": "direct", "length": 8192, "length_label": "8k",
         "task_id": "t1", "score": 1.0, "notes": {"cut": True}, "wall_time_s": 2.0,
         "usage": {"total_tokens": 10}, "cost_usd": 0.0},
        {"benchmark": "b", "method": "direct", "length": 8192, "length_label": "8k",
         "task_id": "t2", "score": 0.0, "error": "LMError: x", "stop_reason": "error"},
    ]  # fmt: skip
    by_bench = cells(rows)
    (cell,) = by_bench["b"]
    assert cell.n == 2 and cell.mean("score") == 0.5 and cell.cut == 1 and cell.errors == 1
    text = markdown(by_bench)
    assert "cut to window 1/2" in text and "errors 1" in text


def test_report_without_rows(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rows\.jsonl"):
        write_report(tmp_path)
