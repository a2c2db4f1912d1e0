"""What happens on the host when model code calls one of the caller's tools.

One :class:`ToolRunner` per engine answers the ``call`` frames of its tools (rows with
``handler="tool"`` of the engine's host-function table; see :mod:`recursa.tools`). A call:

1. its arguments are checked against the tool's schema (a refusal is not a call: nothing is
   counted or journaled, and the model gets a ``ToolError`` saying which argument is wrong);
2. it is counted against ``Limits.max_tool_calls`` (:meth:`Budget.reserve_tool_call`);
3. a resumed run takes the outcome from the journal, so the tool does not run again;
4. otherwise the tool runs: an ``async`` one on the run's loop, a plain one in a thread of its
   own (so the loop never blocks), both under ``Limits.tool_timeout_s`` and the run's clock;
5. the outcome (a JSON value, or the error the model sees) is journaled before it is used,
   and recorded in a ``tool`` span under the cell that made the call.

What a tool raises reaches the model as a ``ToolError`` carrying the exception's type and
message, never a host traceback. A result that is not JSON is an error of the same kind.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from recursa.gate import clip
from recursa.limits import BudgetExhausted
from recursa.sandbox.base import CallRefused
from recursa.tools import Tool, ToolSet, tools_prompt

if TYPE_CHECKING:
    from recursa.engine import Tree
    from recursa.trace.spans import Span

__all__ = ["MAX_RESULT_CHARS", "ToolRunner", "tool_key"]

MAX_RESULT_CHARS = 16_000_000  # of one result's JSON: more is an error the model can act on
PREVIEW_CHARS = 2000  # of arguments and results kept in a span
ERROR_CHARS = 2000  # of a tool's exception message shown to the model

Outcome = dict[str, Any]  # {"value": <JSON>} or {"error": "<what the model sees>"}


def tool_key(engine: str, tool: str, args: Mapping[str, Any]) -> str:
    """The journal key of a call: the tool, its arguments and the engine that made it
    (``root``, ``root.1``...). Identical calls share a key and replay in order."""
    raw = json.dumps([engine, tool, args], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _preview(value: Any) -> str:
    return clip(json.dumps(value, ensure_ascii=False, default=repr), PREVIEW_CHARS)


class ToolRunner:
    """Runs one engine's tools (``tools``) for its sandbox. ``path`` names the engine in the
    tree (the journal keys on it), ``depth`` is its depth."""

    def __init__(self, tree: Tree, tools: ToolSet, *, path: str = "root", depth: int = 0):
        self.tree = tree
        self.tools = tools
        self.path = path
        self.depth = depth

    def prompt(self) -> str:
        """The tools' section of this engine's system prompt ("" without tools)."""
        return tools_prompt(self.tools)

    async def __call__(self, name: str, args: Mapping[str, Any], parent: Span | None) -> Any:
        """Answer one call; raise :class:`CallRefused` with what the model should see."""
        tool = self.tools[name]
        tracer = self.tree.tracer
        started = time.perf_counter()
        span = tracer.start(
            "tool", name, parent, tool=name, args=_preview(dict(args)), depth=self.depth
        )
        try:
            outcome, source = await self._outcome(tool, args)
        except BudgetExhausted as exc:
            tracer.end(span, error=exc.detail)
            raise CallRefused(f"budget exhausted: {exc.detail}", kind="budget") from None
        except BaseException as exc:
            tracer.end(span, error=f"{type(exc).__name__}: {exc}")
            raise
        error = outcome.get("error")
        tracer.end(
            span,
            error=error,
            result=None if error is not None else _preview(outcome.get("value")),
            source=source,
            elapsed_s=round(time.perf_counter() - started, 6),
        )
        if error is not None:
            raise CallRefused(str(error), kind="tool")
        return outcome.get("value")

    async def _outcome(self, tool: Tool, args: Mapping[str, Any]) -> tuple[Outcome, str]:
        """The call's outcome and where it came from: ``checked`` (refused arguments),
        ``journal`` (a resumed run's replay) or ``tool``."""
        try:
            positional, keywords = tool.bind(args)
        except TypeError as exc:
            return {"error": str(exc)}, "checked"
        tree = self.tree
        tree.budget.reserve_tool_call(tool.name)
        key = tool_key(self.path, tool.name, args)
        if tree.replay is not None:
            done = tree.replay.take_tool(key)
            if done is not None:
                return done, "journal"
        outcome = await self._run(tool, positional, keywords)
        if tree.journal is not None:
            tree.journal.record_tool(key, tool.name, outcome)
        return outcome, "tool"

    async def _run(self, tool: Tool, positional: list[Any], keywords: dict[str, Any]) -> Outcome:
        """Run the tool under its timeout and the run's clock; its outcome as JSON."""
        budget = self.tree.budget
        limit = self.tree.config.limits.tool_timeout_s
        left = budget.remaining_time()
        bounds = [t for t in (limit, left) if t is not None]
        deadline = asyncio.timeout(min(bounds) if bounds else None)
        try:
            async with deadline:
                value = await _invoke(tool, positional, keywords)
        except TimeoutError as exc:
            if not deadline.expired():  # the tool's own TimeoutError: an error like any other
                return _raised(tool, exc)
            if limit is not None and (left is None or limit <= left):
                return {
                    "error": f"{tool.name}() took longer than {limit:g}s and was abandoned "
                    "(Limits.tool_timeout_s); try smaller inputs or another approach"
                }
            raise budget.expire(f" while {tool.name}() ran") from None
        except Exception as exc:
            return _raised(tool, exc)
        return _as_json(tool, value)


def _raised(tool: Tool, exc: BaseException) -> Outcome:
    message = str(exc)
    if len(message) > ERROR_CHARS:
        message = message[:ERROR_CHARS] + " [...]"
    text = f"{tool.name}() raised {type(exc).__name__}"
    return {"error": f"{text}: {message}" if message else text}


def _as_json(tool: Tool, value: Any) -> Outcome:
    """``{"value": value}`` as JSON sees it (tuples become lists...), or the error a value
    that is not JSON (or too large to send) gets."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return {
            "error": f"{tool.name}() returned a value that is not JSON ({exc}); a tool must "
            "return str, int, float, bool, None, or lists and dicts of them"
        }
    if len(text) > MAX_RESULT_CHARS:
        return {
            "error": f"{tool.name}() returned {len(text):,} characters of JSON (limit "
            f"{MAX_RESULT_CHARS:,}); ask it for less (a page, a filter, a summary)"
        }
    return {"value": json.loads(text)}


async def _invoke(tool: Tool, positional: list[Any], keywords: dict[str, Any]) -> Any:
    if tool.is_async:
        value = tool.fn(*positional, **keywords)
    else:
        value = await _in_thread(functools.partial(tool.fn, *positional, **keywords))
    if inspect.isawaitable(value):  # a plain function that returned a coroutine
        value = await value
    return value


async def _in_thread(call: Callable[[], Any]) -> Any:
    """``call()`` in a daemon thread of its own. Not ``asyncio.to_thread``: a tool that never
    returns would hold a worker of the loop's executor, and ``asyncio.run`` waits for those at
    exit, so one hung tool would keep the process from ending."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():  # abandoned after a timeout: nobody waits any more
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def work() -> None:
        try:
            ok, value = True, context.run(call)
        except Exception as exc:
            ok, value = False, exc
        except BaseException as exc:  # SystemExit from a tool must not reach the loop as such
            ok, value = False, RuntimeError(f"{type(exc).__name__}: {exc}")
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:  # the loop has closed: the run is over
            pass

    threading.Thread(target=work, name="recursa-tool", daemon=True).start()
    return await future
