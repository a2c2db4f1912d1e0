"""What commands print for the user: model-written text on stdout, notes on stderr, and the
``--json`` form of a failure."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator

from rich.markup import escape

from recursa.errors import ConfigError

__all__ = ["emit", "emit_error", "exit_code_for", "json_errors", "safe"]


def emit(text: str) -> None:
    """Print model-written text and a newline: byte-exact into a pipe or file (``typer.echo``
    would strip colour codes there), but on a terminal without control sequences (an answer
    must not set the window title or write to the clipboard)."""
    out = sys.stdout
    if out.isatty():
        from recursa.cli.progress import terminal_safe

        text = terminal_safe(text)
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write(text + "\n")
        out.flush()
        return
    out.flush()
    # "replace": a lone surrogate in an answer becomes "?" instead of a crash.
    buffer.write((text + "\n").encode(out.encoding or "utf-8", "replace"))
    buffer.flush()


def safe(text: object) -> str:
    """Model- or file-derived text for a note on stderr: no control sequences, no markup."""
    from recursa.cli.progress import terminal_safe

    return escape(terminal_safe(str(text)))


def exit_code_for(exc: BaseException) -> int:
    """The documented exit status for an exception that ends a command."""
    from recursa.errors import JournalError, TraceError

    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, ConfigError | TraceError | JournalError | UnicodeError):
        return 2
    return 1


@contextlib.contextmanager
def json_errors(enabled: bool) -> Iterator[None]:
    """Under --json, a failed run still prints one JSON object on stdout (scripts parse it)."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        if enabled:
            emit_error(exc, exit_code_for(exc))
        raise


def emit_error(exc: BaseException, code: int) -> None:
    """The --json form of a failure: one object with the error's type, message and exit code."""
    message = getattr(exc, "format_message", lambda: str(exc))() or type(exc).__name__
    error = {"type": type(exc).__name__, "message": message, "exit_code": code}
    emit(json.dumps({"error": error}, ensure_ascii=False, indent=2))
