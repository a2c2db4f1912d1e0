"""``recursa batch``: answer every question of a JSONL file, locally or on a Ray cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recursa.cli.options import (
    BaseURL,
    CellTimeout,
    Concurrency,
    LimitOptions,
    MaxCalls,
    MaxCost,
    MaxDepth,
    MaxIterations,
    MaxTokens,
    Prices,
    Sandbox,
    StrategyOption,
    SubModel,
    model_option,
    price_table,
    strategy_choice,
    timeout_option,
)

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["EXIT_FAILED", "EXIT_PARTIAL", "register"]

EXIT_FAILED = 1  # some item failed (its line says why)
EXIT_PARTIAL = 3  # as `recursa ask`: a limit stopped some run, or items were left unstarted


def batch_cmd(
    items: Annotated[
        Path,
        typer.Argument(
            help="JSONL file, one item a line: {id, question, context|paths, limits?}.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Results file (.jsonl, or .parquet with the parquet extra).",
            show_default=False,
        ),
    ],
    executor: Annotated[
        str, typer.Option("--executor", help="local (this process) or ray (a Ray cluster).")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="Ray cluster: auto, ray://host:10001 (default: a local Ray)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Items in flight at once. [default: 8 local; ray: the cluster's CPUs x 4]",
        ),
    ] = None,
    max_cost_total: Annotated[
        float | None, typer.Option("--max-cost-total", help="USD for the whole batch.")
    ] = None,
    max_calls_total: Annotated[
        int | None, typer.Option("--max-calls-total", help="LM calls for the whole batch.")
    ] = None,
    timeout_total: Annotated[
        float | None,
        typer.Option("--timeout-total", help="Wall clock for the whole batch, in seconds."),
    ] = None,
    rpm: Annotated[
        float | None,
        typer.Option("--rpm", help="Provider requests per minute, shared by every worker."),
    ] = None,
    tpm: Annotated[
        float | None,
        typer.Option("--tpm", help="Provider tokens per minute, shared by every worker."),
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run again the items whose line has an error.")
    ] = False,
    model: Annotated[
        str | None, model_option("Root model as provider:model (default: $RECURSA_MODEL).")
    ] = None,
    sub_model: SubModel = None,
    base_url: BaseURL = None,
    max_depth: MaxDepth = 1,
    max_iterations: MaxIterations = 30,
    max_cost: MaxCost = None,
    max_calls: MaxCalls = None,
    max_tokens: MaxTokens = None,
    timeout: Annotated[
        float, timeout_option("Wall-clock limit of each item's run, in seconds; 0 for none.")
    ] = 3600.0,
    cell_timeout: CellTimeout = 120.0,
    concurrency: Concurrency = 16,
    sandbox: Sandbox = "process",
    strategy: StrategyOption = "rlm",
    prices: Prices = None,
    runs_root: Annotated[
        Path | None,
        typer.Option("--runs-dir", help="Where run journals go (default: the data folder)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
) -> int:
    """Answer every item of ITEMS and write one result line per item id to --out.

    Results are written as items finish; running the same command again skips the ids --out
    holds and resumes unfinished runs from their journals. Per-run limits (--max-cost...) apply
    to each item (an item's "limits" override them); --*-total limits apply to the batch.
    Exit status: 0 when every item got a final answer, 3 when a limit stopped some (or left
    items unstarted), 1 when some item failed, 2 for bad input or configuration.
    """
    from rich.console import Console

    from recursa.batch import BatchLimits, ResultsWriter, batch, load_items
    from recursa.rlm import RLM

    err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)
    todo = load_items(items)  # bad items and a bad --out are reported before any model is built
    ResultsWriter(out)
    limits = LimitOptions(
        max_iterations=max_iterations,
        max_depth=max_depth,
        max_cost=max_cost,
        max_calls=max_calls,
        max_tokens=max_tokens,
        timeout=timeout or None,
        cell_timeout=cell_timeout,
        concurrency=concurrency,
    ).limits()
    rlm = RLM(
        model,
        sub_model,
        limits=limits,
        base_url=base_url,
        sandbox=sandbox,
        prices=price_table(prices),
        strategy=strategy_choice(strategy),
        runs_root=runs_root,
    )
    totals = BatchLimits(
        max_cost_usd=max_cost_total,
        max_llm_calls=max_calls_total,
        timeout_s=timeout_total,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
    )
    summary: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:

        def keep_summary(kind: str, data: Any) -> None:
            if kind == "end":
                summary.update(data)

        handlers: list[Callable[[str, Any], None]] = [keep_summary]
        if not quiet:
            from recursa.batch.progress import BatchProgress

            progress = stack.enter_context(BatchProgress(err, len(todo)))
            handlers.append(progress.event)

        def on_event(kind: str, data: Any) -> None:
            for handler in handlers:
                handler(kind, data)

        run = batch(rlm, todo, out=out, executor=executor, workers=workers, address=address,
                    limits=totals, retry_failed=retry_failed, on_event=on_event)  # fmt: skip
        for _ in run:
            pass
    if not quiet:
        _print_summary(err, summary, out)
    return _exit_status(summary)


def _print_summary(err: Console, summary: dict[str, Any], out: Path) -> None:
    from rich.markup import escape

    from recursa.batch.progress import summary_lines

    for line in summary_lines(summary):
        err.print(line)
    err.print(f"[dim]results: {escape(str(out))}[/]")


def _exit_status(summary: dict[str, Any]) -> int:
    if summary.get("failed"):
        return EXIT_FAILED
    if summary.get("partial") or summary.get("left"):
        return EXIT_PARTIAL
    return 0


def register(app: typer.Typer) -> None:
    app.command("batch")(batch_cmd)
