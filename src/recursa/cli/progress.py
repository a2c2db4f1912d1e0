"""Live progress on stderr: the run's tree as it grows, drawn with ``rich``.

::

    ⠹ iteration 3 · 14 LM calls (5 running) · 18,204 tokens (2,048 cached) · $0.0123 · 21s
    └── cell 1: chunks = [context[i:i+50_000] for i in range(0, len(context), 50_000)]
        └── rlm_query_batched 3/8 done, 4 running, 1 queued
            ├── child 4 d1 · iteration 2 · hits = re.findall(r"ERROR .*", context)
            └── … 3 more children running

When the run ends the tree goes and one line stays: ``run: <the top line> · N sub-call items``.

The processor methods run on the event loop for every span start and end, so they only update
a few counters and dicts under a lock; the tree is built on rich's refresh thread, a few times
a second, from a snapshot taken under the same lock.

Everything shown comes from the model (code, names), so it goes through :func:`terminal_safe`
first: a model must not be able to write escape sequences to the user's terminal.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text
from rich.tree import Tree

from recursa._terminal import terminal_safe
from recursa.trace.spans import Span

__all__ = ["LiveProgress", "terminal_safe"]

MAX_CHILDREN = 3  # running children drawn per sub-call; the rest are counted
MAX_DEPTH_SHOWN = 4  # nested children drawn below the root; deeper ones are counted
LINE = 80


def _first_line(code: object) -> str:
    for line in terminal_safe(str(code or "")).splitlines():
        if line.strip():
            s = line.strip()
            return s if len(s) <= LINE else s[: LINE - 1] + "…"
    return ""


@dataclass
class _Sub:
    """A ``llm_query*``/``rlm_query*`` call in flight."""

    fn: str
    n: int
    done: int = 0
    failed: int = 0
    running: int = 0  # items started and not done (the rest of n - done wait their turn)
    started: int = 0  # items started so far: numbers the children
    children: dict[str, _Run] = field(default_factory=dict)  # running child runs


@dataclass
class _Run:
    """A running RLM (the root or a child)."""

    depth: int
    model: str
    iteration: int = 0
    last_turn: bool = False
    cell: str = ""  # first line of the running cell; empty while the model thinks
    cell_name: str = ""
    number: int = 0  # a child's place among its sub-call's items (1-based), so siblings differ
    subs: dict[str, _Sub] = field(default_factory=dict)


@dataclass
class _Totals:
    lm_done: int = 0
    lm_running: int = 0
    lm_failed: int = 0
    sub_done: int = 0
    children_done: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0


def _cost(t: _Totals) -> str:
    """The priced part, and how many calls had no known price (never a bare ``$0.0000+?``)."""
    if not t.unpriced:
        return f"${t.cost_usd:.4f}"
    unpriced = f"{t.unpriced} unpriced call{'s' if t.unpriced != 1 else ''}"
    if t.lm_done - t.lm_failed == t.unpriced:  # nothing was priced
        return "cost unknown (" + unpriced + ")"
    return f"${t.cost_usd:.4f} + {unpriced}"


class LiveProgress:
    """A :class:`~recursa.trace.spans.TraceProcessor` that draws the growing run tree."""

    def __init__(self, console: Console | None = None, *, refresh_per_second: float = 8) -> None:
        self.console = console or Console(stderr=True, emoji=False, soft_wrap=True)
        self.totals = _Totals()
        self.started = time.monotonic()
        self.root: _Run | None = None
        self._runs: dict[str, _Run] = {}  # running run span id -> run
        self._owner: dict[str, _Run] = {}  # running iteration/cell span id -> its run
        self._subs: dict[str, _Sub] = {}  # running sub_call span id -> sub-call
        self._lock = threading.Lock()
        self._spinner = Spinner("dots")
        self._live = Live(
            self,
            console=self.console,
            refresh_per_second=refresh_per_second,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.__exit__(exc_type, exc, tb)
        # The live tree is transient; leave one compact line saying what the whole run did.
        if self.root is not None:
            with self._lock:
                self.console.print(self.summary(), soft_wrap=True)

    def summary(self) -> Text:
        """The final line: the top line's totals plus how many sub-call items ran."""
        text = Text("run: ", style="dim")
        text.append_text(self.headline())
        if self.totals.sub_done:
            n = self.totals.sub_done
            text.append(" · ", style="dim")
            text.append(f"{n} sub-call item{'s' if n != 1 else ''}")
        return text

    # ---- processor (event loop: keep it cheap) ------------------------------------------------
    def on_start(self, span: Span) -> None:
        a, kind = span.attrs, span.kind
        run: _Run | None  # the run the span belongs to (each branch finds its own)
        with self._lock:
            if kind == "run":
                model = terminal_safe(str(a.get("model") or ""))
                run = _Run(depth=int(a.get("depth") or 0), model=model)
                self._runs[span.id] = run
                sub = self._subs.get(span.parent_id or "")
                if sub is not None:
                    sub.children[span.id] = run
                    self._item_started(sub)
                    run.number = sub.started
                elif self.root is None:
                    self.root = run
                    self.started = time.monotonic()
            elif kind == "iteration":
                run = self._runs.get(span.parent_id or "")
                if run is not None:
                    run.iteration = int(a.get("index") or 0)
                    run.last_turn = bool(a.get("last_turn"))
                    self._owner[span.id] = run
            elif kind == "cell":
                run = self._owner.get(span.parent_id or "")
                if run is not None:
                    run.cell, run.cell_name = _first_line(a.get("code")), terminal_safe(span.name)
                    self._owner[span.id] = run
            elif kind == "sub_call":
                run = self._owner.get(span.parent_id or "")
                sub = _Sub(fn=terminal_safe(str(a.get("fn") or span.name)), n=int(a.get("n") or 1))
                self._subs[span.id] = sub
                if run is not None:
                    run.subs[span.id] = sub
            elif kind == "lm_call":
                self.totals.lm_running += 1
                sub = self._subs.get(span.parent_id or "")
                if sub is not None:
                    self._item_started(sub)

    @staticmethod
    def _item_started(sub: _Sub) -> None:
        sub.started += 1
        sub.running += 1

    def on_end(self, span: Span) -> None:
        a, kind, t = span.attrs, span.kind, self.totals
        with self._lock:
            if kind == "lm_call":
                t.lm_running -= 1
                t.lm_done += 1
                t.input_tokens += int(a.get("input_tokens") or 0)
                t.output_tokens += int(a.get("output_tokens") or 0)
                t.cached_tokens += int(a.get("cached_tokens") or 0)
                if span.status != "ok":
                    t.lm_failed += 1
                elif a.get("cost_usd") is None:
                    t.unpriced += 1
                else:
                    t.cost_usd += float(a["cost_usd"])
                self._item_done(span)
            elif kind == "sub_call":
                sub = self._subs.pop(span.id, None)
                t.sub_done += sub.n if sub else 1
                run = self._owner.get(span.parent_id or "")
                if run is not None:
                    run.subs.pop(span.id, None)
            elif kind == "cell":
                run = self._owner.pop(span.id, None)
                if run is not None:
                    run.cell = run.cell_name = ""
            elif kind == "iteration":
                self._owner.pop(span.id, None)
            elif kind == "run":
                self._runs.pop(span.id, None)
                sub = self._subs.get(span.parent_id or "")
                if sub is not None:
                    sub.children.pop(span.id, None)
                    t.children_done += 1
                    self._item_done(span)

    def _item_done(self, span: Span) -> None:
        sub = self._subs.get(span.parent_id or "")
        if sub is not None:
            sub.done += 1
            sub.running = max(0, sub.running - 1)
            sub.failed += span.status != "ok"

    # ---- rendering (rich's refresh thread) ------------------------------------------------
    def headline(self) -> Text:
        t, root = self.totals, self.root
        parts: list[tuple[str, str] | str] = []
        if root is not None:
            its = f"iteration {root.iteration}" + (" (last turn)" if root.last_turn else "")
            parts.append((its, "bold"))
        calls = f"{t.lm_done} LM call{'s' if t.lm_done != 1 else ''}"
        if t.lm_running:
            calls += f" ({t.lm_running} running)"
        if t.lm_failed:
            calls += f", {t.lm_failed} failed"
        tokens = f"{t.input_tokens + t.output_tokens:,} tokens"
        if t.cached_tokens:
            tokens += f" ({t.cached_tokens:,} cached)"
        cost = _cost(t)
        parts += [calls, tokens, cost]
        if t.children_done:
            parts.append(f"{t.children_done} child run{'s' if t.children_done != 1 else ''} done")
        parts.append((f"{time.monotonic() - self.started:.0f}s", "dim"))
        text = Text()
        for i, p in enumerate(parts):
            if i:
                text.append(" · ", style="dim")
            if isinstance(p, tuple):
                text.append(*p)
            else:
                text.append(p)
        return text

    def _add_run(self, node: Tree, run: _Run, level: int) -> None:
        # The root's running cell gets a line of its own; a child's sits on the child's line.
        where = node
        if run.cell and level == 1:
            where = node.add(Text.assemble((f"{run.cell_name}: ", "yellow"), run.cell))
        for sub in list(run.subs.values()):
            # Only items actually started count as running (as on the top line); the others
            # wait for a slot and are counted as queued.
            queued = max(0, sub.n - sub.done - sub.running)
            label = Text.assemble(
                (sub.fn, "blue"),
                f" {sub.done}/{sub.n} done" if sub.n > 1 else (" done" if sub.done else ""),
                (f", {sub.running} running" if sub.running > 0 else "", ""),
                (f", {queued} queued" if queued and sub.n > 1 else "", "dim"),
                (f", {sub.failed} failed" if sub.failed else "", "red"),
            )
            branch = where.add(label)
            children = list(sub.children.values())
            for child in children[:MAX_CHILDREN]:
                if level >= MAX_DEPTH_SHOWN:
                    branch.add(Text("… deeper children running", style="dim"))
                    break
                head = Text.assemble(
                    (f"child {child.number}" if sub.n > 1 else "child", "magenta"),
                    (f" d{child.depth}", "magenta"),
                    f" · iteration {child.iteration}" if child.iteration else " · starting",
                    (f" · {child.cell}" if child.cell else "", "yellow"),
                )
                self._add_run(branch.add(head), child, level + 1)
            if len(children) > MAX_CHILDREN:
                more = len(children) - MAX_CHILDREN
                noun = "child" if more == 1 else "children"
                branch.add(Text(f"… {more} more {noun} running", style="dim"))

    def __rich__(self) -> RenderableType:
        with self._lock:
            self._spinner.text = self.headline()
            tree = Tree(self._spinner, guide_style="dim")
            if self.root is not None:
                self._add_run(tree, self.root, 1)
        return Group(tree)
