"""``recursa view``: turn a trace into one self-contained HTML page, and open or serve it."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "resolve_trace", "view"]


def resolve_trace(arg: Path) -> Path:
    """A trace file, or the trace of a journaled run given by its id (``recursa runs list``)."""
    if arg.exists() or arg.suffix or len(arg.parts) > 1:
        return arg
    from recursa.journal import runs_dir

    folder = runs_dir() / str(arg)
    if (folder / "journal.sqlite").is_file():
        # The run may have written its trace elsewhere (`--trace FILE`): the journal knows.
        from recursa.errors import JournalError
        from recursa.journal import Journal

        try:
            j = Journal.open(str(arg))
            try:
                recorded = j.meta("trace")
            finally:
                j.close()
        except JournalError:
            recorded = None
        if recorded and Path(recorded).exists():
            return Path(recorded)
    candidate = folder / "trace.jsonl"
    return candidate if candidate.exists() else arg


def default_output(trace: Path) -> Path:
    """``run.jsonl`` -> ``run.html`` next to it."""
    return trace.with_suffix(".html")


def view(
    trace: Annotated[
        Path, typer.Argument(help="A trace file (JSONL), or the id of a journaled run.")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write the page (default: TRACE.html)."),
    ] = None,
    open_: Annotated[
        bool, typer.Option("--open", help="Open the page in the default web browser.")
    ] = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve", help="Serve the page on 127.0.0.1 until Ctrl-C instead of writing a file."
        ),
    ] = False,
    port: Annotated[
        int, typer.Option("--port", help="Port for --serve (0 picks a free one).")
    ] = 8765,
    title: Annotated[str | None, typer.Option("--title", help="Page title.")] = None,
) -> int:
    """Write TRACE as one HTML page (no network needed) and print its path.

    The page shows the run's summary, the call tree with each iteration's response, code and
    output, a timeline of every span, tokens and cost per model and depth, and search. With
    --serve it is served on http://127.0.0.1:PORT/ instead (the URL is printed first).
    """
    from recursa.trace.html import render_html, serve_html, write_html
    from recursa.trace.jsonl import read_trace

    trace = resolve_trace(trace)
    data = read_trace(trace)
    if not serve:
        path = write_html(data, output or default_output(trace), title=title).resolve()
        typer.echo(str(path))
        if open_:
            _open(path.as_uri())
        return 0
    page = render_html(data, title=title)
    if output is not None:
        write_html(data, output, title=title)
    try:
        server = serve_html(page, port=port)
    except OSError as exc:
        from recursa.errors import ConfigError

        raise ConfigError(
            f"cannot serve on 127.0.0.1:{port}: {exc.strerror}; try --port 0 for a free port"
        ) from None
    typer.echo(server.url)
    typer.echo("serving the trace viewer; Ctrl-C to stop", err=True)
    if open_:
        _open(server.url)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:  # Ctrl-C is how one stops serving: not an error
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()
        server.server_close()
    return 0


def _open(url: str) -> None:
    import webbrowser

    if not webbrowser.open(url):
        typer.echo(f"no web browser found; open {url} yourself", err=True)


def register(app: typer.Typer) -> None:
    app.command("view")(view)
