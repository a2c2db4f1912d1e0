"""The harness: every (task, method) pair of a run, a bounded number at a time, one JSONL row
each, and resumption of an interrupted run without redoing the rows it finished.

A run folder holds ``config.json`` (the settings of the latest invocation), ``rows.jsonl``
(appended and flushed as each row finishes) and ``traces/`` (one trace per row). A row is
finished when it has no ``error``; its key is (benchmark, task id, task sha256, method, model,
sub-model), so changing a generator, a model or a method never reuses a stale row.

Jobs run length by length and, within a length, method by method and window by window: the
questions on one window follow each other, so prompt caches (the local model's KV cache above
all) reuse the window's text, and methods do not evict each other's cache.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recursa.bench.methods import MethodEnv, Outcome, run_method
from recursa.bench.scoring import score
from recursa.bench.tasks import Task, benchmark_names, make_tasks
from recursa.errors import ConfigError

__all__ = ["BenchConfig", "RowKey", "jobs_in_order", "read_rows", "row_key", "run_bench"]

ROWS_FILE = "rows.jsonl"
CONFIG_FILE = "config.json"
ANSWER_CHARS = 4000  # what a row keeps of an answer (the trace has it whole)
GOLD_ITEMS = 200  # a gold list longer than this (OOLONG-Pairs) is stored as its length

RowKey = tuple[str, str, str, str, str, str]
EventFn = Callable[[str, dict[str, Any]], None]
JobFn = Callable[["Task", str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class BenchConfig:
    """What to run. ``n`` is tasks per (benchmark, length); lengths are approximate tokens."""

    benchmarks: tuple[str, ...]
    lengths: tuple[int, ...]
    methods: tuple[str, ...]
    out_dir: Path
    n: int = 10
    seed: int = 0
    concurrency: int = 1
    data_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in config.json as given

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1 (got {self.concurrency})")
        if not self.benchmarks or not self.methods:
            raise ConfigError("name at least one benchmark and one method")
        unknown = [b for b in self.benchmarks if b not in benchmark_names()]
        if unknown:
            raise ConfigError(
                f"unknown benchmark(s) {', '.join(unknown)}; choose from: "
                f"{', '.join(benchmark_names())}"
            )


def row_key(row: dict[str, Any]) -> RowKey:
    return (
        str(row.get("benchmark")),
        str(row.get("task_id")),
        str(row.get("task_sha256")),
        str(row.get("method")),
        str(row.get("model")),
        str(row.get("sub_model")),
    )


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``rows.jsonl`` (a torn last line, from a killed run, is skipped)."""
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def latest_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key: the last one written (a retried error is replaced by its retry)."""
    by_key: dict[RowKey, dict[str, Any]] = {}
    for row in rows:
        by_key.pop(row_key(row), None)
        by_key[row_key(row)] = row
    return list(by_key.values())


def jobs_in_order(tasks: Sequence[Task], methods: Sequence[str]) -> list[tuple[Task, str]]:
    """(task, method) pairs: by benchmark and length, then method, then the generator's order."""
    groups: dict[tuple[str, int, str], list[Task]] = {}
    for t in tasks:
        groups.setdefault((t.benchmark, t.length, t.label), []).append(t)
    return [(t, m) for group in groups.values() for m in methods for t in group]


def _clip_gold(gold: Any) -> Any:
    if isinstance(gold, list) and len(gold) > GOLD_ITEMS:
        return {"items": len(gold), "stored": False}
    return gold


def make_row(task: Task, method: str, env: MethodEnv, seed: int) -> dict[str, Any]:
    return {
        "benchmark": task.benchmark,
        "task_id": task.task_id,
        "task_sha256": task.sha256,
        "method": method,
        "model": env.root_lm.name,
        "sub_model": env.sub_lm.name,
        "length": task.length,
        "length_label": task.label,
        "context_chars": task.context_chars,
        "window": task.window,
        "seed": seed,
        "question": task.question[:400],
        "gold": _clip_gold(task.gold),
        "meta": dict(task.meta),
    }


def _finish_row(row: dict[str, Any], out: Outcome, value: float, run_dir: Path) -> None:
    usage = out.usage
    trace = out.trace_path
    if trace is not None:
        try:
            trace = Path(trace).resolve().relative_to(run_dir.resolve())
        except ValueError:
            pass
    row.update(
        answer=out.answer[:ANSWER_CHARS],
        score=value,
        stop_reason=out.stop_reason,
        iterations=out.iterations,
        usage=usage.to_dict(),
        cost_usd=None if usage.calls and usage.unpriced_calls == usage.calls else usage.cost_usd,
        cache_hits=out.cache_hits,
        saved_usd=round(out.saved_usd, 8),
        wall_time_s=round(out.wall_time_s, 3),
        trace=str(trace) if trace else None,
        notes=out.notes,
        error=None,
    )


