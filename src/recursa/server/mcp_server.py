"""``recursa mcp``: an MCP server (official SDK, ``MCPServer``) over stdio or streamable HTTP.

Tools:

- ``ask(question, paths=[...] | text=...)``: answer a question with an RLM over files and
  folders on this machine (only inside the roots given at start) or over text the client sends.
  Sends progress notifications (iterations, sub-calls, cells) while it runs, when the client
  asked for them with a progress token.
- ``ask_trace(run_id)``: the stored summary of a past run: answer, stop reason, usage, cost,
  span counts and the run as an indented tree.

Runs are stored like the HTTP server's (``<data dir>/server-runs/<run_id>/``), so
``ask_trace`` also finds runs made through ``recursa serve``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context as ToolContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from recursa.context import load_context
from recursa.errors import ConfigError, RecursaError
from recursa.server.config import ServerConfig
from recursa.server.roots import Roots
from recursa.server.runs import RunManager
from recursa.types import Result

__all__ = ["AskResult", "build_mcp_server", "run_mcp"]

_INSTRUCTIONS = """\
recursa answers questions over inputs far larger than a model's context window (whole
codebases, log folders, document collections) with a Recursive Language Model: the input is
loaded into a sandboxed Python REPL and a model writes code to search it and calls models on
the pieces. Use `ask` with `paths` (files or folders on this machine) or `text`; it can take
minutes on large inputs. `ask_trace(run_id)` shows what a past run did."""


class AskResult(BaseModel):
    """What ``ask`` returns."""

    answer: str = Field(description="The answer (the best partial answer when partial).")
    run_id: str = Field(description="Pass to ask_trace to see what the run did.")
    stop_reason: str = Field(description="'final' when the model answered; else the limit hit.")
    partial: bool = Field(description="True when a limit stopped the run before a final answer.")
    detail: str = ""
    iterations: int = 0
    lm_calls: int = 0
    total_tokens: int = 0
    cost_usd: float | None = Field(None, description="None when no call had a known price.")
    wall_time_s: float = 0.0
    warnings: list[str] = Field(default_factory=list)

    @classmethod
    def from_result(cls, result: Result, warnings: tuple[str, ...]) -> AskResult:
        return cls(
            answer=result.answer,
            run_id=result.run_id,
            stop_reason=result.stop_reason.value,
            partial=result.partial,
            detail=result.detail,
            iterations=result.iterations,
            lm_calls=result.usage.calls,
            total_tokens=result.usage.total_tokens,
            cost_usd=result.cost_usd,
            wall_time_s=round(result.wall_time_s, 3),
            warnings=list(warnings),
        )


def trace_text(summary: dict[str, Any]) -> str:
    """A stored run's summary as readable text: one ``key: value`` line per plain field, then
    the trace's counts and its indented tree as drawn."""
    lines = []
    for key, value in summary.items():
        if key == "trace" or isinstance(value, dict | list):
            continue
        lines.append(f"{key}: {value}")
    for key, value in (summary.get("result") or {}).items():
        if not isinstance(value, dict | list):
            lines.append(f"{key}: {value}")
    for key, value in summary.items():
        if key not in ("trace", "result") and isinstance(value, dict | list) and value:
            lines.append(f"{key}: {json.dumps(value, default=str)}")
    trace = summary.get("trace") or {}
    if "error" in trace:
        lines.append(f"trace: {trace['error']}")
    if trace.get("spans"):
        counts = ", ".join(f"{n} {kind}" for kind, n in trace["spans"].items())
        lines.append(f"spans: {counts} ({trace.get('errors', 0)} with errors)")
    if trace.get("tree"):
        lines += ["", str(trace["tree"]).rstrip()]
    return "\n".join(lines)


def build_mcp_server(
    config: ServerConfig, roots: Roots, *, log_level: str = "WARNING"
) -> MCPServer[Any]:
    """The MCP server with its two tools. Runs still going at shutdown are cancelled."""
    from recursa import __version__

    manager = RunManager(config)
    model = config.model_names()["rlm"]

    @asynccontextmanager
    async def lifespan(_server: MCPServer[Any]) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await manager.aclose()

    server: MCPServer[Any] = MCPServer(
        "recursa",
        version=__version__,
        instructions=_INSTRUCTIONS,
        lifespan=lifespan,
        log_level=log_level,  # type: ignore[arg-type]
    )

    @server.tool()
    async def ask(
        question: Annotated[str, Field(description="What you want to know about the input.")],
        ctx: ToolContext,
        paths: Annotated[
            list[str] | None,
            Field(
                description="Files or folders to read (folders as {relative path: text}, "
                ".gitignore honoured). Relative paths start at the first allowed root. "
                "Give this or text, not both."
            ),
        ] = None,
        text: Annotated[
            str | None, Field(description="The input itself, as text. Give this or paths.")
        ] = None,
    ) -> AskResult:
        """Answer a question over large inputs (files, folders or text) with a Recursive
        Language Model; the input never has to fit in a prompt."""
        if (paths is None) == (text is None):
            raise ToolError("give exactly one of paths (files or folders) or text")
        try:
            if text is not None:
                context = load_context(text)
            elif not paths:
                raise ConfigError("paths is empty: name at least one file or folder")
            else:
                # Reading a big folder blocks: keep the server answering meanwhile.
                context = await asyncio.to_thread(roots.load, paths)
            handle = manager.start(model, question, context, progress=True, source="mcp")
        except RecursaError as exc:
            raise ToolError(str(exc)) from exc
        try:
            async for event in handle.progress():
                await ctx.report_progress(event.step, None, event.message)
            result = await handle.result()
        except RecursaError as exc:
            raise ToolError(f"run {handle.run_id} failed: {exc}") from exc
        finally:
            handle.cancel()  # no-op unless the call itself was cancelled
        return AskResult.from_result(result, context.warnings)

    @server.tool()
    async def ask_trace(
        run_id: Annotated[str, Field(description="The run_id an ask call returned.")],
    ) -> CallToolResult:
        """What a past run did: question, answer, stop reason, usage and cost, span counts,
        and its trace as an indented tree (iterations, LM calls, code cells, sub-calls)."""
        if manager.store is None:
            raise ToolError("this server does not keep runs (it was started with --no-store)")
        try:
            summary = await asyncio.to_thread(manager.store.describe, run_id)
        except RecursaError as exc:
            raise ToolError(str(exc)) from exc
        # Chat clients show the text: plain lines and the tree as it is drawn, not JSON with
        # escaped newlines. Programs read the same summary as structured content.
        text = TextContent(type="text", text=trace_text(summary))
        return CallToolResult(content=[text], structured_content=summary)

    return server


def run_mcp(
    config: ServerConfig,
    roots: Roots,
    *,
    transport: Literal["stdio", "streamable-http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    log_level: str = "WARNING",
) -> None:
    """Serve until the client disconnects (stdio) or the process is interrupted (HTTP)."""
    server = build_mcp_server(config, roots, log_level=log_level)
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)
