"""``recursa ask``: answer a question over files, folders or standard input."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from recursa.errors import ConfigError, ContextError, RecursaError

__all__ = ["register"]

EXIT_PARTIAL = 3
MIB = 1024 * 1024
_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean_question(question: str, err: Any, quiet: bool) -> str:
    """The question with lone surrogates (bytes of the command line that were not UTF-8)
    replaced by U+FFFD: nothing downstream (HTTP bodies, the journal) can encode them."""
    cleaned, n = _SURROGATE.subn("\ufffd", question)
    if n and not quiet:
        err.print(f"[yellow]note:[/] the question held {n} byte(s) that are not UTF-8: replaced")
    return cleaned


def _emit(text: str) -> None:
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


def _safe(text: object) -> str:
    """Model- or file-derived text for a note on stderr: no control sequences, no markup."""
    from recursa.cli.progress import terminal_safe

    return escape(terminal_safe(str(text)))


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        raise ContextError("--context - reads standard input, but nothing is piped in")
    return sys.stdin.buffer.read()


def context_sources(values: list[str]) -> list[Any]:
    """``--context`` values as load_context sources: ``-`` is stdin, anything else a path."""
    if not values:
        raise ContextError(
            "no context given: pass --context FILE, --context FOLDER or --context - for stdin"
        )
    if values.count("-") > 1:
        raise ContextError("--context - (standard input) can be given only once")
    return [_read_stdin() if v == "-" else Path(v) for v in values]


def price_table(prices: Path | None) -> Any:
    from recursa.pricing import PriceTable

    path = prices or (
        Path(os.environ["RECURSA_PRICES"]) if os.environ.get("RECURSA_PRICES") else None
    )
    return PriceTable.from_file(path) if path else PriceTable()


def ask(
    question: Annotated[
        str | None,
        typer.Argument(help="What you want to know about the context (not with --resume)."),
    ] = None,
    context: Annotated[
        list[str],
        typer.Option(
            "--context",
            "-c",
            help="A file, a folder (read as {path: text}, honouring .gitignore) or - for stdin. "
            "Repeat for several inputs.",
            show_default=False,
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Root model as provider:model (openai:gpt-5-mini, anthropic:claude-sonnet-4-5, "
            "ollama:qwen2.5-coder, local). Default: $RECURSA_MODEL, else the embedded local model.",
        ),
    ] = None,
    sub_model: Annotated[
        str | None,
        typer.Option("--sub-model", help="Model for llm_query and child RLMs (default: --model)."),
    ] = None,
    max_file_mb: Annotated[
        float,
        typer.Option(
            "--max-file-mb",
            help="Largest file --context reads, in MiB (checked before reading; larger files "
            "in a folder are skipped with a note).",
        ),
    ] = 256.0,
    max_context_mb: Annotated[
        float,
        typer.Option("--max-context-mb", help="All --context files together, in MiB."),
    ] = 512.0,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="API root for OpenAI-compatible or Anthropic-compatible servers "
            "(e.g. http://localhost:8000/v1). Default: $OPENAI_BASE_URL / $ANTHROPIC_BASE_URL.",
        ),
    ] = None,
    max_depth: Annotated[
        int, typer.Option("--max-depth", help="How deep rlm_query may nest child RLMs.")
    ] = 1,
    max_iterations: Annotated[
        int,
        typer.Option(
            "--max-iterations",
            help='Root turns per RLM that may run code, then at most one "answer now" turn '
            "that runs no code.",
        ),
    ] = 30,
    max_cost: Annotated[
        float | None,
        typer.Option(
            "--max-cost",
            help="USD for the whole run: a call is sent only if its worst case still fits "
            "(calls of models without a known price do not count).",
        ),
    ] = None,
    max_calls: Annotated[
        int | None,
        typer.Option(
            "--max-calls", help="LM requests in all, retries included; none is sent past it."
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            help="Tokens in all: a call is sent only if its estimated prompt plus its output "
            "cap still fits.",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Wall-clock limit for the whole run, in seconds; 0 for none.",
        ),
    ] = 3600.0,
    cell_timeout: Annotated[
        float,
        typer.Option("--cell-timeout", help="Compute-time limit of one code cell, in seconds."),
    ] = 120.0,
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="LM calls in flight at once.")
    ] = 16,
    max_sandboxes: Annotated[
        int | None,
        typer.Option(
            "--max-sandboxes",
            help="Sandbox processes alive at once (the root's and child RLMs'); more children "
            "wait. At least --max-depth + 1. [default: 4, or --max-depth + 1 if more]",
        ),
    ] = None,
    max_output_chars: Annotated[
        int | None,
        typer.Option(
            "--max-output-chars",
            help="REPL output shown to the model per iteration (default: the model's own "
            "suggestion, else 20000).",
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="Sampling temperature.")
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="Prompt profile: standard or strict (default: by model)."),
    ] = None,
    no_sub_calls: Annotated[
        bool,
        typer.Option(
            "--no-sub-calls", help="Give the model the REPL only: no llm_query/rlm_query."
        ),
    ] = False,
    sandbox: Annotated[
        str,
        typer.Option(
            "--sandbox",
            help="Where model code runs: process (default), wasm or docker; "
            "`recursa doctor` shows what each protects here.",
        ),
    ] = "process",
    prices: Annotated[
        Path | None,
        typer.Option(
            "--prices", help="JSON/TOML file extending the price table ($RECURSA_PRICES)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole result as JSON instead of the answer.")
    ] = False,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="Write the run's trace (JSONL) to this file.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue an interrupted run (see `recursa runs list`): answered calls are "
            "replayed from its journal, the rest asked. Uses the run's own settings.",
        ),
    ] = None,
    no_journal: Annotated[
        bool,
        typer.Option("--no-journal", help="Do not record the run (it cannot be resumed)."),
    ] = False,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache",
            help="Answer repeated requests from the shared call cache; implies --temperature 0 "
            "unless --temperature is given (only temperature-0 calls are cached).",
        ),
    ] = False,
    otel: Annotated[
        bool,
        typer.Option(
            "--otel",
            help="Export spans over OTLP (configured by the OTEL_EXPORTER_OTLP_* variables); "
            "needs the otel extra.",
        ),
    ] = False,
) -> int:
    """Answer QUESTION over the given context and print the answer.

    The answer alone goes to stdout; progress and notes go to stderr. Exit status: 0 when the
    model gave its final answer, 3 when a limit stopped the run (the best partial answer is
    still printed), 2 for bad input or configuration, 1 when a model or sandbox kept failing,
    130 when interrupted (Ctrl-C). With --json, stdout always holds one JSON object: the result,
    or {"error": {"type", "message", "exit_code"}} when the run fails.
    """
    with _json_errors(as_json):
        from rich.console import Console

        # emoji=False: notes quote paths, model ids and answers; soft_wrap: no hard wrap in pipes.
        err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)
        if resume:
            from recursa.rlm import RLM

            rlm = RLM.from_journal(resume, cache=cache)
            run_id, ctx = resume, None
        else:
            if not question or not question.strip():
                raise ConfigError("the question is empty: say what you want to know")
            from recursa.context import load_context
            from recursa.rlm import new_run_id

            question = _clean_question(question, err, quiet)
            if max_file_mb <= 0 or max_context_mb <= 0:
                raise ConfigError("--max-file-mb and --max-context-mb must be positive")
            # The user's input is checked before anything else (models, keys): its errors
            # come first.
            ctx = load_context(
                *context_sources(context),
                max_file_bytes=max(1, int(max_file_mb * MIB)),
                max_context_bytes=max(1, int(max_context_mb * MIB)),
            )
            rlm = _build(locals())
            run_id = new_run_id()
            if cache and temperature and not quiet:
                err.print(
                    f"[yellow]warning:[/] --cache stores only temperature-0 calls: with "
                    f"--temperature {temperature:g}, API models' calls are not cached"
                )
            if not quiet:
                for warning in ctx.warnings:
                    err.print(f"[yellow]note:[/] {_safe(warning)}")
        try:
            result = _run(rlm, question, ctx, run_id, resume, trace, quiet, err, otel)
        except (KeyboardInterrupt, RecursaError) as exc:
            paid = not isinstance(exc, ConfigError) and _journaled_calls(rlm, run_id) > 0
            if rlm.journal and not quiet and paid:  # nothing journaled: nothing to resume
                err.print(f"[dim]resume with: recursa ask --resume {escape(run_id)}[/]")
            raise
        data = result.to_dict()
        _emit(json.dumps(data, ensure_ascii=False, indent=2) if as_json else result.answer)
        if not quiet:
            _summary(err, result)
        return 0 if not result.partial else EXIT_PARTIAL


def _journaled_calls(rlm: Any, run_id: str) -> int:
    """LM responses the run's journal holds (0 when there is no journal to read)."""
    from recursa.journal import Journal

    try:
        journal = Journal.open(run_id, root=rlm.runs_root)
    except Exception:
        return 0
    try:
        return journal.counts()[0]
    finally:
        journal.close()


