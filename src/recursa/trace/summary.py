"""What a trace adds up to: totals recomputed from its ``lm_call`` spans, and its tree.

The ``lm_call`` spans are the ledger: the gate writes one per call, with the usage it charged
to the budget. Summing them per model, depth and role gives the same figures as
:class:`~recursa.types.Result` (the cost tests hold the two to that), and the viewer and
``recursa trace show`` use these sums rather than the ``usage`` recorded on ``run`` spans,
which is the whole tree's running total at the moment that run ended.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recursa.trace.spans import Span
from recursa.types import Usage

__all__ = ["SpanTree", "TraceSummary", "call_usage", "summarize"]


def call_usage(span: Span) -> Usage | None:
    """The usage one ``lm_call`` span charged, or ``None`` for a call that charged nothing.

    A call that failed (or was cut off by a timeout) never returned usage, so it was not
    charged; neither is it counted here.
    """
    a = span.attrs
    if span.kind != "lm_call" or "input_tokens" not in a:
        return None
    cost = a.get("cost_usd")
    return Usage(
        input_tokens=int(a.get("input_tokens") or 0),
        output_tokens=int(a.get("output_tokens") or 0),
        cached_tokens=int(a.get("cached_tokens") or 0),
        calls=1,
        cost_usd=float(cost or 0.0),
        unpriced_calls=1 if cost is None else 0,
    )


class SpanTree:
    """Spans indexed by id and by parent, children in start order."""

    def __init__(self, spans: Iterable[Span]) -> None:
        self.spans: list[Span] = sorted(spans, key=lambda s: (s.start, s.end or s.start))
        self.by_id: dict[str, Span] = {s.id: s for s in self.spans}
        self.children: dict[str | None, list[Span]] = defaultdict(list)
        for s in self.spans:
            parent = s.parent_id if s.parent_id in self.by_id else None
            self.children[parent].append(s)

    @property
    def roots(self) -> list[Span]:
        """Spans with no parent in the trace (one ``run`` for a complete trace)."""
        return list(self.children.get(None, []))

    def root_run(self) -> Span | None:
        """The depth-0 ``run`` span; ``None`` when the run never ended (a crash)."""
        runs = [s for s in self.roots if s.kind == "run"]
        return runs[0] if runs else None

    def walk(self, span: Span) -> Iterable[Span]:
        """``span`` and every span below it, depth first."""
        stack = [span]
        while stack:
            s = stack.pop()
            yield s
            stack.extend(reversed(self.children.get(s.id, [])))

    def usage_below(self, span: Span) -> Usage:
        """What the LM calls in ``span``'s subtree cost (a child run's own usage, for one)."""
        total = Usage()
        for s in self.walk(span):
            u = call_usage(s)
            if u is not None:
                total = total + u
        return total


@dataclass(frozen=True)
class TraceSummary:
    """One trace at a glance: the root run's outcome and usage summed from its LM calls."""

    answer: str | None
    stop_reason: str | None
    detail: str
    iterations: int
    wall_time_s: float
    usage: Usage
    by_model: dict[str, Usage] = field(default_factory=dict)
    by_depth: dict[int, Usage] = field(default_factory=dict)
    by_role: dict[str, Usage] = field(default_factory=dict)
    recorded_usage: Usage | None = None  # what the root run span says it spent
    complete: bool = True  # False when the root run span is missing (the run crashed)
    failed_calls: int = 0
    child_runs: int = 0
    spans: int = 0
    score: float | None = None
    cache_hits: int = 0  # calls answered from the call cache (charged nothing)
    replayed_calls: int = 0  # calls answered from the journal when a run was resumed

    @property
    def consistent(self) -> bool:
        """The run's recorded usage equals the sum of its LM calls (rounded like the writer)."""
        r, u = self.recorded_usage, self.usage
        if r is None:
            return True
        # Costs are summed in a different order here than in the budget: compare them loosely.
        same_counts = (r.input_tokens, r.output_tokens, r.cached_tokens, r.calls) == (
            u.input_tokens,
            u.output_tokens,
            u.cached_tokens,
            u.calls,
        )
        return (
            same_counts
            and r.unpriced_calls == u.unpriced_calls
            and math.isclose(r.cost_usd, u.cost_usd, rel_tol=1e-9, abs_tol=1e-8)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "stop_reason": self.stop_reason,
            "detail": self.detail,
            "iterations": self.iterations,
            "wall_time_s": round(self.wall_time_s, 4),
            "usage": self.usage.to_dict(),
            "by_model": {k: v.to_dict() for k, v in sorted(self.by_model.items())},
            "by_depth": {str(k): v.to_dict() for k, v in sorted(self.by_depth.items())},
            "by_role": {k: v.to_dict() for k, v in sorted(self.by_role.items())},
            "recorded_usage": None
            if self.recorded_usage is None
            else self.recorded_usage.to_dict(),
            "consistent": self.consistent,
            "complete": self.complete,
            "failed_calls": self.failed_calls,
            "child_runs": self.child_runs,
            "spans": self.spans,
            "score": self.score,
            "cache_hits": self.cache_hits,
            "replayed_calls": self.replayed_calls,
        }


def summarize(spans: Sequence[Span] | SpanTree) -> TraceSummary:
    """Sum a trace's LM calls per model, depth and role, and read the root run's outcome."""
    tree = spans if isinstance(spans, SpanTree) else SpanTree(spans)
    total = Usage()
    by_model: dict[str, Usage] = defaultdict(Usage)
    by_depth: dict[int, Usage] = defaultdict(Usage)
    by_role: dict[str, Usage] = defaultdict(Usage)
    failed = children = 0
    sources: dict[str, int] = defaultdict(int)
    for s in tree.spans:
        if s.kind == "run" and int(s.attrs.get("depth") or 0) > 0:
            children += 1
        u = call_usage(s)
        if u is None:
            failed += s.kind == "lm_call"
            continue
        total = total + u
        sources[str(s.attrs.get("source") or "model")] += 1
        by_model[str(s.attrs.get("model") or s.name)] += u
        by_depth[int(s.attrs.get("depth") or 0)] += u
        by_role[str(s.attrs.get("role") or "?")] += u
    run = tree.root_run()
    a = run.attrs if run else {}
    if run is not None:
        wall = run.duration_s or 0.0
    elif tree.spans:  # no run span: measure what was written
        wall = max(s.end or s.start for s in tree.spans) - min(s.start for s in tree.spans)
    else:
        wall = 0.0
    recorded = a.get("usage")
    score = a.get("score")
    return TraceSummary(
        answer=a.get("answer"),
        stop_reason=a.get("stop_reason"),
        detail=str(a.get("detail") or ""),
        iterations=int(a.get("iterations") or 0),
        wall_time_s=wall,
        usage=total,
        by_model=dict(by_model),
        by_depth=dict(by_depth),
        by_role=dict(by_role),
        recorded_usage=Usage.from_dict(recorded) if isinstance(recorded, dict) else None,
        complete=run is not None,
        failed_calls=failed,
        child_runs=children,
        spans=len(tree.spans),
        score=float(score) if isinstance(score, int | float) else None,
        cache_hits=sources["cache"],
        replayed_calls=sources["journal"],
    )
