"""``recursa trace``: read traces written with ``--trace``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "trace_app"]

trace_app = typer.Typer(
    help="Read run traces (JSONL files written by `recursa ask --trace FILE`).",
    no_args_is_help=True,
)


@trace_app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="A trace file (JSONL).")],
    full: Annotated[
        bool, typer.Option("--full", help="Also print code, outputs and model responses.")
    ] = False,
) -> None:
    """Print a trace as an indented tree: run, iterations, LM calls, cells, sub-calls, children."""
    from rich.console import Console

    from recursa.trace.jsonl import read_trace
    from recursa.trace.show import render_tree

    trace = read_trace(file)
    Console(highlight=False).print(render_tree(trace, full=full))


def register(app: typer.Typer) -> None:
    app.add_typer(trace_app, name="trace")