async def _run_job(task: Task, method: str, env: MethodEnv, config: BenchConfig) -> dict[str, Any]:
    row = make_row(task, method, env, config.seed)
    started = time.monotonic()

    def score_fn(answer: str) -> float:
        return score(task.scoring, answer, task.gold)

    try:
        out = await run_method(method, task, env, score_fn)
    except ConfigError:
        raise  # a missing extra or key fails every task alike: stop and say so once
    except Exception as exc:  # one failed task must not end a run of hours; the row says why
        row.update(
            answer="",
            score=0.0,
            stop_reason="error",
            wall_time_s=round(time.monotonic() - started, 3),
            error=f"{type(exc).__name__}: {exc}",
        )
        return row
    _finish_row(row, out, score_fn(out.answer), config.out_dir)
    return row


def _write_config(config: BenchConfig, env: MethodEnv) -> None:
    """Record this invocation in ``config.json`` (a run folder may be filled by several)."""
    data = asdict(config)
    data.update(
        out_dir=str(config.out_dir),
        data_dir=str(config.data_dir) if config.data_dir else None,
        model=env.root_lm.name,
        sub_model=env.sub_lm.name,
        window_tokens=env.window_tokens,
        window_source=env.window_source,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    path = config.out_dir / CONFIG_FILE
    try:
        history = json.loads(path.read_text()).get("invocations", [])
    except (OSError, ValueError, AttributeError):
        history = []
    record = {"latest": data, "invocations": [*history, data]}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")


def build_tasks(config: BenchConfig) -> list[Task]:
    tasks: list[Task] = []
    for name in config.benchmarks:
        tasks += make_tasks(name, config.lengths, config.n, config.seed, config.data_dir)
    return tasks


def _pending(
    config: BenchConfig, env: MethodEnv, tasks: Sequence[Task], rows: list[dict[str, Any]]
) -> tuple[list[tuple[Task, str]], list[dict[str, Any]]]:
    """The jobs still to run, in order, and this plan's rows already finished."""

    def key(task: Task, method: str) -> RowKey:
        return row_key(make_row(task, method, env, config.seed))

    previous = latest_rows(rows)
    done = {row_key(r) for r in previous if not r.get("error")}
    jobs = [(t, m) for t, m in jobs_in_order(tasks, config.methods) if key(t, m) not in done]
    planned = {key(t, m) for t in tasks for m in config.methods}
    finished = [r for r in previous if row_key(r) in planned and not r.get("error")]
    return jobs, finished


async def run_bench(
    config: BenchConfig,
    env: MethodEnv,
    *,
    tasks: Sequence[Task] | None = None,
    on_event: EventFn | None = None,
    run_job: JobFn | None = None,
) -> list[dict[str, Any]]:
    """Run every (task, method) not finished yet; return the rows written by this call.
    ``run_job(task, method)`` runs one job elsewhere (a Ray task: :mod:`recursa.batch
    .bench_ray`); this process still writes every row."""
    emit = on_event or (lambda kind, data: None)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    env.trace_dir = config.out_dir / "traces"
    tasks = list(tasks) if tasks is not None else build_tasks(config)
    rows_path = config.out_dir / ROWS_FILE
    jobs, finished = _pending(config, env, tasks, read_rows(rows_path))
    _write_config(config, env)
    emit("start", {"total": len(jobs) + len(finished), "finished": finished, "todo": len(jobs)})
    queue: asyncio.Queue[tuple[Task, str]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    written: list[dict[str, Any]] = []

    with rows_path.open("a", encoding="utf-8") as out:
        if out.tell() and not rows_path.read_bytes().endswith(b"\n"):
            out.write("\n")  # a killed run's torn last line must not swallow the next row

        async def worker() -> None:
            while True:
                try:
                    task, method = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                emit("begin", {"task": task, "method": method})
                if run_job is not None:
                    row = await run_job(task, method)
                else:
                    row = await _run_job(task, method, env, config)
                row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                out.flush()  # a killed run keeps every finished row
                written.append(row)
                emit("row", {"row": row})

        await asyncio.gather(*(worker() for _ in range(min(config.concurrency, len(jobs)) or 1)))
    emit("end", {"rows": written})
    return written
