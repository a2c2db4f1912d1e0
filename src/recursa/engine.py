"""The RLM loop: root LM call -> run its code in the REPL -> show the output -> repeat -> FINAL.

Where one iteration happens: :meth:`Engine._iteration` makes the root LM call through the run's
gate (:mod:`recursa.gate`, where every call is charged to the budget), then takes the steps of
:mod:`recursa.iteration`: parse -> run the cells -> judge (the profile's rules) -> render the
feedback. :meth:`Engine.run` is the run's lifecycle around the loop: a sandbox slot, the first
turn paid for, the sandbox started (in the background, while the first turn's request is out)
and shut down, the partial answer when a limit stops it.

One :class:`Engine` runs one RLM (the root, or one child at a deeper level). Everything the
whole tree shares (configuration, models, budget, tracer, LM gate, journal) lives in a
:class:`Tree`. The conversation is append-only, so provider prompt caches and a local model's
KV cache keep hitting from one iteration to the next.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recursa.compaction import Compactor, compactor_for
from recursa.config import RunConfig
from recursa.context import Context
from recursa.errors import LimitExceeded, RecursaError
from recursa.gate import LMGate, clip
from recursa.iteration import (
    Cell,
    History,
    Iteration,
    final_var_name,
    judge,
    parse,
    render,
    run_cells,
)
from recursa.limits import (
    DEFAULT_OUTPUT_CHARS,
    Budget,
    BudgetExhausted,
    Ledger,
    Reservation,
    SandboxSlots,
    UsageMeter,
)
from recursa.lm.base import LM
from recursa.prompts import PromptProfile, profile_for
from recursa.sandbox.base import CallHandler, Sandbox, SandboxConfig
from recursa.sandbox.pool import StartingSandbox, WorkerPool, open_sandbox
from recursa.subcalls import SubCalls
from recursa.toolcalls import ToolRunner
from recursa.tools import ToolSet
from recursa.trace.spans import Span, Tracer
from recursa.types import CellResult, Message, Result, StopReason, Usage

if TYPE_CHECKING:
    from recursa.journal import Replay
    from recursa.lm.wrappers import JournalSink

__all__ = ["Engine", "SandboxFactory", "Tree"]

SandboxFactory = Callable[[SandboxConfig, CallHandler], Sandbox]


@dataclass
class Tree:
    """What every engine in one run's tree shares: its configuration (data), the objects it was
    built with (models, sandbox factory, prompt profile) and the run's budget, tracer, LM gate,
    journal and warnings."""

    root_lm: LM
    sub_lm: LM
    models: Mapping[str, LM]  # models llm_query(model=...) may pick, by full and short name
    config: RunConfig
    sandbox_factory: SandboxFactory
    budget: Budget
    tracer: Tracer
    gate: LMGate
    run_id: str
    # Live sandboxes of this tree (Limits.max_sandboxes); pass one pool to share it among trees.
    slots: SandboxSlots
    sandbox_config: SandboxConfig = field(default_factory=SandboxConfig)
    profile: PromptProfile | None = None  # None: chosen per model by profile_for()
    journal: JournalSink | None = None
    warnings: list[str] = field(default_factory=list)
    # The caller's tools: the root's, and its children's (None: the root's). A resumed run's
    # replay answers tool calls the journal holds.
    tools: ToolSet = field(default_factory=ToolSet)
    sub_tools: ToolSet | None = None
    replay: Replay | None = None
    # Warm workers for children (recursa.sandbox.pool); shut down when the root's run ends.
    workers: WorkerPool | None = None

    def __post_init__(self) -> None:
        if self.workers is None:
            self.workers = WorkerPool(self.sandbox_factory, self.slots)

    @property
    def ledger(self) -> Ledger:
        return self.budget.ledger

    def tools_at(self, depth: int) -> ToolSet:
        """The tools an engine at ``depth`` offers (``sub_tools`` below the root)."""
        return self.tools if depth == 0 or self.sub_tools is None else self.sub_tools


class Engine:
    """One RLM at one depth of the tree: its run's lifecycle and its loop of iterations.

    One iteration (:meth:`_iteration`) is the root LM call, then the steps of
    :mod:`recursa.iteration`: parse -> run -> judge -> render.
    """

    def __init__(
        self,
        tree: Tree,
        *,
        depth: int,
        lm: LM,
        parent_span: Span | None = None,
        path: str = "root",
        parent_meter: UsageMeter | None = None,
    ):
        self.tree = tree
        self.depth = depth
        self.lm = lm
        self.parent_span = parent_span
        # Where this engine sits in the tree ("root", "root.1", "root.1.3"): stable from one
        # run to its resumption, because children are numbered in the order they are created.
        self.path = path
        self.children = itertools.count(1)
        self.meter = UsageMeter(parent_meter)  # this RLM's subtree: its turns, calls, children
        self.profile: PromptProfile = tree.profile or profile_for(lm.name)
        # Output shown per turn: the limit if set, else what the model reads comfortably.
        self.output_chars = (
            tree.config.limits.max_output_chars
            or lm.capabilities.output_chars
            or DEFAULT_OUTPUT_CHARS
        )
        # Built once: every turn sends the same. A child RLM runs on the sub model, so its turns
        # take the sub role's sampling (RunConfig.sub_sampling), not the root's.
        config = tree.config
        self.settings = config.root_settings if depth == 0 else config.sub_settings
        self.iterations = 0
        self.history = History()  # replaced by each iteration; read for partial answers
        self.run_span: Span | None = None
        self.question = ""  # this RLM's question (feedback may restate it)
        # In a session: what the REPL already holds (earlier answers, more contexts), told to
        # the model after the context's metadata. See recursa.session.
        self.session_note = ""
        self._prepaid: Reservation | None = None  # the first turn's call, reserved at start
        self.last_root_usage: Usage | None = None  # what the last root call reported
        tools = ToolRunner(tree, tree.tools_at(depth), path=path, depth=depth)
        self.calls = SubCalls(
            tree, depth=depth, meter=self.meter, spawn=self._spawn_child, tools=tools
        )

    # ---- the run -------------------------------------------------------------------------------
    async def run(
        self, question: str, context: Context, *, sandbox: Sandbox | None = None
    ) -> Result:
        """Answer ``question``. With ``sandbox`` (a session's: started, its contexts loaded and
        its calls relayed to this engine's :attr:`calls`), the run uses it and leaves it
        running; without, the run starts its own sandbox and shuts it down at the end."""
        tree, limits = self.tree, self.tree.config.limits
        own = sandbox is None
        self.question = question
        self.run_span = tree.tracer.start(
            "run",
            "rlm" if self.depth == 0 else f"child rlm (depth {self.depth})",
            self.parent_span,
            question=clip(question, 4000),
            depth=self.depth,
            model=self.lm.name,
            sub_model=tree.sub_lm.name,
            context={
                "kind": context.kind,
                "chars": context.total_chars,
                "parts": len(context.parts),
            },
            warnings=list(context.warnings),
        )
        starting: StartingSandbox | None = None
        if sandbox is None:  # started in the background once the first turn is paid for
            sandbox = starting = StartingSandbox(
                functools.partial(
                    open_sandbox,
                    tree.sandbox_factory,
                    self.calls.sandbox_config,
                    self.calls,
                    context.value,
                    alias_parts=context.multi,
                    pool=tree.workers if self.depth > 0 else None,
                )
            )
        answer, stop, detail = "", StopReason.ERROR, ""
        failure: RecursaError | None = None
        has_slot = False
        messages: list[Message] = []
        try:
            messages = self._first_messages(question, context)
            # No worker starts unless a slot is free and the first turn is paid for: a batch of
            # children the budget cannot pay for never starts their processes.
            await self._take_slot()
            has_slot = True
            self._prepaid = await tree.gate.reserve(self.lm, messages, self.settings)
            if starting is not None:
                starting.begin()  # the first turn needs no REPL until its code runs
            answer, stop, detail = await self._loop(messages, sandbox)
        except BudgetExhausted as exc:
            answer, stop, detail = await self._wrap_up(
                messages, sandbox, exc.reason, exc.detail, turn=False
            )
        except asyncio.CancelledError:
            answer, stop, detail = self.history.candidate, StopReason.CANCELLED, "cancelled"
            raise
        except RecursaError as exc:
            answer = await self._repl_answer(sandbox) or self.history.candidate
            stop, detail = StopReason.ERROR, str(exc)
            failure = exc
        finally:
            if self._prepaid is not None:
                tree.budget.release(self._prepaid)  # never sent: not a call
                self._prepaid = None
            if has_slot and own and self.depth > 0 and tree.workers is not None:
                # Off the parent's critical path; the root's run waits for it (aclose below).
                tree.workers.retire(sandbox, tree.slots.release)
            elif has_slot:
                try:
                    if own:
                        await asyncio.shield(sandbox.shutdown())
                finally:
                    tree.slots.release()
            if self.depth == 0 and tree.workers is not None:
                await asyncio.shield(tree.workers.aclose())
            tree.tracer.end(
                self.run_span,
                error=detail if stop in (StopReason.ERROR, StopReason.CANCELLED) else None,
                answer=clip(answer, 20_000),
                stop_reason=stop.value,
                detail=detail,
                iterations=self.iterations,
                usage=self.meter.usage.to_dict(),  # this run's subtree; the root's is the total
            )
        result = self._result(answer, stop, detail)
        if failure is not None:
            failure.result = result  # nothing is lost
            raise failure
        if stop is not StopReason.FINAL and limits.raise_on_limit and self.depth == 0:
            raise LimitExceeded(stop, result, detail)
        return result

    async def _spawn_child(self, question: str, context: Context, parent: Span) -> Result:
        """Run a child RLM one level deeper (``rlm_query``), numbered in creation order."""
        child = Engine(
            self.tree,
            depth=self.depth + 1,
            lm=self.tree.sub_lm,
            parent_span=parent,
            path=f"{self.path}.{next(self.children)}",
            parent_meter=self.meter,
        )
        return await child.run(question, context)

    def _result(self, answer: str, stop: StopReason, detail: str) -> Result:
        ledger = self.tree.ledger
        return Result(
            answer=answer,
            stop_reason=stop,
            iterations=self.iterations,
            usage=ledger.usage,
            usage_by_model=dict(ledger.by_model),
            usage_by_depth=dict(ledger.by_depth),
            wall_time_s=(self.run_span.duration_s or 0.0) if self.run_span else 0.0,
            run_id=self.tree.run_id,
            detail=detail,
            spans=tuple(self.tree.tracer.finished),
            warnings=tuple(self.tree.warnings),
            cache_hits=ledger.cache_hits,
            saved_usd=ledger.saved_usd,
            replayed_calls=ledger.replayed,
            retries=ledger.retries,
        )

    async def _take_slot(self) -> None:
        """Wait (within the run's wall clock) until this engine may start a sandbox."""
        budget = self.tree.budget
        budget.check()
        try:
            async with asyncio.timeout(budget.remaining_time()):
                await self.tree.slots.acquire(self.depth)
        except TimeoutError:
            raise budget.expire(" while waiting for a sandbox") from None

    def _first_messages(self, question: str, context: Context) -> list[Message]:
        cfg = self.tree.config
        # A backend may say how much text one sub-call should read (small local models far less).
        sub_chars = self.tree.sub_lm.capabilities.chunk_chars
        return [
            Message.system(
                self.profile.system(
                    context_hint=f"a {context.python_type} of {context.total_chars:,} characters",
                    sub_calls=cfg.sub_calls,
                    sub_chars=sub_chars or cfg.sub_prompt_chars,
                    template=cfg.system_prompt,  # the user's own (every depth), else the profile's
                    tools=self.calls.tools.prompt(),
                )
            ),
            Message.user(
                self._prologue()
                + self.profile.first_turn(
                    question=question, metadata=context.describe() + self.session_note
                )
            ),
        ]

    def _prologue(self) -> str:
        """The user's prologue and a blank line, for the top-level RLM only (a child's question
        is the parent's sub-problem). It shares the first user turn rather than taking a turn of
        its own: some providers refuse two user messages in a row."""
        prologue = self.tree.config.prologue
        return f"{prologue.strip()}\n\n" if prologue and self.depth == 0 else ""

    async def _loop(self, messages: list[Message], sandbox: Sandbox) -> tuple[str, StopReason, str]:
        limits, budget = self.tree.config.limits, self.tree.budget
        compactor = self._compactor()
        while self.iterations < limits.max_iterations:
            if self._prepaid is None:  # the first turn was paid for before the sandbox began
                budget.check()
                if compactor is not None:  # near the window: older turns become a summary
                    await compactor.before_turn(messages, sandbox)
            self.iterations += 1
            it = await self._iteration(messages, sandbox, self.iterations)
            if compactor is not None:
                compactor.observe(len(messages), self.last_root_usage)
            if it.final is not None:
                return it.final, StopReason.FINAL, ""
            messages.append(Message.user(it.feedback))
            errors = self.history.consecutive_errors
            if errors >= limits.max_consecutive_errors:
                why = f"{errors} iterations in a row without working code"
                return await self._wrap_up(
                    messages, sandbox, StopReason.MAX_CONSECUTIVE_ERRORS, why, turn=True
                )
        detail = f"max_iterations={limits.max_iterations} reached"
        return await self._wrap_up(messages, sandbox, StopReason.MAX_ITERATIONS, detail, turn=True)

    def _compactor(self) -> Compactor | None:
        """This conversation's compactor (``None``: compaction off, or no window known)."""
        return compactor_for(
            self.tree,
            self.lm,
            depth=self.depth,
            meter=self.meter,
            parent=self.run_span,
            settings=self.settings,
        )

    async def _repl_answer(self, sandbox: Sandbox) -> str:
        """The content of the REPL's ``answer`` dict, ready or not ("" if unset or unreadable)."""
        try:
            raw = await asyncio.wait_for(sandbox.get_var("answer"), 5.0)
            value = json.loads(raw) if raw else None
        except Exception:  # a dead, busy or never-started worker: no evidence there
            return ""
        if not isinstance(value, dict) or value.get("content") in (None, ""):
            return ""
        content = value["content"]
        return content.strip() if isinstance(content, str) else json.dumps(content, default=str)

    async def _wrap_up(
        self,
        messages: list[Message],
        sandbox: Sandbox,
        stop: StopReason,
        detail: str,
        *,
        turn: bool,
    ) -> tuple[str, StopReason, str]:
        """The best partial answer after a limit stopped the run: the REPL's ``answer`` dict,
        else one "answer now" turn that runs no code (when ``turn`` and the budget allow), else
        an earlier unaccepted FINAL, else none (said plainly in the detail)."""
        found = await self._repl_answer(sandbox)
        if found:
            return found, stop, f"{detail}; partial answer from the REPL's answer dict"
        if turn and self.tree.config.limits.final_answer_turn:
            messages.append(Message.user(self.profile.final_turn))
            try:
                it = await self._iteration(messages, sandbox, self.iterations + 1, last_turn=True)
            except BudgetExhausted as exc:  # no budget left for the extra turn: say so
                detail = f"{detail}; no answer-now turn: {exc.detail}"
            else:
                if it.final:
                    return it.final, stop, f"{detail}; answer from one answer-now turn (no code)"
        if self.history.candidate:
            return (
                self.history.candidate,
                stop,
                f"{detail}; partial answer: a FINAL not yet checked",
            )
        return "", stop, f"{detail}; no partial answer: the model gave none"

    # ---- one iteration -------------------------------------------------------------------------
    async def _iteration(
        self, messages: list[Message], sandbox: Sandbox, index: int, *, last_turn: bool = False
    ) -> Iteration:
        """The root LM call, then parse -> run -> judge -> render (:mod:`recursa.iteration`).
        An "answer now" turn (``last_turn``) runs no code."""
        tracer = self.tree.tracer
        span = tracer.start(
            "iteration",
            "answer now (no code)" if last_turn else f"iteration {index}",
            self.run_span,
            index=index,
            depth=self.depth,
            last_turn=last_turn,
        )
        prepaid, self._prepaid = self._prepaid, None
        try:
            completion = await self.tree.gate.complete(
                self.lm,
                messages,
                self.settings,
                role="root",
                depth=self.depth,
                parent=span,
                meter=self.meter,
                reservation=prepaid,
            )
            self.last_root_usage = completion.usage  # compaction measures the prompt with it
            messages.append(Message.assistant(completion.text))
            reply = parse(completion.text)
            cells: tuple[Cell, ...] = ()
            if not last_turn:
                execute = functools.partial(self._cell, sandbox, span)
                cells = await run_cells(reply.blocks, execute, sandbox.restart)
            name = final_var_name(reply, self.history, cells)
            value = await sandbox.get_var(name) if name else None
            verdict, self.history = judge(
                self.profile, self.history, reply, cells, value, last_turn=last_turn
            )
            feedback = (
                ""
                if verdict.final is not None
                else render(self.profile, cells, verdict, self.output_chars, self.question)
            )
        except BaseException as exc:
            tracer.end(span, error=f"{type(exc).__name__}: {exc}")
            raise
        tracer.end(span, final=verdict.final is not None)
        return Iteration(index, reply, cells, verdict.final, feedback, last_turn)

    async def _cell(self, sandbox: Sandbox, parent: Span, code: str, index: int) -> CellResult:
        limits, budget, tracer = self.tree.config.limits, self.tree.budget, self.tree.tracer
        deadline = None if limits.timeout_s is None else budget.started + limits.timeout_s
        span = tracer.start(
            "cell", f"cell {index}", parent, code=code, depth=self.depth, index=index
        )
        self.calls.prepare(code)  # children it may start find warm workers
        try:
            with self.calls.serving(span):  # the cell's sub-calls are its children
                res = await sandbox.execute(
                    code, timeout_s=limits.cell_timeout_s, deadline=deadline
                )
        except BaseException as exc:
            tracer.end(span, error=f"{type(exc).__name__}: {exc}")
            raise
        diverged = self._journal_cell(code, res)
        tracer.end(
            span,
            replay_diverged=diverged,
            error=res.error.splitlines()[-1][:500] if res.error else None,
            stdout=clip(res.stdout, self.output_chars),
            traceback=clip(res.error or "", 8000) or None,
            final=res.final,
            fatal=res.fatal,
            fatal_reason=res.fatal_reason,
            elapsed_s=res.elapsed_s,
            output_cut_chars=res.output_cut_chars,
        )
        return res

    def _journal_cell(self, code: str, res: CellResult) -> bool:
        """Record the cell (or check it against the journal when replaying); True if the
        replayed cell printed something other than it did the first time."""
        journal = self.tree.journal
        if journal is None:
            return False
        warning = journal.record_cell(self.path, code, res)
        if warning:
            self.tree.warnings.append(warning)
        return warning is not None
