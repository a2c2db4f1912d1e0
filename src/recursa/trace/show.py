"""Render a trace as an indented tree in the terminal (``recursa trace show``)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.markup import escape as _escape_markup
from rich.table import Table
from rich.tree import Tree

from recursa._terminal import terminal_safe
from recursa.trace.jsonl import TraceFile
from recursa.trace.spans import Span
from recursa.trace.summary import SpanTree, TraceSummary, summarize
from recursa.types import Usage

__all__ = ["render_tree", "render_usage", "span_label"]


def escape(text: str) -> str:
    """Rich markup escaped and terminal control sequences removed: spans hold model text."""
    return _escape_markup(terminal_safe(text))


def _one_line(text: Any, n: int = 90) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _dur(span: Span) -> str:
    d = span.duration_s
    return "" if d is None else f" [dim]{d:.2f}s[/]"


def span_label(span: Span, full: bool = False, usage: Usage | None = None) -> str:
    """A one-line rich-markup summary of a span.

    For a ``run``, pass ``usage`` summed from the LM calls below it: the ``usage`` recorded on
    a child run span is the whole tree's running total when the child ended.
    """
    a = span.attrs
    err = f" [red]✗ {escape(_one_line(span.error, 120))}[/]" if span.status != "ok" else ""
    if span.kind == "run":
        totals: dict[str, Any] = usage.to_dict() if usage is not None else (a.get("usage") or {})
        head = f"[bold]{escape(span.name)}[/] {escape(str(a.get('model', '')))}"
        stop = a.get("stop_reason", "?")
        body = (
            f" · {stop} · {a.get('iterations', 0)} it · {totals.get('calls', 0)} calls · "
            f"{totals.get('total_tokens', 0):,} tok"
        )
        if totals.get("cost_usd"):
            body += f" · ${totals['cost_usd']:.4f}"
        q = f"\n[cyan]Q:[/] {escape(_one_line(a.get('question'), 200))}"
        ans = f"\n[green]A:[/] {escape(_one_line(a.get('answer'), 200))}" if a.get("answer") else ""
        return head + body + _dur(span) + err + q + ans
    if span.kind == "iteration":
        return f"[bold]{escape(span.name)}[/]" + _dur(span) + err
    if span.kind == "lm_call":
        tokens = f"{a.get('input_tokens', 0):,}→{a.get('output_tokens', 0):,} tok"
        cached = f" ({a['cached_tokens']:,} cached)" if a.get("cached_tokens") else ""
        if a.get("source") in ("cache", "journal"):
            cached += " [dim](cached)[/]" if a["source"] == "cache" else " [dim](replayed)[/]"
        cost = f" · ${a['cost_usd']:.5f}" if a.get("cost_usd") else ""
        label = f"[magenta]lm[/] {a.get('role', '')} {escape(span.name)} · {tokens}{cached}{cost}"
        if full and a.get("response"):
            label += f"\n[dim]{escape(str(a['response'])[:2000])}[/]"
        return label + _dur(span) + err
    if span.kind == "cell":
        code = str(a.get("code") or "")
        label = f"[yellow]cell[/] {escape(_one_line(code.splitlines()[0] if code else ''))}"
        if a.get("final") is not None:
            label += f" [green]FINAL: {escape(_one_line(a['final'], 80))}[/]"
        if full:
            label += f"\n[dim]{escape(code)}[/]"
            if a.get("stdout"):
                label += f"\n{escape(str(a['stdout'])[:2000])}"
        return label + _dur(span) + err
    if span.kind == "sub_call":
        n = a.get("n", 1)
        label = f"[blue]{escape(span.name)}[/]" + (f" ×{n}" if n != 1 else "")
        if a.get("op"):  # a list operation: its prompts, and the items it could not answer
            label += f" in {a.get('prompts', 0)} prompts"
            if a.get("failed"):
                label += f" [red]{a['failed']} unanswered[/]"
        return label + _dur(span) + err
    if span.kind == "compaction":
        return _compaction_label(span, full) + _dur(span) + err
    return escape(span.name) + _dur(span) + err


def _compaction_label(span: Span, full: bool) -> str:
    """``compaction 1 · 6 turns → summary · ~7,900→2,100 tok · 1,234 chars``."""
    a = span.attrs
    label = (
        f"[cyan]{escape(span.name)}[/] · {a.get('turns_removed', '?')} turns → summary · "
        f"~{a.get('tokens_before', 0):,}→{a.get('tokens_after', 0):,} tok of "
        f"{a.get('window', 0):,}"
    )
    if a.get("summary_chars") is not None:
        label += f" · {a['summary_chars']:,} chars"
    if full and a.get("summary"):
        label += f"\n[dim]{escape(str(a['summary'])[:2000])}[/]"
    return label


def render_tree(trace: TraceFile, *, full: bool = False) -> Tree:
    """The trace as a rich Tree; spans whose parent is missing hang from the top."""
    spans = SpanTree(trace.spans)
    top = Tree(f"[bold]trace[/] {escape(str(trace.header.get('run_id') or trace.path.name))}")
    stack: list[tuple[Tree, Span]] = [(top, s) for s in reversed(spans.roots)]
    while stack:  # iterative: a deep tree must not hit the recursion limit
        node, span = stack.pop()
        usage = spans.usage_below(span) if span.kind == "run" else None
        branch = node.add(span_label(span, full, usage))
        stack.extend((branch, c) for c in reversed(spans.children.get(span.id, [])))
    return top


def render_usage(trace: TraceFile | TraceSummary) -> Table:
    """Tokens and cost per model and per depth, summed from the trace's LM calls."""
    summary = trace if isinstance(trace, TraceSummary) else summarize(trace.spans)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col in ("", "calls", "input", "cached", "output", "cost"):
        table.add_column(col, justify="left" if not col else "right")

    def row(label: str, u: Usage, style: str = "") -> None:
        priced = not (u.calls and u.unpriced_calls == u.calls)
        cost = f"${u.cost_usd:.4f}" + ("+?" if u.unpriced_calls else "") if priced else "unpriced"
        cells = (f"{u.calls:,}", f"{u.input_tokens:,}", f"{u.cached_tokens:,}")
        table.add_row(escape(label), *cells, f"{u.output_tokens:,}", cost, style=style)

    for model, u in sorted(summary.by_model.items()):
        row(model, u)
    for depth, u in sorted(summary.by_depth.items()):
        row(f"depth {depth}", u, "dim")
    row("total", summary.usage, "bold")
    return table
