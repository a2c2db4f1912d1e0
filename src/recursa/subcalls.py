"""What happens on the host when model code calls ``llm_query`` and friends.

The functions themselves are rows of one table (:mod:`recursa.sandbox.functions`); this module
binds a handler to each row's ``handler`` name: ``llm`` is one LM call on the sub model, ``rlm``
starts a child RLM one level deeper (through the ``spawn`` callable the engine injects), or,
past ``max_depth``, makes a plain LM call. Every request is checked against the shared budget
before it runs, and each call's LM usage is charged by the run's LM gate (:mod:`recursa.gate`).

A child starts its sandbox only once one of the tree's ``max_sandboxes`` slots is free and its
first call is reserved, so a batch of a hundred children runs a few at a time and stops starting
them when the budget ends; it takes a warm worker when a cell that names ``rlm_query`` had the
tree's pool start some (:meth:`SubCalls.prepare`). Batches run concurrently (bounded by each
provider's concurrency limit, root turns first), keep their order, and turn a failed item into
an error string instead of failing the batch.

The caller's tools are rows of the same table (``handler="tool"``), answered by the engine's
:class:`~recursa.toolcalls.ToolRunner`; they work with ``sub_calls`` off too, since they are not
language-model calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from recursa.context import Context, load_context
from recursa.gate import clip
from recursa.limits import BudgetExhausted, UsageMeter
from recursa.lm.base import LM
from recursa.prompts import render_text
from recursa.sandbox.base import CallRefused, SandboxConfig
from recursa.sandbox.functions import DEFAULT_FUNCTIONS, Entry, FunctionTable
from recursa.semantic import Kind, Operation, run_operation
from recursa.toolcalls import ToolRunner
from recursa.tools import ToolSet
from recursa.trace.spans import Span
from recursa.types import LMSettings, Message, Result

if TYPE_CHECKING:
    from recursa.engine import Tree

__all__ = ["ChildSpawner", "SubCalls"]

PREVIEW_ITEMS = 200  # items (and their values) an operation's span keeps for the viewer

#: Runs a child RLM one level deeper: ``(question, context, parent span) -> its Result``.
ChildSpawner = Callable[[str, Context, Span], Awaitable[Result]]
Handler = Callable[[Mapping[str, Any], Span], Awaitable[Any]]


def _error_item(fn: str, exc: BaseException) -> str:
    if isinstance(exc, BudgetExhausted):
        return render_text("batch_item_budget", fn=fn, detail=exc.detail)
    return render_text("batch_item_error", fn=fn, error=f"{type(exc).__name__}: {exc}")


class _Serving:
    """The context manager :meth:`SubCalls.serving` returns (a plain class: one per cell)."""

    __slots__ = ("_calls", "_previous", "_span")

    def __init__(self, calls: SubCalls, span: Span) -> None:
        self._calls, self._span = calls, span
        self._previous: Span | None = None

    def __enter__(self) -> None:
        self._previous, self._calls._cell_span = self._calls._cell_span, self._span

    def __exit__(self, *exc: object) -> None:
        self._calls._cell_span = self._previous


class SubCalls:
    """The ``on_call`` handler of one engine's sandbox.

    ``depth`` is the engine's; sub-calls run one deeper. ``meter`` receives the usage of every
    call this engine's code makes; ``spawn`` runs a child RLM; ``tools`` runs the engine's tools,
    whose rows join ``functions`` (:attr:`functions` is the engine's whole table). :meth:`serving`
    names the span of the cell whose code is running, the parent of the spans its calls make.
    """

    def __init__(
        self,
        tree: Tree,
        *,
        depth: int,
        meter: UsageMeter,
        spawn: ChildSpawner,
        functions: FunctionTable = DEFAULT_FUNCTIONS,
        tools: ToolRunner | None = None,
    ) -> None:
        self.tree = tree
        self.depth = depth
        self.meter = meter
        self.spawn = spawn
        self.tools = tools or ToolRunner(tree, ToolSet(), depth=depth)
        self.functions = self.tools.tools.table(functions)
        self.settings = tree.config.sub_settings  # built once: every sub-call sends the same
        self._handlers: dict[str, Handler] = {
            "llm": self._llm_item,
            "rlm": self._rlm_item,
            "map": functools.partial(self._operation, "map"),
            "classify": functools.partial(self._operation, "classify"),
            "filter": functools.partial(self._operation, "filter"),
        }
        self._refusals = 0
        self._cell_span: Span | None = None

    @property
    def sandbox_config(self) -> SandboxConfig:
        """The tree's sandbox configuration, offering this engine's functions (its tools)."""
        config = self.tree.sandbox_config
        if config.functions is self.functions:
            return config
        return dataclasses.replace(config, functions=self.functions)

    def prepare(self, code: str) -> None:
        """Before a cell runs: if its code may start child RLMs, warm workers for them in the
        tree's pool (:mod:`recursa.sandbox.pool`), so a child's first cell finds its REPL ready.
        A cheap guess from the code's text: a wrong one costs an idle worker, shut down at the
        end of the run."""
        tree = self.tree
        pool = tree.workers
        if pool is None or not tree.config.sub_calls:
            return
        if self.depth + 1 > tree.config.limits.max_depth:
            return  # past the depth limit rlm_query is a plain call: no child, no worker
        if not any(e.handler == "rlm" and e.name in code for e in self.functions):
            return
        functions = tree.tools_at(self.depth + 1).table(DEFAULT_FUNCTIONS)
        pool.warm(dataclasses.replace(tree.sandbox_config, functions=functions), pool.size)

    def serving(self, cell_span: Span) -> _Serving:
        """``with calls.serving(span):`` calls made while the block runs belong to ``span``."""
        return _Serving(self, cell_span)

    async def __call__(self, fn: str, args: dict[str, Any]) -> Any:
        tree = self.tree
        entry = self.functions.get(fn)
        is_tool = entry is not None and entry.handler == "tool"
        if not tree.config.sub_calls and not is_tool:
            raise CallRefused(render_text("sub_calls_off", fn=fn), kind="error")
        if tree.budget.exhausted is not None:
            # The first call past the budget is refused; code that keeps calling is killed.
            self._refusals += 1
            raise CallRefused(
                f"budget exhausted: {tree.budget.exhausted.detail}",
                kind="budget",
                kill=self._refusals > 1,
            )
        if entry is None:
            raise CallRefused(f"unknown function {fn}")
        if is_tool:
            return await self.tools(fn, args, self._cell_span)
        n = entry.size(args)
        span = tree.tracer.start("sub_call", fn, self._cell_span, fn=fn, n=n, depth=self.depth)
        try:
            value = await self._dispatch(entry, args, span)
        except BudgetExhausted as exc:
            tree.tracer.end(span, error=exc.detail)
            raise CallRefused(f"budget exhausted: {exc.detail}", kind="budget") from None
        except BaseException as exc:
            tree.tracer.end(span, error=f"{type(exc).__name__}: {exc}")
            raise
        tree.tracer.end(span)
        return value

    async def _dispatch(self, entry: Entry, args: Mapping[str, Any], span: Span) -> Any:
        handler = self._handlers[entry.handler]
        if "model" in args:  # picked once: an unknown model fails the whole call, not each item
            args = {**args, "model": self._pick(args["model"])}
        if not entry.batch:
            return await handler(args, span)
        jobs = [handler(item, span) for item in entry.items(args)]
        return await self._batch(entry.name.removesuffix("_batched"), jobs)

    async def _batch(self, fn: str, jobs: list[Awaitable[str]]) -> list[str]:
        results = await asyncio.gather(*jobs, return_exceptions=True)
        out: list[str] = []
        for r in results:
            if isinstance(r, Exception):
                out.append(_error_item(fn, r))
            elif isinstance(r, BaseException):  # cancellation, Ctrl-C: not one item's failure
                raise r
            else:
                out.append(r)
        return out

    def _pick(self, model: str | LM | None) -> LM:
        if model is None:
            return self.tree.sub_lm
        if not isinstance(model, str):
            return model
        lm = self.tree.models.get(model)
        if lm is None:
            names = sorted({m.name for m in self.tree.models.values()})
            raise CallRefused(
                f"model {model!r} is not available to this run; choose one of: {', '.join(names)}"
            )
        return lm

    # ---- handlers: one item each ---------------------------------------------------------------
    async def _llm_item(self, args: Mapping[str, Any], parent: Span) -> str:
        return await self.llm(str(args["prompt"]), args.get("model"), parent)

    async def _rlm_item(self, args: Mapping[str, Any], parent: Span) -> str:
        return await self.rlm(str(args["prompt"]), args.get("context"), parent)

    async def _operation(self, kind: Kind, args: Mapping[str, Any], span: Span) -> dict[str, Any]:
        """``llm_map``/``llm_classify``/``llm_filter``: every item answered by the sub model,
        packed many to a prompt (:mod:`recursa.semantic`); one ``lm_call`` span per prompt
        under this operation's span, which records the items and their values."""
        fn = f"llm_{kind}"
        text = args.get("condition") if kind == "filter" else args.get("instruction")
        try:
            op = Operation(kind, str(text or ""), tuple(args.get("labels") or ()))
        except ValueError as exc:
            raise CallRefused(str(exc)) from None
        items: list[str] = list(args["items"])
        lm = self._pick(args.get("model"))
        room = lm.capabilities.chunk_chars or self.tree.config.sub_prompt_chars

        async def ask(prompt: str, max_tokens: int) -> str:
            settings = self.settings
            if settings.max_output_tokens is None or settings.max_output_tokens > max_tokens:
                settings = dataclasses.replace(settings, max_output_tokens=max_tokens)
            return await self.llm(prompt, lm, span, settings)

        async def choose(prompt: str, choices: tuple[str, ...]) -> str:
            settings = dataclasses.replace(self.settings, choices=choices, max_output_tokens=1)
            return await self.llm(prompt, lm, span, settings)

        result = await run_operation(
            op,
            items,
            ask,
            room_chars=room,
            fatal=(BudgetExhausted,),
            choose=choose if lm.capabilities.choices else None,
        )
        note = result.note(fn)
        span.attrs.update(
            op=kind,
            instruction=clip(op.instruction, 2000),
            labels=list(op.labels),
            prompts=result.calls,
            retried=result.retried,
            failed=result.failed,
            items=[
                [clip(item, 200), value]
                for item, value in zip(items[:PREVIEW_ITEMS], result.values, strict=False)
            ],
        )
        return {"values": result.values, "note": note}

    async def llm(
        self, prompt: str, model: str | LM | None, parent: Span, settings: LMSettings | None = None
    ) -> str:
        completion = await self.tree.gate.complete(
            self._pick(model),
            [Message.user(prompt)],
            settings or self.settings,
            role="sub",
            depth=self.depth + 1,
            parent=parent,
            meter=self.meter,
        )
        return completion.text

    async def rlm(self, prompt: str, context: Any, parent: Span) -> str:
        if self.depth + 1 > self.tree.config.limits.max_depth:
            # Past the depth limit a child is a plain call on the prompt (and its context).
            if context is not None:
                text = (
                    context if isinstance(context, str) else json.dumps(context, ensure_ascii=False)
                )
                prompt = f"{prompt}\n\n{text}"
            return await self.llm(prompt, None, parent)
        # Paid for before anything is built: the child's engine then waits for a sandbox slot
        # and reserves its first call before its worker starts (see Engine.run).
        self.tree.budget.check()
        ctx = load_context(context if context is not None else prompt)
        result = await self.spawn(prompt, ctx, parent)
        if result.answer:
            return result.answer
        return render_text("child_no_answer", stop=result.stop_reason.value)
