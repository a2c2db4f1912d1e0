"""``batch()``: many questions, one executor, one rate limiter, one results file.

The driver (this module, in the caller's process) decides what runs: it reads the results
file, skips the ids already finished, hands the rest to the executor one at a time through a
:class:`Plan` (which stops handing out items once the batch's total cost, calls or wall clock
are spent), writes each result line once per id as it comes back, and yields it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from recursa.batch.items import Item, load_items, parse_items
from recursa.batch.job import Job, batch_id_for, run_id_for
from recursa.batch.ratelimit import RateLimits
from recursa.batch.results import ResultsWriter, journal_path_for, read_results
from recursa.errors import ConfigError
from recursa.rlm import new_run_id

if TYPE_CHECKING:
    from recursa.rlm import RLM

__all__ = ["BatchLimits", "Event", "Executor", "Plan", "batch", "make_executor"]

Event = tuple[str, Any]  # ("start", Job) or ("result", record)
EventFn = Callable[[str, Any], None]


class Executor(Protocol):
    """Where items run. ``run`` takes jobs from ``plan`` while it has room, reports each
    result to ``plan.finished`` and yields ``("start", job)`` and ``("result", record)``
    events; it never writes the results."""

    name: str

    def run(self, rlm: RLM, plan: Plan) -> Iterator[Event]: ...


@dataclass(frozen=True)
class BatchLimits:
    """Limits of the whole batch (``None``: none). Cost and calls count earlier invocations of
    the same batch too (their result lines); raise a limit to go on after it stopped a batch."""

    max_cost_usd: float | None = None
    max_llm_calls: int | None = None
    timeout_s: float | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


def _spent(record: Mapping[str, Any]) -> tuple[float, int]:
    usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
    cost = record.get("cost_usd")
    calls = usage.get("calls", 0) if isinstance(usage, dict) else 0
    return (float(cost) if isinstance(cost, (int, float)) else 0.0), int(calls or 0)


class Plan:
    """The items still to run, handed out one at a time while the batch's limits allow.
    Thread-safe: executors take from their own threads while the driver records results."""

    def __init__(self, jobs: list[Job], limits: BatchLimits, previous: Iterable[Mapping[str, Any]]):
        self._jobs = list(reversed(jobs))
        self.limits = limits
        self._lock = threading.Lock()
        self.cost, self.calls = 0.0, 0
        for record in previous:
            self._add(record)
        self._deadline = None if limits.timeout_s is None else time.monotonic() + limits.timeout_s
        self.stopped: str | None = None  # why items were left unstarted
        self._counted: set[str] = set()

    @property
    def rate_limits(self) -> RateLimits:
        lim = self.limits
        return RateLimits(
            requests_per_minute=lim.requests_per_minute,
            tokens_per_minute=lim.tokens_per_minute,
            max_llm_calls=lim.max_llm_calls,
            max_cost_usd=lim.max_cost_usd,
        )

    def spent(self) -> dict[str, Any]:
        """What earlier invocations spent, for the limiter's starting totals."""
        return {"spent_calls": self.calls, "spent_cost": self.cost}

    def _add(self, record: Mapping[str, Any]) -> None:
        cost, calls = _spent(record)
        self.cost += cost
        self.calls += calls

    def _why_not(self) -> str | None:
        lim = self.limits
        if lim.max_cost_usd is not None and self.cost >= lim.max_cost_usd:
            return f"the batch's ${lim.max_cost_usd:g} (--max-cost-total) is spent"
        if lim.max_llm_calls is not None and self.calls >= lim.max_llm_calls:
            return f"the batch's {lim.max_llm_calls} LM calls (--max-calls-total) are spent"
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return f"the batch's {lim.timeout_s:g}s (--timeout-total) are up"
        return None

    def take(self) -> Job | None:
        """The next job (its wall clock capped by what the batch has left), or ``None``."""
        with self._lock:
            if not self._jobs or self.stopped:
                return None
            self.stopped = self._why_not()
            if self.stopped:
                return None
            job = self._jobs.pop()
            if self._deadline is None:
                return job
            return replace(job, timeout_cap=self._deadline - time.monotonic())

    def finished(self, record: Mapping[str, Any]) -> None:
        """Count what an item spent. Executors call it as soon as a result is back, before
        taking the next job, so a spent budget starts nothing more; once per id."""
        with self._lock:
            if record["id"] not in self._counted:
                self._counted.add(record["id"])
                self._add(record)

    @property
    def left(self) -> int:
        return len(self._jobs)