def exit_code_for(exc: BaseException) -> int:
    """The documented exit status for an exception that ends a command."""
    from recursa.errors import JournalError, TraceError

    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, ConfigError | TraceError | JournalError | UnicodeError):
        return 2
    return 1


@contextlib.contextmanager
def _json_errors(enabled: bool) -> Any:
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
    _emit(json.dumps({"error": error}, ensure_ascii=False, indent=2))


# Limits fields as ask's flags: the library's message names the field, the CLI's the flag.
_LIMIT_FLAGS = {
    "max_iterations": "--max-iterations",
    "max_depth": "--max-depth",
    "max_llm_calls": "--max-calls",
    "max_tokens": "--max-tokens",
    "max_cost_usd": "--max-cost",
    "timeout_s": "--timeout",
    "cell_timeout_s": "--cell-timeout",
    "max_concurrency": "--concurrency",
    "max_output_chars": "--max-output-chars",
    "max_sandboxes": "--max-sandboxes",
}


def _flag_message(message: str) -> str:
    for name, flag in _LIMIT_FLAGS.items():
        message = re.sub(rf"\b(Limits\.)?{name}\b", flag, message)
    return message


def _build(opts: dict[str, Any]) -> Any:
    """The RLM for a new run, from ask's options."""
    from recursa.limits import Limits
    from recursa.rlm import RLM

    try:
        limits = Limits(
            max_iterations=opts["max_iterations"],
            max_depth=opts["max_depth"],
            max_llm_calls=opts["max_calls"],
            max_tokens=opts["max_tokens"],
            max_cost_usd=opts["max_cost"],
            timeout_s=opts["timeout"] or None,  # 0: no wall-clock limit
            cell_timeout_s=opts["cell_timeout"],
            max_concurrency=opts["concurrency"],
            max_output_chars=opts["max_output_chars"],
            max_sandboxes=opts["max_sandboxes"],
        )
    except ConfigError as exc:  # name the flag the user typed, not the library's field
        raise ConfigError(_flag_message(str(exc))) from None
    return RLM(
        opts["model"],
        opts["sub_model"],
        limits=limits,
        base_url=opts["base_url"],
        sandbox=opts["sandbox"],
        prompt_profile=opts["profile"],
        prices=price_table(opts["prices"]),
        # --cache only stores calls whose answer is fixed by their input: without a temperature
        # of its own, it asks for temperature 0 (else an API model would never be cached).
        temperature=0.0 if opts["cache"] and opts["temperature"] is None else opts["temperature"],
        sub_calls=not opts["no_sub_calls"],
        journal=not opts["no_journal"],
        cache=opts["cache"],
    )


