"""``recursa runs`` and ``recursa cache``: past runs (resumable) and the shared call cache."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Annotated

import typer
from rich.markup import escape

from recursa._terminal import terminal_safe

__all__ = ["cache_app", "register", "runs_app"]

runs_app = typer.Typer(
    help="Past runs, recorded as they happen; resume one with `recursa ask --resume ID`.",
    no_args_is_help=True,
)
cache_app = typer.Typer(
    help="The shared call cache used by `--cache` (and by `recursa bench`).",
    no_args_is_help=True,
)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "?"


@runs_app.command("list")
def list_cmd(
    limit: Annotated[int, typer.Option("--limit", "-n", help="Show this many, newest first.")] = 20,
) -> None:
    """List recorded runs, newest first."""
    from rich.console import Console
    from rich.table import Table

    from recursa.journal import list_runs, runs_dir

    runs = list_runs()[:limit]
    console = Console(highlight=False)
    if not runs:
        console.print(f"no runs recorded in {runs_dir()}")
        return
    # The id is what `--resume` needs: never cut it; the question gives way instead.
    table = Table(box=None)
    table.add_column("run", no_wrap=True, min_width=max(len(r.run_id) for r in runs))
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("calls", no_wrap=True, justify="right")
    table.add_column("cost", no_wrap=True)
    table.add_column("question", no_wrap=True, overflow="ellipsis", ratio=1)
    for r in runs:
        cost = "-" if r.cost_usd is None else f"${r.cost_usd:.4f}"
        q = escape(terminal_safe(" ".join(r.question.split())))
        table.add_row(escape(r.run_id), r.status, _when(r.created), str(r.calls), cost, q[:60])
    console.print(table)


@runs_app.command("show")
def show_cmd(
    run_id: Annotated[str, typer.Argument(help="A run id from `recursa runs list`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show one run: its status, question, answer, settings and where its trace is."""
    from rich.console import Console

    from recursa.journal import Journal, owner_alive

    j = Journal.open(run_id)
    try:
        calls, cells = j.counts()
        status = j.meta("status")
        if status == "running" and not owner_alive(j.meta("owner")):
            status = "dead"
        trace = j.meta("trace") or (str(j.trace_path) if j.trace_path.exists() else None)
        info = {
            "run_id": run_id,
            "status": status,
            "started": _when(float(j.meta("created", 0.0))),
            "question": j.meta("question"),
            "result": j.meta("result"),
            "config": j.meta("config"),
            "journaled_calls": calls,
            "journaled_cells": cells,
            "folder": str(j.folder),
            "trace": trace,
        }
    finally:
        j.close()
    if as_json:
        typer.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    c = Console(highlight=False)
    result = info["result"] or {}
    c.print(f"[bold]{run_id}[/]  {info['status']}  started {info['started']}")
    c.print(f"[cyan]Q:[/] {escape(terminal_safe(str(info['question'])))}")
    if result.get("answer"):
        c.print(f"[green]A:[/] {escape(terminal_safe(str(result['answer'])))}")
    c.print(f"{calls} LM responses and {cells} cells journaled · folder {escape(info['folder'])}")
    if info["trace"]:
        c.print(escape(f"trace: {info['trace']}  (`recursa trace show {info['trace']}`)"))
    if info["status"] not in ("final", "stopped"):
        c.print(f"resume with: recursa ask --resume {run_id}")


@runs_app.command("rm")
def rm_cmd(
    run_ids: Annotated[list[str], typer.Argument(help="The runs to delete.", show_default=False)],
) -> None:
    """Delete runs' journals and traces."""
    from recursa.errors import JournalError
    from recursa.journal import remove_run, runs_dir

    missing = [
        r for r in run_ids if "/" in r or r in ("", ".", "..") or not (runs_dir() / r).is_dir()
    ]
    if missing:
        raise JournalError(
            f"no run {missing[0]!r}; `recursa runs list` shows the runs (nothing removed)"
        )
    for run_id in run_ids:
        typer.echo(f"removed {remove_run(run_id)}")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _age(text: str) -> float:
    from recursa.errors import ConfigError

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m:
        raise ConfigError(f"--older-than {text!r}: give a number and a unit s, m, h or d (30d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


@runs_app.command("prune")
def prune_cmd(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age, with a unit s/m/h/d: 30d, 12h.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only print what would be removed.")
    ] = False,
) -> None:
    """Delete the runs started longer ago than --older-than (never one still running)."""
    from recursa.journal import list_runs, remove_run

    cutoff = time.time() - _age(older_than)
    old = [r for r in list_runs() if r.created < cutoff]
    kept = [r for r in old if r.status == "running"]
    for r in kept:
        typer.echo(f"kept {r.run_id}: still running", err=True)
    gone = [r for r in old if r.status != "running"]
    for r in gone:
        if dry_run:
            typer.echo(f"would remove {r.run_id} ({r.status}, started {_when(r.created)})")
        else:
            typer.echo(f"removed {remove_run(r.run_id)}")
    if not gone:
        typer.echo("no run to remove")


@cache_app.command("stats")
def cache_stats() -> None:
    """How many responses are cached, how often they were reused, and the money saved."""
    from recursa.cache import CallCache

    s = CallCache().stats()
    typer.echo(
        f"{s.path}\n{s.entries} cached responses, {s.hits} hits, ${s.saved_usd:.4f} saved, "
        f"{s.size_bytes / 1e6:.1f} MB on disk"
    )


@cache_app.command("clear")
def cache_clear() -> None:
    """Empty the call cache."""
    from recursa.cache import CallCache

    typer.echo(f"removed {CallCache().clear()} cached responses")


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
    app.add_typer(cache_app, name="cache")
