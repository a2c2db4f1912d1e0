"""What happens on the host when model code calls ``llm_query`` and friends.

Every request is checked against the shared budget before it runs. ``llm_query`` is one LM call
on the sub model. ``rlm_query`` starts a child :class:`~recursa.engine.Engine` one level deeper
with its own sandbox, or, past ``max_depth``, makes a plain LM call. A child starts its sandbox
only once one of the tree's ``max_sandboxes`` slots is free and its first call is reserved, so
a batch of a hundred children runs a few at a time and stops starting them when the budget
ends. Batches run concurrently (bounded by the tree's concurrency limit), keep their order, and
turn a failed item into an error string instead of failing the whole batch.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from recursa.context import load_context
from recursa.limits import BudgetExhausted
from recursa.lm.base import LM
from recursa.sandbox.base import CallRefused
from recursa.trace.spans import Span
from recursa.types import Message

if TYPE_CHECKING:
    from recursa.engine import Engine

__all__ = ["SubCalls"]


def _error_item(fn: str, exc: BaseException) -> str:
    if isinstance(exc, BudgetExhausted):
        return f"[{fn} error: budget exhausted: {exc.detail}]"
    return f"[{fn} error: {type(exc).__name__}: {exc}]"


class SubCalls:
    """The ``on_call`` handler of one engine's sandbox."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tree = engine.tree
        self._refusals = 0

    async def handle(self, fn: str, args: dict[str, Any]) -> Any:
        tree = self.tree
        if not tree.config.sub_calls:
            raise CallRefused(
                f"{fn} is turned off for this run: solve the task with code alone", kind="error"
            )
        if tree.budget.exhausted is not None:
            # The first call past the budget is refused; code that keeps calling is killed.
            self._refusals += 1
            raise CallRefused(
                f"budget exhausted: {tree.budget.exhausted.detail}",
                kind="budget",
                kill=self._refusals > 1,
            )
        n = len(args.get("prompts") or []) or 1
        span = tree.tracer.start(
            "sub_call", fn, self.engine.cell_span, fn=fn, n=n, depth=self.engine.depth
        )
        try:
            value = await self._dispatch(fn, args, span)
        except BudgetExhausted as exc:
            tree.tracer.end(span, error=exc.detail)
            raise CallRefused(f"budget exhausted: {exc.detail}", kind="budget") from None
        except BaseException as exc:
            tree.tracer.end(span, error=f"{type(exc).__name__}: {exc}")
            raise
        tree.tracer.end(span)
        return value

    async def _dispatch(self, fn: str, args: dict[str, Any], span: Span) -> Any:
        model = args.get("model")
        if fn == "llm_query":
            return await self.llm(args["prompt"], model, span)
        if fn == "llm_query_batched":
            lm = self._pick(model)  # an unknown model fails the whole batch, once
            return await self._batch(fn, [self.llm(p, lm, span) for p in args["prompts"]])
        if fn == "rlm_query":
            return await self.rlm(args["prompt"], args.get("context"), span)
        if fn == "rlm_query_batched":
            jobs = [
                self.rlm(p, c, span) for p, c in zip(args["prompts"], args["contexts"], strict=True)
            ]
            return await self._batch(fn, jobs)
        raise CallRefused(f"unknown function {fn}")

    async def _batch(self, fn: str, jobs: list) -> list[str]:
        results = await asyncio.gather(*jobs, return_exceptions=True)
        out: list[str] = []
        for r in results:
            if isinstance(r, Exception):
                out.append(_error_item(fn.removesuffix("_batched"), r))
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

    async def llm(self, prompt: str, model: str | LM | None, parent: Span) -> str:
        lm = self._pick(model)
        completion = await self.tree.gate.complete(
            lm,
            [Message.user(prompt)],
            self.tree.config.sub_settings,
            role="sub",
            depth=self.engine.depth + 1,
            parent=parent,
            meter=self.engine.meter,
        )
        return completion.text

    async def rlm(self, prompt: str, context: Any, parent: Span) -> str:
        from recursa.engine import Engine

        depth = self.engine.depth + 1
        if depth > self.tree.config.limits.max_depth:
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
        path = f"{self.engine.path}.{next(self.engine.children)}"
        child = Engine(
            self.tree,
            depth=depth,
            lm=self.tree.sub_lm,
            parent_span=parent,
            path=path,
            parent_meter=self.engine.meter,
        )
        result = await child.run(prompt, ctx)
        if result.answer:
            return result.answer
        return f"[rlm_query: the child stopped ({result.stop_reason.value}) without an answer]"
