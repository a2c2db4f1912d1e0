"""``recursa ask``: answer a question over files, folders or standard input."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    StrategyOption,
    SubModel,
    SubToolsOption,
    SystemPromptFile,
    ToolsOption,
    ToolTimeout,
    context_bytes,
    max_sandboxes_option,
    model_option,
    price_table,
    prologue_text,
    strategy_choice,
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
from recursa.errors import ConfigError, ContextError, RecursaError

if TYPE_CHECKING:
    from rich.console import Console

    from recursa.context import Context
    from recursa.rlm import RLM
    from recursa.trace.otel import OTelProcessor
    from recursa.trace.spans import TraceProcessor
    from recursa.types import Result

__all__ = ["register"]

EXIT_PARTIAL = 3
_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean_question(question: str, err: Console, quiet: bool) -> str:
    """The question with lone surrogates (bytes of the command line that were not UTF-8)
    replaced by U+FFFD: nothing downstream (HTTP bodies, the journal) can encode them."""
    cleaned, n = _SURROGATE.subn("\ufffd", question)
    if n and not quiet:
        err.print(f"[yellow]note:[/] the question held {n} byte(s) that are not UTF-8: replaced")
    return cleaned


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        raise ContextError("--context - reads standard input, but nothing is piped in")
    return sys.stdin.buffer.read()


def context_sources(values: list[str]) -> list[bytes | Path]:
    """``--context`` values as load_context sources: ``-`` is stdin, anything else a path."""
    if not values:
        raise ContextError(
            "no context given: pass --context FILE, --context FOLDER or --context - for stdin"
        )
    if values.count("-") > 1:
        raise ContextError("--context - (standard input) can be given only once")
    return [_read_stdin() if v == "-" else Path(v) for v in values]


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
        model_option(
            "Root model as provider:model (openai:gpt-5-mini, anthropic:claude-sonnet-4-5, "
            "ollama:qwen2.5-coder, local). Default: $RECURSA_MODEL, else the embedded local model."
        ),
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
        float, timeout_option("Wall-clock limit for the whole run, in seconds; 0 for none.")
    ] = 3600.0,
    cell_timeout: CellTimeout = 120.0,
    concurrency: Concurrency = 16,
    max_sandboxes: Annotated[
        int | None,
        max_sandboxes_option(
            "Sandbox processes alive at once (the root's and child RLMs'); more children "
            "wait. At least --max-depth + 1. [default: 8, or --max-depth + 1 if more]"
        ),
    ] = None,
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
    sandbox: Sandbox = "process",
    strategy: StrategyOption = "rlm",
    compaction: Compaction = None,
    compaction_threshold: CompactionThreshold = 0.85,
    root_window: RootWindow = None,
    prices: Prices = None,
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
    with json_errors(as_json):
        from rich.console import Console

        # emoji=False: notes quote paths, model ids and answers; soft_wrap: no hard wrap in pipes.
        err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)
        ctx: Context | None = None
        if resume:
            from recursa.rlm import RLM

            # Tools are code, not data: a resumed run gets them from --tools again, never
            # from its journal (which would import whatever module the journal names).
            objects = {"cache": cache, **tool_kwargs(tools, sub_tools)}
            rlm, run_id = RLM.from_journal(resume, **objects), resume
        else:
            if not question or not question.strip():
                raise ConfigError("the question is empty: say what you want to know")
            strategy = strategy_choice(strategy)
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
            from recursa.context import load_context
            from recursa.rlm import new_run_id

            question = _clean_question(question, err, quiet)
            max_file_bytes, max_context_bytes = context_bytes(max_file_mb, max_context_mb)
            # The user's input is checked before anything else (models, keys): its errors
            # come first.
            ctx = load_context(
                *context_sources(context),
                max_file_bytes=max_file_bytes,
                max_context_bytes=max_context_bytes,
                format=context_format,
            )
            limits = LimitOptions(
                max_iterations=max_iterations,
                max_depth=max_depth,
                max_cost=max_cost,
                max_calls=max_calls,
                max_tokens=max_tokens,
                timeout=timeout or None,  # 0: no wall-clock limit
                cell_timeout=cell_timeout,
                max_sandboxes=max_sandboxes,
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
                strategy=strategy,
                sampling=sampling,
                compaction=compaction,
                compaction_threshold=compaction_threshold,
                root_window=root_window,
                system_prompt=system_prompt,
                prologue=prologue,
                tools=tools,
                sub_tools=sub_tools,
            )
            run_id = new_run_id()
            if not quiet:
                _new_run_notes(err, ctx, cache, temperature)
        try:
            result = _run(rlm, question, ctx, run_id, resume, trace, quiet, err, otel)
        except (KeyboardInterrupt, RecursaError) as exc:
            paid = not isinstance(exc, ConfigError) and _journaled_calls(rlm, run_id) > 0
            if rlm.journal and not quiet and paid:  # nothing journaled: nothing to resume
                err.print(f"[dim]resume with: recursa ask --resume {escape(run_id)}[/]")
            raise
        data = result.to_dict()
        emit(json.dumps(data, ensure_ascii=False, indent=2) if as_json else result.answer)
        if not quiet:
            _summary(err, result)
        return 0 if not result.partial else EXIT_PARTIAL


def _new_run_notes(err: Console, ctx: Context, cache: bool, temperature: float | None) -> None:
    if cache and temperature:
        err.print(
            f"[yellow]warning:[/] --cache stores only temperature-0 calls: with "
            f"--temperature {temperature:g}, API models' calls are not cached"
        )
    for warning in ctx.warnings:
        err.print(f"[yellow]note:[/] {safe(warning)}")


def _journaled_calls(rlm: RLM, run_id: str) -> int:
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


def new_rlm(
    model: str | None,
    sub_model: str | None,
    limits: LimitOptions,
    *,
    base_url: str | None,
    sandbox: str,
    profile: str | None,
    prices: Path | None,
    temperature: float | None,
    sub_calls: bool,
    journal: bool,
    cache: bool,
    strategy: str = "rlm",
    sampling: Mapping[str, Any] | None = None,
    compaction: bool | None = None,
    compaction_threshold: float = 0.85,
    root_window: int | None = None,
    system_prompt: Path | None = None,
    prologue: str | None = None,
    tools: str | None = None,
    sub_tools: str | None = None,
) -> RLM:
    """The RLM for a new run, from the flags of ``ask`` and ``chat`` as given: the
    ``--system-prompt`` file is read, ``--prologue`` resolved (``@FILE``) and ``--tools`` /
    ``--sub-tools`` imported here, in one place for both commands."""
    from recursa.prompts import read_prompt
    from recursa.rlm import RLM

    return RLM(
        model,
        sub_model,
        limits=limits.limits(),
        base_url=base_url,
        sandbox=sandbox,
        prompt_profile=profile,
        prices=price_table(prices),
        # --cache only stores calls whose answer is fixed by their input: without a temperature
        # of its own, it asks for temperature 0 (else an API model would never be cached).
        temperature=0.0 if cache and temperature is None else temperature,
        sub_calls=sub_calls,
        journal=journal,
        cache=cache,
        strategy=strategy,
        compaction=compaction,
        compaction_threshold=compaction_threshold,
        root_window=root_window,
        system_prompt=read_prompt(system_prompt, what="--system-prompt") if system_prompt else None,
        prologue=prologue_text(prologue),
        **tool_kwargs(tools, sub_tools),  # tools, sub_tools: loaded from --tools, --sub-tools
        **dict(sampling or {}),  # top_p, reasoning_effort, provider_options, sub_sampling...
    )


OTLP_TIMEOUT_S = 2.0  # one --otel export, retries included, unless OTEL_* says otherwise
_OTLP_TIMEOUT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")


def _otlp_timeout_set() -> bool:
    return any(os.environ.get(v) for v in _OTLP_TIMEOUT_VARS)


def _otlp_exporter(timeout_s: float | None) -> OTelProcessor:
    from recursa.trace.otel import OTelProcessor

    return OTelProcessor.otlp(timeout_s=timeout_s, quiet=True)


def _run(
    rlm: RLM,
    question: str | None,
    ctx: Context | None,
    run_id: str,
    resume: str | None,
    trace: Path | None,
    quiet: bool,
    err: Console,
    otel: bool = False,
) -> Result:
    """Run (or resume) with live progress on stderr unless quiet, exporting spans if asked."""
    # A collector that is down must cost seconds, not minutes, and print no tracebacks.
    timeout_s = None if _otlp_timeout_set() else OTLP_TIMEOUT_S
    exporter = _otlp_exporter(timeout_s) if otel else None
    processors: list[TraceProcessor] = [] if exporter is None else [exporter]
    try:
        with contextlib.ExitStack() as stack:
            if not quiet:
                from recursa.cli.progress import LiveProgress

                processors.append(stack.enter_context(LiveProgress(err)))
            if resume:
                # A descriptor that also works on the class: typed Any, hence the annotation.
                resumed: Result = rlm.resume(
                    resume, trace=trace, processors=processors, question=question
                )
                return resumed
            # ask() starts no new run without both.
            assert question is not None
            assert ctx is not None
            return rlm.run(question, ctx, trace=trace, run_id=run_id, processors=processors)
    finally:
        if exporter is not None:
            exporter.force_flush(int((timeout_s or OTLP_TIMEOUT_S) * 1000) + 1000)
            if exporter.export_failed and not quiet:
                err.print("[yellow]warning:[/] --otel: the OTLP collector did not take the spans")


def _summary(err: Console, result: Result) -> None:
    cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.4f}"
    if result.cost_usd is not None and not result.cost_complete:
        cost += " (some calls unpriced)"
    if result.strategy != "rlm" or result.strategy_reason.startswith("auto"):
        err.print(f"[dim]strategy: {safe(result.strategy_reason or result.strategy)}[/]")
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
        err.print(f"[yellow]warning:[/] {safe(warning)}")
    if result.partial:
        why = safe(result.detail or result.stop_reason)
        err.print(f"[yellow]stopped before a final answer:[/] {why}")
    if result.trace_path:
        err.print(f"[dim]run {result.run_id} · trace: {escape(str(result.trace_path))}[/]")


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
