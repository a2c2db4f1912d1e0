"""Chat-format fine-tuning examples from successful traces (``recursa trace export --sft``).

Each root turn of a run becomes one example: the conversation the model saw (system prompt,
question with the context's metadata, its earlier replies and the REPL outputs it got back)
followed by the reply it wrote. That is how the RLM paper trained its small model to act as an
RLM. Only runs that ended the way the filter asks (``final`` by default, and a minimum
``score`` where bench runs recorded one) are used.

A trace can rebuild root turns when each root ``lm_call`` span carries ``new_messages`` (the
messages added to the conversation since the model's previous reply, kept whole) and an
unclipped ``response``; ``n_messages`` and ``response_chars`` let the exporter check that
nothing is missing. Traces without them are skipped with a reason, never guessed at.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recursa.errors import TraceError
from recursa.trace.jsonl import read_trace
from recursa.trace.spans import Span
from recursa.trace.summary import SpanTree

__all__ = [
    "SFTExample",
    "SFTFilter",
    "SFTReport",
    "examples_from_spans",
    "export_sft",
    "iter_examples",
    "trace_files",
]

ROLES = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True)
class SFTFilter:
    """Which runs become examples.

    Attributes:
        stop_reasons: a run must have ended with one of these (``final``: the model answered).
        min_score: when set, the root run must carry a ``score`` at least this high.
        children: also export the turns of child runs (each filtered by its own stop reason).
    """

    stop_reasons: frozenset[str] = frozenset({"final"})
    min_score: float | None = None
    children: bool = False


@dataclass(frozen=True)
class SFTExample:
    """One training example: ``messages`` ends with the assistant reply to learn."""

    messages: tuple[dict[str, str], ...]
    run_id: str | None
    depth: int
    turn: int
    score: float | None = None
    source: str = ""

    def to_dict(self, *, meta: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": [dict(m) for m in self.messages]}
        if meta:  # some fine-tuning APIs reject unknown keys, so metadata is opt-in
            out["metadata"] = {
                "run_id": self.run_id,
                "depth": self.depth,
                "turn": self.turn,
                "score": self.score,
                "source": self.source,
            }
        return out


@dataclass
class SFTReport:
    """What an export did: examples written, and why the traces or runs left out were."""

    examples: int = 0
    traces: int = 0
    traces_used: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


class _Skip(Exception):
    """A run that cannot (or must not) become examples; the message says why."""


def _root_call(tree: SpanTree, iteration: Span) -> Span | None:
    for s in tree.children.get(iteration.id, []):
        if s.kind == "lm_call" and s.attrs.get("role") == "root":
            return s
    return None


def _checked(messages: list[Any]) -> list[dict[str, str]]:
    """Messages from a trace as ``{"role", "content"}`` dicts; :class:`_Skip` if malformed."""
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or "content" not in m:
            raise _Skip("malformed root messages")
        out.append({"role": str(m["role"]), "content": str(m["content"])})
    return out


def _turns(tree: SpanTree, run: Span) -> list[list[dict[str, str]]]:
    """Every root turn of ``run`` as its full message list plus the reply; raise :class:`_Skip`."""
    # Root turns and compactions in the order they happened: a compaction replaces the
    # conversation with the one its span records, which the next root call then sends whole.
    steps = sorted(
        (s for s in tree.children.get(run.id, []) if s.kind in ("iteration", "compaction")),
        key=lambda s: s.start,
    )
    history: list[dict[str, str]] = []
    out: list[list[dict[str, str]]] = []
    compacted = False
    for it in steps:
        if it.kind == "compaction":
            if it.status != "ok" or not isinstance(it.attrs.get("messages"), list):
                raise _Skip("a compaction without its messages in the trace")
            history, compacted = _checked(it.attrs["messages"]), True
            continue
        call = _root_call(tree, it)
        if call is None or call.status != "ok" or "response" not in call.attrs:
            break  # the turn never got its reply (the budget ran out mid-call, an error)
        a = call.attrs
        new = a.get("new_messages")
        if not isinstance(new, list):
            raise _Skip("no full root messages in the trace (written by an older recursa)")
        if not compacted:  # after a compaction, its messages are the whole prompt already
            history.extend(_checked(new))
        compacted = False
        if a.get("n_messages") is not None and int(a["n_messages"]) != len(history):
            raise _Skip("root messages are missing from the trace")
        response = str(a.get("response") or "")
        if a.get("response_chars") is not None and int(a["response_chars"]) != len(response):
            raise _Skip("a root response was clipped in the trace")
        reply = {"role": "assistant", "content": response}
        out.append([*history, reply])
        history.append(reply)
    return out


def _score(run: Span) -> float | None:
    v = run.attrs.get("score")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def examples_from_spans(
    spans: Sequence[Span] | SpanTree,
    flt: SFTFilter | None = None,
    *,
    source: str = "",
    skipped: Counter[str] | None = None,
) -> list[SFTExample]:
    """The examples one trace yields under ``flt``; reasons for what it left out go to
    ``skipped`` (reason -> count)."""
    flt = flt or SFTFilter()
    skipped = skipped if skipped is not None else Counter()
    tree = spans if isinstance(spans, SpanTree) else SpanTree(spans)
    root = tree.root_run()
    if root is None:
        skipped["unfinished trace (no root run span)"] += 1
        return []
    score = _score(root)
    if str(root.attrs.get("stop_reason")) not in flt.stop_reasons:
        skipped[f"stop reason {root.attrs.get('stop_reason')}"] += 1
        return []
    if flt.min_score is not None and (score is None or score < flt.min_score):
        skipped["no score" if score is None else f"score below {flt.min_score:g}"] += 1
        return []
    runs = [root]
    if flt.children:
        runs += [s for s in tree.spans if s.kind == "run" and s is not root]
    examples: list[SFTExample] = []
    for run in runs:
        if run is not root and str(run.attrs.get("stop_reason")) not in flt.stop_reasons:
            skipped[f"child run stop reason {run.attrs.get('stop_reason')}"] += 1
            continue
        try:
            turns = _turns(tree, run)
        except _Skip as why:
            skipped[str(why)] += 1
            continue
        for i, messages in enumerate(turns, start=1):
            examples.append(
                SFTExample(
                    messages=tuple(messages),
                    run_id=run.run_id,
                    depth=int(run.attrs.get("depth") or 0),
                    turn=i,
                    score=score,
                    source=source,
                )
            )
    return examples


def trace_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders give every ``*.jsonl`` below them, in name order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*.jsonl") if q.is_file()))
        elif p.exists():
            out.append(p)
        else:  # a typo should stop the export, not shrink it silently
            raise TraceError(f"no such trace file or folder: {p}", path=p)
    return out


def iter_examples(
    paths: Iterable[str | Path], flt: SFTFilter, report: SFTReport, *, exclude: Path | None = None
) -> Iterator[SFTExample]:
    """Examples from every trace under ``paths``; unreadable traces are counted, not fatal."""
    for path in trace_files(paths):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue  # the output file, when it is written into a folder being exported
        report.traces += 1
        try:
            trace = read_trace(path)
        except TraceError:
            report.skipped["not a readable recursa trace"] += 1
            continue
        found = examples_from_spans(trace.spans, flt, source=str(path), skipped=report.skipped)
        report.traces_used += bool(found)
        yield from found


def export_sft(
    paths: Iterable[str | Path],
    out: str | Path,
    flt: SFTFilter | None = None,
    *,
    meta: bool = False,
) -> SFTReport:
    """Write the examples of every trace under ``paths`` to ``out`` (JSONL, one per line)."""
    report = SFTReport()
    target = Path(out)
    files = trace_files(paths)  # before the output exists: it may sit among the inputs
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8", errors="replace") as f:
        for ex in iter_examples(files, flt or SFTFilter(), report, exclude=target):
            f.write(json.dumps(ex.to_dict(meta=meta), ensure_ascii=False) + "\n")
            report.examples += 1
    return report
