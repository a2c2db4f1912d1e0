"""The ``recursa`` command. Thin: argv -> objects -> engine / server / bench / viewer.

Each command group lives in its own module exposing ``register(app)``; heavy imports happen
inside the commands so ``recursa --help`` stays fast. Every error recursa raises on purpose
becomes one line on stderr: exit status 2 for bad input or configuration, 1 for failures
while running (a model server that stays down), 130 for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import os
import sys

import typer

from recursa.errors import ConfigError, JournalError, RecursaError, TraceError

__all__ = ["app", "main"]

app = typer.Typer(
    name="recursa",
    help=(
        "Recursive Language Models: answer questions over inputs far larger than a model's "
        "context window. The input lives in a sandboxed Python REPL; the model writes code to "
        "search and chunk it and calls models on the pieces."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from recursa import __version__

        typer.echo(f"recursa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print recursa's version and exit.",
    ),
) -> None:
    pass


# Command modules, registered in this order (each defines register(app)).
COMMAND_MODULES = (
    "ask",
    "chat",
    "trace",
    "runs",
    "view",
    "serve",
    "mcp",
    "doctor",
    "models",
    "bench",
    "batch",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"recursa.cli.{name}").register(app)


_register_all()


def _fail(message: str, code: int) -> int:
    from rich.console import Console
    from rich.markup import escape

    from recursa.cli.progress import terminal_safe

    # Escaped, and emoji=False: messages quote paths and model ids (a:smile:b.txt). Made
    # terminal-safe: they may quote what a model or a model server said.
    Console(stderr=True, highlight=False, soft_wrap=True, emoji=False).print(
        f"[bold red]error:[/] {escape(terminal_safe(message))}", markup=True
    )
    return code


def _with_hint(exc: RecursaError) -> str:
    """The error's message, plus what to do next where the CLI knows better than the backend."""
    from recursa.errors import LMConnectionError

    message = str(exc)
    if isinstance(exc, LMConnectionError) and (exc.model or "").startswith("ollama:"):
        message += (
            "; for Ollama, start it (ollama serve) or point OLLAMA_HOST at it "
            "(default http://localhost:11434)"
        )
    return message


_CRASH_STREAM: list[object] = []  # keeps the duplicated stderr open for faulthandler


def _enable_faulthandler() -> None:
    """Report a native crash on stderr. faulthandler writes to a *duplicate* of stderr: while
    llama.cpp loads weights, llama-cpp-python points file descriptor 2 at /dev/null, which is
    exactly where a bad CPU kernel crashes."""
    if faulthandler.is_enabled():
        return
    # Not where stderr has no file descriptor (captured by a test runner, an embedding app).
    with contextlib.suppress(AttributeError, OSError, ValueError):
        stream = os.fdopen(os.dup(sys.stderr.fileno()), "w")
        _CRASH_STREAM.append(stream)
        faulthandler.enable(file=stream)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (the console script passes it to ``sys.exit``)."""
    # A crash in native code (llama.cpp) cannot be caught; at least name where it happened
    # instead of dying silently with status 139.
    _enable_faulthandler()
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="recursa")
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted", 130)
    except typer.TyperException as exc:  # usage errors: unknown option, bad value...
        args = sys.argv[1:] if argv is None else argv
        if args[:1] == ["ask"] and "--json" in args:  # scripts parse stdout: keep it JSON
            from recursa.cli.output import emit_error

            emit_error(exc, exc.exit_code)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            _fail(exc.format_message(), exc.exit_code)
        return exc.exit_code
    except (ConfigError, TraceError, JournalError) as exc:  # bad input or configuration
        return _fail(str(exc), 2)
    except RecursaError as exc:
        return _fail(_with_hint(exc), 1)
    except UnicodeError as exc:  # text that is not UTF-8 (a file name, an argument) got through
        return _fail(f"text that is not valid UTF-8 cannot be used here: {exc}", 2)
    return rv if isinstance(rv, int) else 0
