"""``recursa serve``: the OpenAI-compatible HTTP API. Also the options ``recursa mcp`` shares."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recursa.cli.options import (
    MIB,
    CellTimeout,
    LimitOptions,
    MaxCalls,
    MaxCost,
    MaxDepth,
    MaxIterations,
    MaxTokens,
    ProviderURLs,
    Sandbox,
    StrategyOption,
    SubModel,
    max_sandboxes_option,
    model_option,
    strategy_choice,
    timeout_option,
)
from recursa.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from recursa.server.config import ServerConfig

__all__ = ["base_urls", "register", "server_config"]

# ---- serve's own options (`recursa mcp` words these for its tool calls) -----------------------

MaxRuns = Annotated[
    int,
    typer.Option(
        "--max-concurrent-runs", help="Runs at once; more are refused at once (HTTP 429)."
    ),
]
NoStore = Annotated[
    bool,
    typer.Option(
        "--no-store",
        help="Keep no traces or summaries of runs (they are kept in server-runs/ under the data "
        "folder, ~/.local/share/recursa by default).",
    ),
]
KeepRuns = Annotated[int, typer.Option("--keep-runs", help="Stored runs to keep (oldest go).")]


def server_config(
    *,
    model: str | None,
    sub_model: str | None,
    base_url: Sequence[str],
    sandbox: str,
    limits: LimitOptions,
    max_runs: int,
    no_store: bool,
    keep_runs: int,
    strategy: str = "rlm",
    **extra: Any,
) -> ServerConfig:
    """A checked :class:`~recursa.server.config.ServerConfig` from the options ``serve`` and
    ``mcp`` share; ``extra`` holds further ServerConfig fields (``serve``'s own options)."""
    from recursa.server.config import ServerConfig

    strategy = strategy_choice(strategy)
    run_limits = limits.limits()  # a bad limit is reported before a bad --base-url
    config = ServerConfig(
        model=model,
        sub_model=sub_model,
        base_urls=base_urls(base_url, model),
        limits=run_limits,
        max_concurrent_runs=max_runs,
        store_runs=not no_store,
        keep_runs=keep_runs,
        rlm_options={"sandbox": sandbox, "strategy": strategy},
        **extra,
    )
    _check_models(config)
    return config


_PROVIDER_URL = re.compile(r"^(?P<provider>[A-Za-z][A-Za-z0-9_.-]*)=(?P<url>\S.*)$")


def base_urls(values: Sequence[str], model: str | None) -> dict[str, str]:
    """``--base-url`` values as ``{provider: url}``: ``PROVIDER=URL``, or a bare URL for the
    provider of ``model`` (the root model; default: ``$RECURSA_MODEL``, else ``local``)."""
    from recursa.lm.registry import default_model_spec, parse_model

    out: dict[str, str] = {}
    for value in values:
        match = _PROVIDER_URL.match(value.strip())
        if match:
            provider, url = match["provider"].lower(), match["url"].strip()
        else:
            provider, url = parse_model(model or default_model_spec())[0], value.strip()
        if not url:
            raise ConfigError("--base-url is empty: give a URL, or PROVIDER=URL")
        if provider in out:
            raise ConfigError(
                f"--base-url names two URLs for {provider}: {out[provider]} and {url}"
            )
        out[provider] = url
    return out


def _check_models(config: ServerConfig) -> None:
    """Fail at start, not on every request, when a configured model cannot be built."""
    from recursa.lm.registry import parse_model
    from recursa.rlm import RLM
    from recursa.server.runs import build_models

    for choice in config.model_names().values():
        # The embedded model is built lazily and may need to fetch weights: not at start. But
        # without llama_cpp it can never be built: say so now, not with a 404 on every request.
        if parse_model(choice.root)[0] == "local":
            from recursa.lm.local import _llama_cpp_installed

            if not _llama_cpp_installed():
                raise MissingDependencyError(
                    f"model {choice.name!r} ({choice.root}, the embedded local model)", "local"
                )
            continue
        try:
            models = build_models(config, choice)
            RLM(*models[:2], **dict(config.rlm_options))
        except ConfigError as exc:
            raise ConfigError(
                f"model {choice.name!r} ({choice.root}) cannot be used: {exc}"
            ) from exc


def need_server_extra(feature: str) -> None:
    try:
        import sse_starlette  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(feature, "server", exc.name) from None


def _aliases(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise ConfigError(
                f"--alias {value!r}: write NAME=PROVIDER:MODEL, e.g. fast=openai:gpt-5-mini"
            )
        out[name.strip()] = spec.strip()
    return out


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port (0: any free one).")] = 8000,
    model: Annotated[
        str | None,
        model_option(
            "Root model as provider:model (the model clients get as 'rlm'). "
            "Default: $RECURSA_MODEL, else the embedded local model."
        ),
    ] = None,
    sub_model: SubModel = None,
    alias: Annotated[
        list[str],
        typer.Option(
            "--alias",
            help="Another model name clients may send: NAME=PROVIDER:MODEL (repeatable).",
            show_default=False,
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    allow_model: Annotated[
        list[str],
        typer.Option(
            "--allow-model",
            help="Let clients pick models matching this PROVIDER:MODEL pattern as "
            "rlm:PROVIDER:MODEL (fnmatch: 'openai:gpt-5*', 'anthropic:*'; repeatable). "
            "Default: only the configured models (--model, --sub-model, --alias).",
            show_default=False,
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    fixed_models: Annotated[
        bool,
        typer.Option(
            "--fixed-models",
            help="Only 'rlm', aliases and configured models (the default without --allow-model).",
        ),
    ] = False,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="RECURSA_SERVER_API_KEY",
            help="Require 'Authorization: Bearer KEY' on every request ($RECURSA_SERVER_API_KEY).",
            show_default=False,
        ),
    ] = None,
    progress: Annotated[
        bool,
        typer.Option(
            "--progress", help="Stream progress chunks by default (requests may turn them off)."
        ),
    ] = False,
    max_runs: MaxRuns = 4,
    max_sessions: Annotated[
        int,
        typer.Option(
            "--max-sessions",
            help='Live sessions at once (requests with "recursa": {"session": ID}); the one '
            "idle longest is closed to make room.",
        ),
    ] = 16,
    session_idle: Annotated[
        float,
        typer.Option("--session-idle", help="Close a session after this many idle seconds."),
    ] = 900.0,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", help="Largest request body, in MiB (413 past it).")
    ] = 32.0,
    base_url: ProviderURLs = [],  # noqa: B006 - typer needs a literal default
    sandbox: Sandbox = "process",
    strategy: StrategyOption = "rlm",
    max_iterations: MaxIterations = 30,
    max_depth: MaxDepth = 1,
    max_cost: MaxCost = None,
    max_calls: MaxCalls = None,
    max_tokens: MaxTokens = None,
    timeout: Annotated[
        float,
        timeout_option("Wall-clock seconds per run (requests may lower it)."),
    ] = 600.0,
    cell_timeout: CellTimeout = 120.0,
    max_sandboxes: Annotated[
        int | None,
        max_sandboxes_option(
            "Sandbox processes alive at once per run (root and child RLMs; at least "
            "--max-depth + 1; default 8, or --max-depth + 1 if more). The most a server runs "
            "is this times --max-concurrent-runs."
        ),
    ] = None,
    no_store: NoStore = False,
    keep_runs: KeepRuns = 1000,
    log_level: Annotated[
        str, typer.Option("--log-level", help="uvicorn log level: debug, info, warning, error.")
    ] = "info",
) -> None:
    """Serve RLMs behind an OpenAI-compatible API: POST /v1/chat/completions, GET /v1/models.

    The conversation is the context (it goes into the REPL); the last user message is the
    question. Model names: 'rlm' (the --model), aliases, or 'rlm:PROVIDER:MODEL' for configured
    models and those --allow-model allows. Requests may tighten limits with an extra body
    field, e.g. {"recursa": {"max_iterations": 5}}.
    """
    need_server_extra("recursa serve")
    from rich.console import Console

    from recursa.server.openai_api import serve as run_server

    if max_body_mb <= 0:
        raise ConfigError("--max-body-mb must be positive")
    if fixed_models and allow_model:
        raise ConfigError("--fixed-models refuses what --allow-model allows: give one of them")
    limits = LimitOptions(
        max_iterations=max_iterations,
        max_depth=max_depth,
        max_cost=max_cost,
        max_calls=max_calls,
        max_tokens=max_tokens,
        timeout=timeout,
        cell_timeout=cell_timeout,
        max_sandboxes=max_sandboxes,
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
        strategy=strategy,
        aliases=_aliases(alias),
        open_models=not fixed_models,
        allowed_models=tuple(allow_model),
        api_key=api_key,
        progress=progress,
        max_body_bytes=int(max_body_mb * MIB),
        max_sessions=max_sessions,
        session_idle_s=session_idle,
    )
    from rich.markup import escape

    err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err.print(
            f"[yellow]warning:[/] listening on {escape(host)} with no --api-key: anyone who can "
            "reach this port can spend your model budget"
        )
    err.print(f"[dim]default model (rlm): {escape(str(config.default_model))}[/]")
    if config.allowed_models and config.open_models:
        err.print(f"[dim]clients may also pick: {escape(', '.join(config.allowed_models))}[/]")
    run_server(config, host=host, port=port, log_level=log_level.lower())


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