def _outcome(record: Mapping[str, Any]) -> str:
    return "failed" if record.get("error") else "partial" if record.get("partial") else "done"


def make_executor(executor: str | Executor, workers: int | None, address: str | None) -> Executor:
    """``"local"`` or ``"ray"`` (or an executor object) as an executor."""
    if not isinstance(executor, str):
        return executor
    if executor == "local":
        from recursa.batch.local import LocalExecutor

        return LocalExecutor(workers)
    if executor == "ray":
        from recursa.batch.ray_executor import RayExecutor

        return RayExecutor(address=address, workers=workers)
    raise ConfigError(f"unknown executor {executor!r}: choose local or ray")


def _items(items: str | Path | Iterable[Item | Mapping[str, Any]]) -> list[Item]:
    if isinstance(items, (str, Path)):
        return load_items(items)
    parsed: list[Item] = []
    raw: list[str] = []
    for entry in items:
        if isinstance(entry, Item):
            parsed.append(entry)
        else:
            import json

            raw.append(json.dumps(dict(entry), default=str))
    parsed += parse_items(raw, source="items")
    ids = [i.id for i in parsed]
    if len(set(ids)) != len(ids):
        raise ConfigError("two items share an id: ids key the results, so each must be unique")
    return parsed


def batch(
    rlm: RLM,
    items: str | Path | Iterable[Item | Mapping[str, Any]],
    *,
    out: str | Path | None = None,
    executor: str | Executor = "local",
    workers: int | None = None,
    address: str | None = None,
    limits: BatchLimits | None = None,
    retry_failed: bool = False,
    batch_id: str | None = None,
    on_event: EventFn | None = None,
) -> Iterator[dict[str, Any]]:
    """Answer every item's question with ``rlm``; yield each result as it finishes.

    ``items``: a JSONL path, or item dicts / :class:`~recursa.batch.items.Item` objects.
    ``out``: the results file (``.jsonl``, or ``.parquet`` with pyarrow); with it, running the
    same batch again skips the ids it holds (failed ones too unless ``retry_failed``) and
    resumes unfinished runs from their journals. ``executor``: ``"local"`` (``workers`` items at
    once in this process) or ``"ray"`` (``address``: a cluster, ``"auto"``, or ``None`` for a
    local one). ``on_event(kind, data)`` sees ``skip`` (ids already done), ``start`` (a
    :class:`Job`), ``result`` (a record) and ``end`` (a summary dict).
    """
    emit = on_event or (lambda kind, data: None)
    todo = _items(items)
    chosen = make_executor(executor, workers, address)
    writer = ResultsWriter(out) if out is not None else None
    previous = read_results(journal_path_for(Path(out))) if out is not None else {}
    done = {i for i, r in previous.items() if not (retry_failed and r.get("error"))}
    if batch_id is None:
        batch_id = batch_id_for(Path(out)) if out is not None else new_run_id()
    jobs = [Job(it, run_id_for(batch_id, it)) for it in todo if it.id not in done]
    plan = Plan(jobs, limits or BatchLimits(), previous.values())
    emit("skip", len(todo) - len(jobs))
    started = time.monotonic()
    written: set[str] = set()
    counts = {"done": 0, "failed": 0, "partial": 0}
    try:
        if writer is not None:
            writer.open()
        for kind, data in chosen.run(rlm, plan):
            if kind == "result":
                if data["id"] in written:
                    continue  # a retried task that had finished after all: one line per id
                written.add(data["id"])
                if writer is not None:
                    writer.write(data)
                counts[_outcome(data)] += 1
                emit("result", data)
                yield data
            else:
                emit(kind, data)
    finally:
        if writer is not None:
            writer.close()
        emit("end", {**counts, "left": plan.left, "stopped": plan.stopped,
                     "skipped": len(todo) - len(jobs), "cost_usd": plan.cost,
                     "calls": plan.calls, "wall_s": time.monotonic() - started})  # fmt: skip
