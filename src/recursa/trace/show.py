"""Render a trace as an indented tree in the terminal (``recursa trace show``)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.tree import Tree

from recursa.trace.jsonl import TraceFile
from recursa.trace.spans import Span

__all__ = ["render_tree", "span_label"]


def _one_line(text: Any, n: int = 90) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _dur(span: Span) -> str:
    d = span.duration_s
    return "" if d is None else f" [dim]{d:.2f}s[/]"


def span_label(span: Span, full: bool = False) -> str:
    """A one-line rich-markup summary of a span."""
    a = span.attrs
    err = f" [red]✗ {escape(_one_line(span.error, 120))}[/]" if span.status != "ok" else ""
    if span.kind == "run":
        usage = a.get("usage") or {}
        head = f"[bold]{escape(span.name)}[/] {escape(str(a.get('model', '')))}"
        stop = a.get("stop_reason", "?")
        body = (
            f" · {stop} · {a.get('iterations', 0)} it · {usage.get('calls', 0)} calls · "
            f"{usage.get('total_tokens', 0):,} tok"
        )
        if usage.get("cost_usd"):
            body += f" · ${usage['cost_usd']:.4f}"
        q = f"\n[cyan]Q:[/] {escape(_one_line(a.get('question'), 200))}"
        ans = f"\n[green]A:[/] {escape(_one_line(a.get('answer'), 200))}" if a.get("answer") else ""
        return head + body + _dur(span) + err + q + ans
    if span.kind == "iteration":
        return f"[bold]{escape(span.name)}[/]" + _dur(span) + err
    if span.kind == "lm_call":
        tokens = f"{a.get('input_tokens', 0):,}→{a.get('output_tokens', 0):,} tok"
        cached = f" ({a['cached_tokens']:,} cached)" if a.get("cached_tokens") else ""
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
        return f"[blue]{escape(span.name)}[/]" + (f" ×{n}" if n != 1 else "") + _dur(span) + err
    return escape(span.name) + _dur(span) + err


def render_tree(trace: TraceFile, *, full: bool = False) -> Tree:
    """The trace as a rich Tree; spans whose parent is missing hang from the top."""
    children = trace.children()
    ids = {s.id for s in trace.spans}
    top = Tree(f"[bold]trace[/] {escape(str(trace.header.get('run_id') or trace.path.name))}")

    def add(node: Tree, span: Span) -> None:
        branch = node.add(span_label(span, full))
        for child in children.get(span.id, []):
            add(branch, child)

    for span in sorted(trace.spans, key=lambda s: s.start):
        if span.parent_id is None or span.parent_id not in ids:
            add(top, span)
    return top
