"""rlms callbacks and its trajectory logger, fed by recursa's trace.

rlms takes four callbacks (``on_iteration_start/complete``, ``on_subcall_start/complete``) and
an ``RLMLogger`` that keeps each iteration (response, code blocks, their output). Here one
:class:`~recursa.trace.spans.TraceProcessor` watches the run's spans and calls them: an
``iteration`` span is an iteration, a ``run`` span below the root is a child RLM
(``rlm_query``), and the ``lm_call`` and ``cell`` spans under an iteration are its response and
code blocks. rlms swallows errors raised by callbacks; so does this processor, since a trace
processor must never raise.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recursa.trace.spans import Span

__all__ = ["Callbacks", "RLMLogger", "RLMSEvents", "metadata_record"]

PREVIEW_CHARS = 80  # rlms passes the first 80 characters of a child's prompt


@dataclass(frozen=True)
class Callbacks:
    """rlms' four callbacks, any of them ``None``."""

    on_subcall_start: Callable[[int, str, str], None] | None = None
    on_subcall_complete: Callable[[int, str, float, str | None], None] | None = None
    on_iteration_start: Callable[[int, int], None] | None = None
    on_iteration_complete: Callable[[int, int, float], None] | None = None


class _Record:
    """Something with ``to_dict()``: what rlms' logger methods take (duck-typed)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


def _quietly(fn: Callable[..., Any] | None, *args: Any) -> None:
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:  # rlms ignores callback errors; a trace processor must not raise
        pass


class RLMSEvents:
    """A trace processor that fires rlms callbacks and logs root iterations to ``logger``.

    ``names`` maps recursa model names (``openai:gpt-5``) to the names rlms users gave
    (``gpt-5``). ``logger`` is anything with rlms' ``RLMLogger`` methods (``log(iteration)``),
    this module's :class:`RLMLogger` included.
    """

    def __init__(
        self, callbacks: Callbacks, names: Mapping[str, str], logger: Any | None = None
    ) -> None:
        self.callbacks = callbacks
        self.names = names
        self.logger = logger
        self._responses: dict[str, Span] = {}  # iteration span id -> its root lm_call
        self._cells: dict[str, list[Span]] = {}  # iteration span id -> its cells

    def _model(self, span: Span) -> str:
        name = str(span.attrs.get("model", ""))
        return self.names.get(name) or name.partition(":")[2] or name

    def on_start(self, span: Span) -> None:
        depth = int(span.attrs.get("depth", 0) or 0)
        if span.kind == "iteration":
            _quietly(self.callbacks.on_iteration_start, depth, int(span.attrs.get("index", 0)))
        elif span.kind == "run" and depth > 0:
            preview = str(span.attrs.get("question", ""))[:PREVIEW_CHARS]
            _quietly(self.callbacks.on_subcall_start, depth, self._model(span), preview)

    def on_end(self, span: Span) -> None:
        depth = int(span.attrs.get("depth", 0) or 0)
        duration = span.duration_s or 0.0
        if span.kind == "lm_call" and span.attrs.get("role") == "root" and span.parent_id:
            self._responses[span.parent_id] = span
        elif span.kind == "cell" and span.parent_id:
            self._cells.setdefault(span.parent_id, []).append(span)
        elif span.kind == "iteration":
            index = int(span.attrs.get("index", 0))
            _quietly(self.callbacks.on_iteration_complete, depth, index, duration)
            entry = self._iteration_entry(span)
            if depth == 0 and self.logger is not None and hasattr(self.logger, "log"):
                _quietly(self.logger.log, _Record(entry))
        elif span.kind == "run" and depth > 0:
            error = span.error if span.status == "error" else None
            _quietly(self.callbacks.on_subcall_complete, depth, self._model(span), duration, error)

    def _iteration_entry(self, span: Span) -> dict[str, Any]:
        """One iteration as rlms' ``RLMIteration.to_dict()`` shapes it."""
        call = self._responses.pop(span.id, None)
        cells = self._cells.pop(span.id, [])
        blocks = [
            {
                "code": c.attrs.get("code", ""),
                "result": {
                    "stdout": c.attrs.get("stdout") or "",
                    "stderr": c.attrs.get("traceback") or "",
                    "locals": {},
                    "execution_time": c.attrs.get("elapsed_s"),
                    "rlm_calls": [],
                    "final_answer": c.attrs.get("final"),
                },
            }
            for c in cells
        ]
        final = next(
            (b["result"]["final_answer"] for b in blocks if b["result"]["final_answer"]), None
        )
        return {
            "prompt": call.attrs.get("prompt", "") if call else "",
            "response": call.attrs.get("response", "") if call else "",
            "code_blocks": blocks,
            "final_answer": final,
            "iteration_time": span.duration_s,
        }


class RLMLogger:
    """rlms' ``RLMLogger``: keeps the root's iterations of each ``completion()`` in memory
    (``get_trajectory()``, also set as ``completion.metadata``) and, with ``log_dir``, appends
    them to a JSON-lines file. recursa's own trace (``completion.result.trace_path``) holds more:
    every sub-call, child run, token and cost."""

    def __init__(self, log_dir: str | None = None, file_name: str = "rlm") -> None:
        self.log_dir = log_dir
        self.log_file_path: str | None = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            name = f"{file_name}_{stamp}_{uuid.uuid4().hex[:8]}.jsonl"
            self.log_file_path = os.path.join(log_dir, name)
        self._run_metadata: dict[str, Any] | None = None
        self._iterations: list[dict[str, Any]] = []

    def _write(self, entry: dict[str, Any]) -> None:
        if self.log_file_path:
            with open(self.log_file_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, default=str) + "\n")

    def log_metadata(self, metadata: Any) -> None:
        """Keep the run's configuration (once, as rlms does)."""
        if self._run_metadata is not None:
            return
        self._run_metadata = metadata.to_dict()
        self._write(
            {"type": "metadata", "timestamp": datetime.now().isoformat(), **self._run_metadata}
        )

    def log(self, iteration: Any) -> None:
        """Keep one iteration (anything with ``to_dict()``)."""
        entry = {
            "type": "iteration",
            "iteration": len(self._iterations) + 1,
            "timestamp": datetime.now().isoformat(),
            **iteration.to_dict(),
        }
        self._iterations.append(entry)
        self._write(entry)

    def clear_iterations(self) -> None:
        self._iterations = []

    def get_trajectory(self) -> dict[str, Any] | None:
        if self._run_metadata is None:
            return None
        return {"run_metadata": self._run_metadata, "iterations": list(self._iterations)}

    @property
    def iteration_count(self) -> int:
        return len(self._iterations)


def metadata_record(data: dict[str, Any]) -> _Record:
    """The run configuration as the ``log_metadata`` argument rlms loggers expect."""
    return _Record(data)
