"""A batch's progress on the terminal (rich): items done, failed and running, tokens, cost
and an ETA, then a summary. It is an ``on_event`` handler of :func:`recursa.batch.batch`; the
core never prints."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["BatchProgress", "summary_lines"]


class BatchProgress:
    """Live bar for ``total`` items (``skipped`` of them done by an earlier invocation)."""

    def __init__(self, console: Console, total: int) -> None:
        self.total = total
        self.counts = {"done": 0, "partial": 0, "failed": 0, "running": 0}
        self.tokens = 0
        self.cost = 0.0
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(self._line(), total=total)

    def __enter__(self) -> BatchProgress:
        self._progress.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def _line(self) -> str:
        c = self.counts
        return (
            f"done {c['done']} · partial {c['partial']} · failed {c['failed']} · "
            f"running {c['running']} · {self.tokens:,} tokens · ${self.cost:.4f}"
        )

    def event(self, kind: str, data: Any) -> None:
        """The ``on_event`` handler."""
        advance = 0
        if kind == "skip":
            advance = int(data)
        elif kind == "start":
            self.counts["running"] += 1
        elif kind == "result":
            self.counts["running"] = max(0, self.counts["running"] - 1)
            key = "failed" if data.get("error") else "partial" if data.get("partial") else "done"
            self.counts[key] += 1
            usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
            self.tokens += int(usage.get("total_tokens") or 0) if usage else 0
            cost = data.get("cost_usd")
            self.cost += float(cost) if isinstance(cost, (int, float)) else 0.0
            advance = 1
        self._progress.update(self._task, advance=advance, description=self._line())


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The end-of-batch summary as rich markup lines."""
    lines = [
        f"{summary['done']} final, {summary['partial']} partial, {summary['failed']} failed"
        f" in {summary['wall_s']:.1f}s; {summary['skipped']} already done",
        f"batch total: {summary['calls']:,} LM call(s), ${summary['cost_usd']:.4f}",
    ]
    if summary.get("left"):
        why = escape(str(summary.get("stopped") or "interrupted"))
        lines.append(
            f"[yellow]{summary['left']} item(s) not started:[/] {why}; "
            "run the same command again to go on"
        )
    return lines
