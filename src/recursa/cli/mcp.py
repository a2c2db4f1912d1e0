"""``recursa mcp``: the MCP server (stdio by default, streamable HTTP with --http)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recursa.cli.options import (
    CellTimeout,
    LimitOptions,
    MaxCalls,
    MaxContextMB,
    MaxCost,
    MaxDepth,
    MaxFileMB,
    MaxIterations,
    MaxTokens,
    ProviderURLs,
    Sandbox,
    SubModel,
    context_bytes,
    model_option,
    timeout_option,
)
from recursa.cli.serve import server_config
from recursa.errors import MissingDependencyError

__all__ = ["register"]

# MCP's own texts for options whose meaning differs from `recursa serve`'s (no 'rlm' model
# name, no HTTP 429, no per-request timeouts here).
Model = Annotated[
    str | None,
    model_option(
        "Model for the ask tool as provider:model. Default: $RECURSA_MODEL, else the "
        "embedded local model."
    ),
]
MaxRuns = Annotated[
    int,
    typer.Option(
        "--max-concurrent-runs",
        help="ask calls running at once; one more fails at once with a 'busy' tool error.",
    ),
]
Timeout = Annotated[float, timeout_option("Wall-clock seconds per ask call.")]
NoStore = Annotated[
    bool,
    typer.Option(
        "--no-store",
        help="Keep no traces or summaries of runs; ask_trace then has nothing to show.",
    ),
]
KeepRuns = Annotated[
    int,
    typer.Option(
        "--keep-runs",
        help="Runs ask_trace can show (oldest go); shared with `recursa serve`'s store.",
    ),
]


def mcp(
    root: Annotated[
        list[Path],
        typer.Option(
            "--root",
            "-r",
            help="A folder `ask` may read (repeatable; default: the current folder). "
            "Paths outside every root are refused, symlinks included.",
            show_default=False,
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    model: Model = None,
    sub_model: SubModel = None,
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP at /mcp instead of stdio.")
    ] = False,
    host: Annotated[str, typer.Option("--host", help="Address for --http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port for --http.")] = 8765,
    max_runs: MaxRuns = 2,
    base_url: ProviderURLs = [],  # noqa: B006 - typer needs a literal default
    sandbox: Sandbox = "process",
    max_iterations: MaxIterations = 30,
    max_depth: MaxDepth = 1,
    max_cost: MaxCost = None,
    max_calls: MaxCalls = None,
    max_tokens: MaxTokens = None,
    timeout: Timeout = 600.0,
    cell_timeout: CellTimeout = 120.0,
    no_store: NoStore = False,
    keep_runs: KeepRuns = 1000,
    max_file_mb: MaxFileMB = 256.0,
    max_context_mb: MaxContextMB = 512.0,
) -> None:
    """Give MCP clients (Claude Desktop, Cursor, agents...) an `ask` tool backed by RLMs.

    Speaks MCP over stdio (the client starts this command), or streamable HTTP with --http.
    Tools: ask(question, paths | text) answers over files and folders under the --root folders
    (or over text) and reports progress; ask_trace(run_id) shows what a past run did.
    """
    try:
        from recursa.server.mcp_server import run_mcp
    except ImportError as exc:
        raise MissingDependencyError("recursa mcp", "server", exc.name) from None
    from recursa.server.roots import Roots

    max_file_bytes, max_context_bytes = context_bytes(max_file_mb, max_context_mb)
    roots = Roots(
        root or [Path.cwd()],
        max_file_bytes=max_file_bytes,
        max_context_bytes=max_context_bytes,
    )
    limits = LimitOptions(
        max_iterations=max_iterations,
        max_depth=max_depth,
        max_cost=max_cost,
        max_calls=max_calls,
        max_tokens=max_tokens,
        timeout=timeout,
        cell_timeout=cell_timeout,
    )
    config = server_config(
        model=model,
        sub_model=sub_model,
        base_url=base_url,
        sandbox=sandbox,
        limits=limits,
        max_runs=max_runs,
        no_store=no_store,
        keep_runs=keep_runs,
    )
    # Nothing may be printed to stdout here: with stdio it is the protocol channel.
    run_mcp(config, roots, transport="streamable-http" if http else "stdio", host=host, port=port)


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp)
