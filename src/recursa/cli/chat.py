"""``recursa chat``: ask questions one after another over the same contexts, in ONE REPL.

Interactive on a terminal (line editing and a history file through :mod:`readline`; Ctrl-C
cancels the question being answered, not the session; Ctrl-D or ``/exit`` leaves). With
``--json``, questions are read one per line from standard input and each answer is printed as
one JSON line, for scripts. ``--resume ID`` rebuilds a session that was killed or closed (its
journaled calls are replayed, never paid for again) and goes on.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from rich.markup import escape

from recursa.cli.options import (
    BaseURL,
    CellTimeout,
    Compaction,
    CompactionThreshold,
    Concurrency,
    ContextFormat,
    LimitOptions,
    MaxCalls,
    MaxContextMB,
    MaxCost,
    MaxDepth,
    MaxFileMB,
    MaxIterations,
    MaxOutputChars,
    MaxTokens,
    MaxToolCalls,
    NoSubCalls,
    Prices,
    ProfileOption,
    Prologue,
    RootWindow,
    Sandbox,
    SubModel,
    SubToolsOption,
    SystemPromptFile,
    ToolsOption,
    ToolTimeout,
    context_bytes,
    model_option,
    timeout_option,
    tool_kwargs,
)
from recursa.cli.output import emit, json_errors, safe
from recursa.cli.sampling import (
    MaxOutputTokens,
    ProviderOption,
    ReasoningEffort,
    SamplingOptions,
    SubMaxOutputTokens,
    SubProviderOption,
    SubReasoningEffort,
    SubTemperature,
    SubTopP,
    Temperature,
    TopP,
)
from recursa.errors import ConfigError, RecursaError

if TYPE_CHECKING:
    from rich.console import Console

    from recursa.session import Session
    from recursa.trace.spans import TraceProcessor
    from recursa.types import Result

__all__ = ["register"]

HELP = (
    "Commands: /context PATH (add a context), /history, /help, /exit. "
    "Ctrl-C cancels the current question; Ctrl-D leaves."
)


def chat(
    context: Annotated[
        list[str],
        typer.Option(
            "--context",
            "-c",
            help="A file or a folder; each one is a context of its own (context, context_1...). "
            "Repeat for several.",
            show_default=False,
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    model: Annotated[
        str | None,
        model_option("Root model as provider:model. Default: $RECURSA_MODEL, else local."),
    ] = None,
    sub_model: SubModel = None,
    max_file_mb: MaxFileMB = 256.0,
    max_context_mb: MaxContextMB = 512.0,
    context_format: ContextFormat = "text",
    base_url: BaseURL = None,
    max_depth: MaxDepth = 1,
    max_iterations: MaxIterations = 30,
    max_cost: MaxCost = None,
    max_calls: MaxCalls = None,
    max_tokens: MaxTokens = None,
    timeout: Annotated[
        float, timeout_option("Wall-clock limit per question, in seconds; 0 for none.")
    ] = 3600.0,
    cell_timeout: CellTimeout = 120.0,
    concurrency: Concurrency = 16,
    max_output_chars: MaxOutputChars = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    max_output_tokens: MaxOutputTokens = None,
    reasoning_effort: ReasoningEffort = None,
    provider_option: ProviderOption = [],  # noqa: B006 - typer needs a literal default
    sub_temperature: SubTemperature = None,
    sub_top_p: SubTopP = None,
    sub_max_output_tokens: SubMaxOutputTokens = None,
    sub_reasoning_effort: SubReasoningEffort = None,
    sub_provider_option: SubProviderOption = [],  # noqa: B006 - typer needs a literal default
    profile: ProfileOption = None,
    system_prompt: SystemPromptFile = None,
    prologue: Prologue = None,
    no_sub_calls: NoSubCalls = False,
    tools: ToolsOption = None,
    sub_tools: SubToolsOption = None,
    max_tool_calls: MaxToolCalls = None,
    tool_timeout: ToolTimeout = 30.0,
    compaction: Compaction = None,
    compaction_threshold: CompactionThreshold = 0.85,
    root_window: RootWindow = None,
    sandbox: Sandbox = "process",
    prices: Prices = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Read questions from stdin, one per line; print one JSON result per line.",
        ),
    ] = False,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="Write the session's trace (JSONL) here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue a session (its id is printed at the start; `recursa runs list` "
            "shows them): the REPL is rebuilt from its journal, no call is paid again.",
        ),
    ] = None,
    no_journal: Annotated[
        bool,
        typer.Option("--no-journal", help="Do not record the session (it cannot be resumed)."),
    ] = False,
    cache: Annotated[
        bool,
        typer.Option("--cache", help="Answer repeated requests from the shared call cache."),
    ] = False,
) -> int:
    """Ask questions one after another over the same contexts, in one REPL.

    Variables and earlier answers stay between questions (`history` in the REPL). Exit status:
    0 at the end of the input, 2 for bad input or configuration, 1 when the session could not
    go on. In --json mode a question that fails prints {"error": ...} and the session goes on.
    """
    with json_errors(as_json):
        from rich.console import Console

        err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)
        if resume:
            from recursa.rlm import RLM

            # Tools are code, not data: given again with --tools, never read from the journal.
            rlm = RLM.from_journal(resume, cache=cache, **tool_kwargs(tools, sub_tools))
            session = rlm.resume_session(resume, trace=trace)
            if not quiet and session.turns:
                replayed = len(session.turns)
                err.print(
                    f"[dim]resumed session {escape(resume)}: {replayed} earlier question(s) "
                    "replayed from the journal[/]"
                )
            if session.resumed is not None:
                _show(session.resumed, as_json, err, quiet, session.turns[-1].question)
        else:
            if not context:
                raise ConfigError("no context given: pass --context PATH (repeat for several)")
            from recursa.cli.ask import context_sources, new_rlm
            from recursa.context import load_context

            sampling = SamplingOptions(
                top_p=top_p,
                max_output_tokens=max_output_tokens,
                reasoning_effort=reasoning_effort,
                provider_options=provider_option,
                sub_temperature=sub_temperature,
                sub_top_p=sub_top_p,
                sub_max_output_tokens=sub_max_output_tokens,
                sub_reasoning_effort=sub_reasoning_effort,
                sub_provider_options=sub_provider_option,
            ).rlm_kwargs()
            max_file, max_total = context_bytes(max_file_mb, max_context_mb)
            contexts = [
                load_context(
                    src,
                    max_file_bytes=max_file,
                    max_context_bytes=max_total,
                    format=context_format,
                )
                for src in context_sources(context)
            ]
            limits = LimitOptions(
                max_iterations=max_iterations,
                max_depth=max_depth,
                max_cost=max_cost,
                max_calls=max_calls,
                max_tokens=max_tokens,
                timeout=timeout or None,
                cell_timeout=cell_timeout,
                max_sandboxes=None,
                concurrency=concurrency,
                max_output_chars=max_output_chars,
                max_tool_calls=max_tool_calls,
                tool_timeout=tool_timeout or None,  # 0: no limit
            )
            rlm = new_rlm(
                model,
                sub_model,
                limits,
                base_url=base_url,
                sandbox=sandbox,
                profile=profile,
                prices=prices,
                temperature=temperature,
                sub_calls=not no_sub_calls,
                journal=not no_journal,
                cache=cache,
                sampling=sampling,
                compaction=compaction,
                compaction_threshold=compaction_threshold,
                root_window=root_window,
                system_prompt=system_prompt,
                prologue=prologue,
                tools=tools,
                sub_tools=sub_tools,
            )
            session = rlm.session(*contexts, trace=trace)
        with contextlib.closing(session):
            if not quiet and not as_json:
                err.print(f"[dim]session {escape(session.session_id)} · {HELP}[/]")
            if as_json:
                _json_loop(session, sys.stdin, err, quiet)
            else:
                _interactive(session, err, quiet)
        return 0


def _json_loop(session: Session, lines: TextIO, err: Console, quiet: bool) -> None:
    """One question per input line; one JSON object per answer (or per error) on stdout."""
    for line in lines:
        question = line.strip()
        if not question:
            continue
        try:
            result = _ask(session, question, err, quiet)
        except RecursaError as exc:
            partial = exc.result.to_dict() if exc.result is not None else None
            error = {"type": type(exc).__name__, "message": str(exc)}
            emit(json.dumps({"question": question, "error": error, "partial": partial}))
            continue
        emit(json.dumps({"question": question, **result.to_dict()}, ensure_ascii=False))


def _interactive(session: Session, err: Console, quiet: bool) -> None:
    history_file = _readline_history()
    # The prompt only on a terminal: piped, stdout holds the answers alone.
    prompt = "? " if sys.stdin.isatty() and sys.stdout.isatty() else ""
    try:
        while True:
            try:
                question = input(prompt).strip()
            except EOFError:
                err.print()
                return
            except KeyboardInterrupt:
                err.print("\n[dim](Ctrl-D or /exit leaves)[/]")
                continue
            if not question:
                continue
            if question.startswith("/"):
                if _command(session, question, err):
                    return
                continue
            try:
                result = _ask(session, question, err, quiet)
            except KeyboardInterrupt:
                err.print("[yellow]cancelled[/] (the session goes on)")
                continue
            except RecursaError as exc:
                err.print(f"[bold red]error:[/] {safe(str(exc))}")
                if exc.result is not None and exc.result.answer:
                    _show(exc.result, False, err, quiet)
                continue
            _show(result, False, err, quiet)
    finally:
        if history_file is not None:
            with contextlib.suppress(OSError, ImportError):
                import readline

                readline.write_history_file(history_file)


def _command(session: Session, line: str, err: Console) -> bool:
    """Run a /command; True to leave."""
    name, _, arg = line.partition(" ")
    if name in ("/exit", "/quit"):
        return True
    if name == "/help":
        err.print(HELP)
    elif name == "/history":
        for i, item in enumerate(session.history, start=1):
            err.print(f"[bold]{i}.[/] {safe(item['question'])}\n   {safe(item['answer'])}")
    elif name == "/context":
        if not arg.strip():
            err.print("usage: /context PATH")
            return False
        from recursa.cli.ask import context_sources

        try:
            added = session.add_context(*context_sources([arg.strip()]))
        except RecursaError as exc:
            err.print(f"[bold red]error:[/] {safe(str(exc))}")
        else:
            err.print(f"[dim]loaded as {added}[/]")
    else:
        err.print(f"unknown command {safe(name)}. {HELP}")
    return False


def _ask(session: Session, question: str, err: Console, quiet: bool) -> Result:
    processors: list[TraceProcessor] = []
    with contextlib.ExitStack() as stack:
        if not quiet:
            from recursa.cli.progress import LiveProgress

            processors.append(stack.enter_context(LiveProgress(err)))
        return session.ask(question, processors=processors)


def _show(result: Result, as_json: bool, err: Console, quiet: bool, question: str = "") -> None:
    if as_json:
        emit(json.dumps({"question": question, **result.to_dict()}, ensure_ascii=False))
        return
    emit(result.answer)
    if not quiet:
        err.print(
            f"[dim]{result.stop_reason.value} · {result.iterations} iteration(s) · "
            f"{result.usage.total_tokens:,} tokens · {result.wall_time_s:.1f}s[/]"
        )


def _readline_history() -> str | None:
    """Line editing and a history file for the prompt, where readline exists."""
    if not sys.stdin.isatty():
        return None
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input() still works
        return None
    from recursa.paths import data_dir

    path = data_dir() / "chat_history"
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            readline.read_history_file(path)
    readline.set_history_length(1000)
    return str(path)


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