OTLP_TIMEOUT_S = 2.0  # one --otel export, retries included, unless OTEL_* says otherwise
_OTLP_TIMEOUT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")


def _otlp_timeout_set() -> bool:
    return any(os.environ.get(v) for v in _OTLP_TIMEOUT_VARS)


def _run(
    rlm: Any,
    question: Any,
    ctx: Any,
    run_id: str,
    resume: str | None,
    trace: Any,
    quiet: bool,
    err: Any,
    otel: bool = False,
) -> Any:
    """Run (or resume) with live progress on stderr unless quiet, exporting spans if asked."""
    processors: list[Any] = []
    exporter = None
    if otel:
        from recursa.trace.otel import OTelProcessor

        # A collector that is down must cost seconds, not minutes, and print no tracebacks.
        timeout_s = None if _otlp_timeout_set() else OTLP_TIMEOUT_S
        exporter = OTelProcessor.otlp(timeout_s=timeout_s, quiet=True)
        processors.append(exporter)
    if quiet:
        progress: Any = contextlib.nullcontext()
    else:
        from recursa.cli.progress import LiveProgress

        progress = LiveProgress(err)
        processors.append(progress)
    try:
        with progress:
            if resume:
                return rlm.resume(resume, trace=trace, processors=processors, question=question)
            return rlm.run(question, ctx, trace=trace, run_id=run_id, processors=processors)
    finally:
        if exporter is not None:
            exporter.force_flush(int((timeout_s or OTLP_TIMEOUT_S) * 1000) + 1000)
            if exporter.export_failed and not quiet:
                err.print("[yellow]warning:[/] --otel: the OTLP collector did not take the spans")


def _summary(err: Any, result: Any) -> None:
    cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.4f}"
    if result.cost_usd is not None and not result.cost_complete:
        cost += " (some calls unpriced)"
    err.print(
        f"[dim]{result.stop_reason.value} after {result.iterations} iteration(s), "
        f"{result.usage.calls} LM call(s), {result.usage.total_tokens:,} tokens, {cost}, "
        f"{result.wall_time_s:.1f}s[/]"
    )
    if result.cache_hits or result.replayed_calls:
        err.print(
            f"[dim]{result.replayed_calls} call(s) replayed from the journal, "
            f"{result.cache_hits} from the cache (saved ${result.saved_usd:.4f})[/]"
        )
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {_safe(warning)}")
    if result.partial:
        why = _safe(result.detail or result.stop_reason)
        err.print(f"[yellow]stopped before a final answer:[/] {why}")
    if result.trace_path:
        err.print(f"[dim]run {result.run_id} · trace: {escape(str(result.trace_path))}[/]")


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
