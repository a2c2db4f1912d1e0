"""Spans and the tracer that hands them to processors.

A run is a tree of spans: ``run`` -> ``iteration`` -> (``lm_call``, ``cell`` -> (``sub_call`` ->
(``lm_call`` | child ``run``)) | ``tool``); a ``tool`` span is one call of the caller's tools.
Processors receive each span when it starts and when it ends; the JSONL writer, the CLI's live
progress and the OpenTelemetry bridge are processors.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["SPAN_KINDS", "Span", "TraceProcessor", "Tracer", "new_id"]

SPAN_KINDS = frozenset({"run", "iteration", "lm_call", "cell", "sub_call", "tool"})


def new_id() -> str:
    return secrets.token_hex(8)


@dataclass
class Span:
    """One timed step. ``attrs`` is a small JSON-able payload whose keys depend on ``kind``."""

    kind: str
    name: str
    id: str = field(default_factory=new_id)
    parent_id: str | None = None
    run_id: str | None = None
    start: float = field(default_factory=time.time)
    end: float | None = None
    status: str = "ok"
    error: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def duration_s(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "span",
            "id": self.id,
            "parent_id": self.parent_id,
            "run_id": self.run_id,
            "kind": self.kind,
            "name": self.name,
            "start": self.start,
            "end": self.end,
            "duration_s": self.duration_s,
            "status": self.status,
            "error": self.error,
            "attrs": self.attrs,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Span:
        return cls(
            kind=str(d["kind"]),
            name=str(d.get("name", d["kind"])),
            id=str(d["id"]),
            parent_id=d.get("parent_id"),
            run_id=d.get("run_id"),
            start=float(d["start"]),
            end=None if d.get("end") is None else float(d["end"]),
            status=str(d.get("status", "ok")),
            error=d.get("error"),
            attrs=dict(d.get("attrs") or {}),
        )


@runtime_checkable
class TraceProcessor(Protocol):
    """Receives spans as they start and end. Must be quick and must not raise."""

    def on_start(self, span: Span) -> None: ...

    def on_end(self, span: Span) -> None: ...


class Tracer:
    """Creates spans, keeps the finished ones, and notifies processors."""

    def __init__(self, processors: Iterable[TraceProcessor] = (), run_id: str | None = None):
        self.processors: list[TraceProcessor] = list(processors)
        self.run_id = run_id
        self.finished: list[Span] = []

    def add_processor(self, processor: TraceProcessor) -> None:
        self.processors.append(processor)

    def start(self, kind: str, name: str, parent: Span | None = None, **attrs: Any) -> Span:
        span = Span(
            kind=kind,
            name=name,
            parent_id=parent.id if parent else None,
            run_id=self.run_id,
            attrs=attrs,
        )
        for p in self.processors:
            p.on_start(span)
        return span

    def end(self, span: Span, *, error: str | None = None, **attrs: Any) -> Span:
        if span.end is not None:
            return span
        span.attrs.update(attrs)
        span.end = span.start + (time.perf_counter() - span._t0)
        if error is not None:
            span.status, span.error = "error", error
        self.finished.append(span)
        for p in self.processors:
            p.on_end(span)
        return span

    @contextmanager
    def span(
        self, kind: str, name: str, parent: Span | None = None, **attrs: Any
    ) -> Iterator[Span]:
        s = self.start(kind, name, parent, **attrs)
        try:
            yield s
        except BaseException as exc:
            self.end(s, error=f"{type(exc).__name__}: {exc}")
            raise
        else:
            self.end(s)
