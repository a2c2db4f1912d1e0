"""``recursa trace``: read traces written with ``--trace``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

__all__ = ["register", "trace_app"]

trace_app = typer.Typer(
    help="Read run traces (JSONL files written by `recursa ask --trace FILE`).",
    no_args_is_help=True,
)


@trace_app.command("show")
def show(
    file: Annotated[
        Path, typer.Argument(help="A trace file (JSONL), or the id of a journaled run.")
    ],
    full: Annotated[
        bool, typer.Option("--full", help="Also print code, outputs and model responses.")
    ] = False,
) -> None:
    """Print a trace as an indented tree: run, iterations, LM calls, cells, sub-calls, children."""
    from rich.console import Console

    from recursa.cli.view import resolve_trace
    from recursa.trace.jsonl import read_trace
    from recursa.trace.show import render_tree, render_usage

    trace = read_trace(resolve_trace(file))
    console = Console(highlight=False)
    console.print(render_tree(trace, full=full))
    console.print(render_usage(trace))


@trace_app.command("export")
def export(
    traces: Annotated[
        list[Path], typer.Argument(help="Trace files, or folders searched for *.jsonl.")
    ],
    sft: Annotated[
        Path | None,
        typer.Option(
            "--sft",
            help="Write chat-format fine-tuning examples (JSONL), one per root turn.",
        ),
    ] = None,
    stop_reason: Annotated[
        list[str],
        typer.Option(
            "--stop-reason",
            help="Use runs that ended this way (repeatable; default: final).",
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    min_score: Annotated[
        float | None,
        typer.Option("--min-score", help="Use only runs whose recorded score is at least this."),
    ] = None,
    children: Annotated[
        bool, typer.Option("--children", help="Also export the turns of child runs.")
    ] = False,
    meta: Annotated[
        bool,
        typer.Option("--meta", help="Add a 'metadata' object (run id, turn, score) to each line."),
    ] = False,
) -> None:
    """Turn successful traces into training data.

    With --sft FILE each root turn of each run that passes the filters becomes one example:
    the messages the model saw and the reply it wrote, as {"messages": [...]} per line.
    """
    from rich.console import Console

    from recursa.errors import ConfigError
    from recursa.trace.sft import SFTFilter, export_sft

    if sft is None:
        raise ConfigError("say what to export: --sft FILE writes fine-tuning examples")
    flt = SFTFilter(
        stop_reasons=frozenset(stop_reason or ["final"]), min_score=min_score, children=children
    )
    report = export_sft(traces, sft, flt, meta=meta)
    err = Console(stderr=True, highlight=False)
    err.print(
        f"{report.examples} example(s) from {report.traces_used} of {report.traces} trace(s) "
        f"written to {sft}"
    )
    for reason, count in report.skipped.most_common():
        err.print(f"[dim]skipped {count}: {escape(reason)}[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(trace_app, name="trace")
