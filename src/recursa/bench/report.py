"""``recursa bench report RUN_DIR``: a Markdown table and PNG plots from a run's rows.

For each benchmark: score, cost, time and tokens per method and length (means over the
finished rows; errors count as score 0 and are listed), the share of ``direct`` prompts that
were cut to the model's window, and two plots: score against context length per method, and
cost against score (tokens against score when every call was free, as with a local model).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recursa.bench.harness import ROWS_FILE, latest_rows, read_rows
from recursa.errors import ConfigError, MissingDependencyError

__all__ = ["Cell", "cells", "markdown", "plot", "write_report"]

METHOD_ORDER = ("direct", "rag", "summarize", "rlm-nosub", "rlm", "rlm-depth2", "auto")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


@dataclass
class Cell:
    """The rows of one (benchmark, method, length)."""

    benchmark: str
    method: str
    length: int
    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def mean(self, key: str) -> float | None:
        values = [v for r in self.rows if isinstance(v := _get(r, key), int | float)]
        return sum(values) / len(values) if values else None

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.rows if r.get("error"))

    @property
    def cut(self) -> int:
        return sum(1 for r in self.rows if (r.get("notes") or {}).get("cut"))

    @property
    def stops(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in self.rows:
            if r.get("stop_reason") not in (None, "final"):
                out[str(r["stop_reason"])] += 1
        return dict(out)

    @property
    def priced(self) -> bool:
        return any((r.get("cost_usd") or 0) > 0 for r in self.rows)


def _get(row: dict[str, Any], key: str) -> Any:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else 99, method)


def cells(rows: Iterable[dict[str, Any]]) -> dict[str, list[Cell]]:
    """Cells by benchmark, ordered by method then length."""
    out: dict[tuple[str, str, str], Cell] = {}
    for r in latest_rows(rows):
        key = (str(r["benchmark"]), str(r["method"]), str(r.get("length_label")))
        cell = out.get(key)
        if cell is None:
            cell = out[key] = Cell(key[0], key[1], int(r.get("length") or 0), key[2])
        cell.rows.append(r)
    by_bench: dict[str, list[Cell]] = defaultdict(list)
    for cell in out.values():
        by_bench[cell.benchmark].append(cell)
    for items in by_bench.values():
        items.sort(key=lambda c: (_method_rank(c.method), c.length))
    return dict(by_bench)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _notes(cell: Cell) -> str:
    parts = []
    if cell.cut:
        parts.append(f"cut to window {cell.cut}/{cell.n}")
    parts += [f"{reason} {k}" for reason, k in sorted(cell.stops.items()) if reason != "error"]
    if cell.errors:
        parts.append(f"errors {cell.errors}")
    return ", ".join(parts)


def _labels(items: Sequence[Cell]) -> list[str]:
    """Length labels from short to long (a label's smallest length places it)."""
    seen: dict[str, int] = {}
    for c in items:
        seen[c.label] = min(seen.get(c.label, c.length), c.length)
    return sorted(seen, key=lambda lab: seen[lab])


def markdown(by_bench: dict[str, list[Cell]], plots: dict[str, list[Path]] | None = None) -> str:
    lines = ["# Benchmark report", ""]
    for bench, items in by_bench.items():
        labels = _labels(items)
        methods = sorted({c.method for c in items}, key=_method_rank)
        lines += [f"## {bench}", "", "Mean score (tasks):", ""]
        lines.append("| method | " + " | ".join(labels) + " |")
        lines.append("|---|" + "---|" * len(labels))
        for m in methods:
            row = [m]
            for lab in labels:
                c = next((c for c in items if c.method == m and c.label == lab), None)
                row.append(f"{_fmt(c.mean('score'), '.3f')} ({c.n})" if c else "")
            lines.append("| " + " | ".join(row) + " |")
        lines += [
            "",
            "| method | length | n | score | cost $/task | time s/task | tokens/task | notes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in items:
            lines.append(
                f"| {c.method} | {c.label} | {c.n} | {_fmt(c.mean('score'), '.3f')} | "
                f"{_fmt(c.mean('cost_usd'), '.4f')} | {_fmt(c.mean('wall_time_s'), '.1f')} | "
                f"{_fmt(c.mean('usage.total_tokens'), ',.0f')} | {_notes(c)} |"
            )
        for path in (plots or {}).get(bench, []):
            lines += ["", f"![{path.stem}]({path.as_posix()})"]
        lines.append("")
    return "\n".join(lines)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError("bench plots", "bench", "matplotlib") from exc
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot(bench: str, items: Sequence[Cell], folder: Path) -> list[Path]:
    """Two PNGs for one benchmark: score vs length per method, and cost (or tokens) vs score."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    labels = _labels(items)
    methods = sorted({c.method for c in items}, key=_method_rank)
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for k, m in enumerate(methods):
        # Each method is dodged sideways a little and has its own marker, so that equal scores
        # do not hide each other.
        dx = (k - (len(methods) - 1) / 2) * 0.03
        pts = sorted(
            (labels.index(c.label), c.mean("score") or 0.0) for c in items if c.method == m
        )
        ax.plot(
            [x + dx for x, _ in pts],
            [y for _, y in pts],
            marker=_MARKERS[k % len(_MARKERS)],
            linewidth=2,
            alpha=0.85,
            label=m,
        )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("context length (approx. tokens)")
    ax.set_ylabel("mean score")
    ax.set_title(f"{bench}: score vs context length")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, plt, folder / f"{bench}-score-vs-length.png"))
    paths.append(_cost_plot(plt, bench, items, folder))
    return paths


def _cost_plot(plt: Any, bench: str, items: Sequence[Cell], folder: Path) -> Path:
    priced = any(c.priced for c in items)
    key, axis = (
        ("cost_usd", "mean cost per task (USD)")
        if priced
        else (
            "usage.total_tokens",
            "mean tokens per task (every call was free or unpriced, e.g. a local model)",
        )
    )
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    taken: dict[tuple[float, float], int] = {}
    for k, m in enumerate(sorted({c.method for c in items}, key=_method_rank)):
        mine = [c for c in items if c.method == m]
        xs = [c.mean(key) or 0.0 for c in mine]
        ys = [c.mean("score") or 0.0 for c in mine]
        ax.scatter(xs, ys, s=45, marker=_MARKERS[k % len(_MARKERS)], alpha=0.85, label=m)
        for c, x, y, offset in zip(mine, xs, ys, label_offsets(xs, ys, taken), strict=True):
            ax.annotate(c.label, (x, y), textcoords="offset points", xytext=offset, fontsize=8)
    if all(c.mean(key) for c in items) and _spread(items, key) > 20:
        ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(axis)
    ax.set_ylabel("mean score")
    ax.set_title(f"{bench}: cost vs score")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, plt, folder / f"{bench}-cost-vs-score.png")


def label_offsets(
    xs: Sequence[float], ys: Sequence[float], taken: dict[tuple[float, float], int] | None = None
) -> list[tuple[int, int]]:
    """Where to put each point's label (offset points): points that land on about the same spot
    (same score to 0.02, cost within ~12%) get their labels stacked, not drawn over each other.
    ``taken`` carries the spots already labelled across calls (one per method)."""
    import math

    taken = {} if taken is None else taken
    out = []
    for x, y in zip(xs, ys, strict=True):
        spot = (round(math.log10(x) * 20) / 20 if x > 0 else -99.0, round(y * 50) / 50)
        n = taken.get(spot, 0)
        taken[spot] = n + 1
        out.append((4, 4 + 10 * n))
    return out


def _spread(items: Sequence[Cell], key: str) -> float:
    values = [v for c in items if (v := c.mean(key))]
    return max(values) / min(values) if values and min(values) > 0 else 1.0


def _save(fig: Any, plt: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(run_dir: Path, *, plots: bool = True) -> Path:
    """Write ``report.md`` (and ``plots/*.png``) into ``run_dir``; return the report's path."""
    rows = read_rows(run_dir / ROWS_FILE)
    if not rows:
        raise ConfigError(f"{run_dir} has no {ROWS_FILE}: run `recursa bench run --out {run_dir}`")
    by_bench = cells(rows)
    images: dict[str, list[Path]] = {}
    if plots:
        for bench, items in by_bench.items():
            found = plot(bench, items, run_dir / "plots")
            images[bench] = [p.relative_to(run_dir) for p in found]
    path = run_dir / "report.md"
    path.write_text(markdown(by_bench, images), encoding="utf-8")
    return path
