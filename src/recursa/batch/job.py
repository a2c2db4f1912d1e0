"""One item's work, the same in every executor: find its run, start or resume it, and turn
what happened into a result line.

An item's run id is derived from the batch id and the item (its id and a hash of what it asks):
a rerun of the same batch finds the journal of every run it started, so a run that finished
but whose line was never written is reported from its journal (no call repeated), and one that
was cut off is resumed with :meth:`RLM.aresume` (its journaled calls replayed, not paid again).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recursa.batch.items import Item
from recursa.errors import RecursaError
from recursa.journal import Journal, owner_alive, runs_dir

if TYPE_CHECKING:
    from recursa.batch.ratelimit import RateLimiter
    from recursa.rlm import RLM
    from recursa.types import Result

__all__ = ["Job", "batch_id_for", "failure_record", "item_rlm", "run_id_for", "run_item"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_FINISHED = ("final", "stopped")
OWNER_WAIT_S = 10.0


@dataclass(frozen=True)
class Job:
    """An item to run under ``run_id``; ``timeout_cap`` is what is left of the batch's wall
    clock when it starts (``None``: no batch wall clock)."""

    item: Item
    run_id: str
    timeout_cap: float | None = None


def batch_id_for(out: Path) -> str:
    """A batch's id from its results file: the same ``--out`` is the same batch."""
    return hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:10]


def run_id_for(batch_id: str, item: Item) -> str:
    """``batch-<batch>-<item id, file-safe>-<hash of id and content>``: found again by a rerun,
    never shared by two items, and new when an item's question or context changes."""
    readable = _UNSAFE.sub("_", item.id)[:40].strip("._") or "item"
    digest = hashlib.sha256(f"{item.id}\0{item.digest}".encode()).hexdigest()[:10]
    return f"batch-{batch_id}-{readable}-{digest}"


def item_rlm(rlm: RLM, item: Item, timeout_cap: float | None) -> RLM:
    """``rlm`` for one item: its limits (the item's overrides, the wall clock capped by what
    the batch has left). A shallow copy shares the models and their HTTP clients with every
    other item; it owns none of them, so finishing one run never closes a client others use
    (the batch closes them at its end)."""
    limits = item.limits_over(rlm.limits)
    if timeout_cap is not None:
        own = limits.timeout_s
        limits = dataclasses.replace(
            limits, timeout_s=max(0.001, timeout_cap if own is None else min(own, timeout_cap))
        )
    one = copy.copy(rlm)
    one._owned = []
    one.limits = limits
    one.config = dataclasses.replace(rlm.config, limits=limits)
    return one


def _journal_state(rlm: RLM, run_id: str) -> tuple[str | None, dict[str, Any] | None, Any]:
    """The journaled status, result and owner of ``run_id`` (``None``: no journal)."""
    if not rlm.journal or not (runs_dir(rlm.runs_root) / run_id / "journal.sqlite").is_file():
        return None, None, None
    journal = Journal.open(run_id, root=rlm.runs_root)
    try:
        status, result, owner = (journal.meta(k) for k in ("status", "result", "owner"))
    finally:
        journal.close()
    return str(status), result if isinstance(result, dict) else None, owner


async def _owner_gone(owner: Any) -> None:
    """Wait (a little) for the process that owned a run to be gone: a Ray worker killed a
    moment ago stays a zombie, still "alive", until its raylet reaps it, and the retried task
    may start before that. A live owner after the wait makes the resume fail, as it should."""
    for _ in range(int(OWNER_WAIT_S / 0.1)):
        if not owner_alive(owner):
            return
        await asyncio.sleep(0.1)


_KEPT = ("answer", "stop_reason", "partial", "detail", "iterations", "usage", "cost_usd",
         "wall_time_s", "replayed_calls", "retries", "cache_hits")  # fmt: skip


def _record(item: Item, run_id: str, data: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"id": item.id, "run_id": run_id}
    record.update({k: data.get(k) for k in _KEPT} if data else {})
    record.setdefault("answer", None)
    record.setdefault("stop_reason", "error")
    record["error"] = None
    record.update(extra)
    return record


def failure_record(
    item: Item, run_id: str, exc: BaseException, resumed: bool = False
) -> dict[str, Any]:
    partial: Result | None = exc.result if isinstance(exc, RecursaError) else None
    return _record(
        item,
        run_id,
        partial.to_dict() if partial is not None else None,
        resumed=resumed,
        error=f"{type(exc).__name__}: {exc}",
    )


async def run_item(rlm: RLM, job: Job, limiter: RateLimiter | None = None) -> dict[str, Any]:
    """Run (or resume, or report from its journal) one item; never raises for the item's own
    failures: they become the line's ``error``."""
    item, run_id = job.item, job.run_id
    started = time.monotonic()
    resumed = False
    try:
        one = item_rlm(rlm, item, job.timeout_cap)
        if limiter is not None:
            one.rate_limiter = limiter
        status, summary, owner = _journal_state(one, run_id)
        if status in _FINISHED and summary is not None:
            return _record(item, run_id, summary, resumed=True, source="journal")
        if status is not None:
            resumed = True
            if status == "running" and owner_alive(owner):
                await _owner_gone(owner)
            result = await one.aresume(run_id)
        else:
            result = await one.arun(item.question, *item.sources, run_id=run_id)
    except Exception as exc:  # one item's failure must not end a batch of thousands
        return failure_record(item, run_id, exc, resumed)
    record = _record(item, run_id, result.to_dict(), resumed=resumed)
    record["wall_time_s"] = round(time.monotonic() - started, 3)
    return record
