"""Live progress on stderr: a trace processor rendered with ``rich``.

It shows the run as it grows: the current iteration of the root and of each running child, LM
calls done and in flight, sub-calls and child runs, tokens and cost so far, and elapsed time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from recursa.trace.spans import Span

__all__ = ["LiveProgress"]


@dataclass
class _Counts:
    iteration: dict[int, int] = field(default_factory=dict)  # depth -> current iteration
    lm_done: int = 0
    lm_running: int = 0
    sub_done: int = 0
    sub_running: int = 0
    children_running: int = 0
    children_done: int = 0
    cells: int = 0
    cell_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    last_code: str = ""


class LiveProgress:
    """A :class:`~recursa.trace.spans.TraceProcessor` that draws a status panel."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.counts = _Counts()
        self.started = time.monotonic()
        self._spinner = Spinner("dots")
        self._live = Live(
            self, console=self.console, refresh_per_second=8, transient=True, redirect_stdout=False
        )

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(*exc)

    # ---- processor ------------------------------------------------------------------------------
    def on_start(self, span: Span) -> None:
        c = self.counts
        depth = int(span.attrs.get("depth", 0))
        if span.kind == "iteration":
            c.iteration[depth] = int(span.attrs.get("index", 0))
        elif span.kind == "lm_call":
            c.lm_running += 1
        elif span.kind == "sub_call":
            c.sub_running += int(span.attrs.get("n", 1))
        elif span.kind == "run" and span.parent_id is not None:
            c.children_running += 1
        elif span.kind == "cell":
            code = str(span.attrs.get("code") or "").strip()
            c.last_code = code.splitlines()[0][:80] if code else ""

    def on_end(self, span: Span) -> None:
        c = self.counts
        if span.kind == "lm_call":
            c.lm_running -= 1
            c.lm_done += 1
            c.input_tokens += int(span.attrs.get("input_tokens") or 0)
            c.output_tokens += int(span.attrs.get("output_tokens") or 0)
            cost = span.attrs.get("cost_usd")
            if cost is None and span.status == "ok":
                c.unpriced += 1
            c.cost_usd += float(cost or 0.0)
        elif span.kind == "sub_call":
            n = int(span.attrs.get("n", 1))
            c.sub_running -= n
            c.sub_done += n
        elif span.kind == "run" and span.parent_id is not None:
            c.children_running -= 1
            c.children_done += 1
            c.iteration.pop(int(span.attrs.get("depth", 1)), None)
        elif span.kind == "cell":
            c.cells += 1
            c.cell_errors += span.status != "ok"

    # ---- rendering ------------------------------------------------------------------------------
    def __rich__(self) -> RenderableType:
        c = self.counts
        elapsed = time.monotonic() - self.started
        its = " ".join(
            f"{'root' if d == 0 else f'd{d}'}:{i}" for d, i in sorted(c.iteration.items())
        )
        cost = f"${c.cost_usd:.4f}" + ("+?" if c.unpriced else "")
        line = Text.assemble(
            ("iteration ", "dim"),
            (its or "-", "bold"),
            ("  lm calls ", "dim"),
            f"{c.lm_done} done",
            (f", {c.lm_running} running" if c.lm_running else ""),
            ("  sub-calls ", "dim"),
            f"{c.sub_done}" + (f" (+{c.sub_running})" if c.sub_running else ""),
            ("  children ", "dim") if c.children_done or c.children_running else "",
            (
                f"{c.children_done}" + (f" (+{c.children_running})" if c.children_running else "")
                if c.children_done or c.children_running
                else ""
            ),
            ("  tokens ", "dim"),
            f"{c.input_tokens + c.output_tokens:,}",
            ("  cost ", "dim"),
            cost,
            ("  ", ""),
            (f"{elapsed:.0f}s", "dim"),
        )
        self._spinner.text = line
        rows: list[RenderableType] = [self._spinner]
        if c.last_code:
            rows.append(Text(f"  last cell: {c.last_code}", style="dim", overflow="ellipsis"))
        return Group(*rows)
