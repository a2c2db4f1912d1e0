"""Progress of a running RLM as a stream of small events, for clients that want to watch.

:class:`ProgressTracker` is a trace processor: it turns span starts and ends into
:class:`ProgressEvent` values and hands each to a callback. The OpenAI API streams them as
chunks, the MCP server as progress notifications. An event is emitted when an iteration starts,
a sub-call or child run starts, or a code cell finishes; LM calls only update the counters
(a batch of a hundred ``llm_query`` calls would otherwise flood the client).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from recursa.trace.spans import Span

__all__ = ["ProgressEvent", "ProgressTracker"]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of a run, with the run's totals so far.

    ``step`` counts events from 1 and only grows (MCP requires progress values to increase).
    """

    step: int
    kind: str  # "iteration" | "sub_call" | "child_run" | "cell"
    message: str
    depth: int
    iteration: int  # the root's current iteration
    lm_calls: int
    sub_calls: int
    tokens: int
    cost_usd: float
    elapsed_s: float

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["cost_usd"] = round(self.cost_usd, 6)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


class ProgressTracker:
    """A :class:`~recursa.trace.spans.TraceProcessor` that reports progress to ``emit``.

    ``emit`` is called on the event loop that runs the RLM and must not block (put the event
    on a queue).
    """

    def __init__(self, emit: Callable[[ProgressEvent], None]) -> None:
        self._emit = emit
        self._started = time.monotonic()
        self._step = 0
        self.iteration = 0
        self.lm_calls = 0
        self.sub_calls = 0
        self.tokens = 0
        self.cost_usd = 0.0

    def _event(self, kind: str, message: str, depth: int) -> None:
        self._step += 1
        self._emit(
            ProgressEvent(
                step=self._step,
                kind=kind,
                message=message,
                depth=depth,
                iteration=self.iteration,
                lm_calls=self.lm_calls,
                sub_calls=self.sub_calls,
                tokens=self.tokens,
                cost_usd=self.cost_usd,
                elapsed_s=time.monotonic() - self._started,
            )
        )

    def _totals(self) -> str:
        cost = f" · ${self.cost_usd:.4f}" if self.cost_usd else ""
        return f"{self.lm_calls} LM calls · {self.tokens:,} tokens{cost}"

    def on_start(self, span: Span) -> None:
        depth = int(span.attrs.get("depth", 0))
        if span.kind == "iteration":
            index = int(span.attrs.get("index", 0))
            where = "" if depth == 0 else f"child (depth {depth}) "
            if depth == 0:
                self.iteration = index
            last = " (last turn: answer now)" if span.attrs.get("last_turn") else ""
            self._event("iteration", f"{where}iteration {index}{last} · {self._totals()}", depth)
        elif span.kind == "sub_call":
            n = int(span.attrs.get("n", 1))
            self.sub_calls += n
            label = span.name + (f" ×{n}" if n != 1 else "")
            self._event("sub_call", f"{label} · {self._totals()}", depth)
        elif span.kind == "run" and span.parent_id is not None:
            self._event("child_run", f"child RLM started (depth {depth})", depth)

    def on_end(self, span: Span) -> None:
        a = span.attrs
        if span.kind == "lm_call":
            self.lm_calls += 1
            self.tokens += int(a.get("input_tokens") or 0) + int(a.get("output_tokens") or 0)
            self.cost_usd += float(a.get("cost_usd") or 0.0)
        elif span.kind == "cell":
            depth = int(a.get("depth", 0))
            status = "ok" if span.status == "ok" else f"error: {span.error or ''}"[:200]
            self._event("cell", f"code cell {a.get('index', '?')} ran ({status})", depth)
