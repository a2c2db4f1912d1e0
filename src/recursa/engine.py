"""The RLM loop: root LM call -> run its code in the REPL -> show the output -> repeat -> FINAL.

One :class:`Engine` runs one RLM (the root, or one child at a deeper level). Everything the
whole tree shares (models, budget, tracer, LM gate, configuration) lives in a :class:`Tree`.
The conversation is append-only, so provider prompt caches and a local model's KV cache keep
hitting from one iteration to the next.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recursa.context import Context
from recursa.errors import LimitExceeded, RecursaError
from recursa.gate import LMGate, clip
from recursa.limits import (
    DEFAULT_OUTPUT_CHARS,
    Budget,
    BudgetExhausted,
    Limits,
    Reservation,
    SandboxSlots,
    UsageMeter,
)
from recursa.lm.base import LM
from recursa.parsing import find_code_blocks, find_final
from recursa.prompts import PromptProfile, profile_for
from recursa.sandbox.base import CallHandler, Sandbox, SandboxConfig
from recursa.trace.spans import Span, Tracer
from recursa.types import CellResult, LMSettings, Message, Result, StopReason

if TYPE_CHECKING:
    from recursa.journal import Journal

__all__ = ["Engine", "EngineConfig", "SandboxFactory", "Tree"]

SandboxFactory = Callable[[SandboxConfig, CallHandler], Sandbox]


@dataclass(frozen=True)
class EngineConfig:
    """How the whole tree behaves. Built once by :class:`~recursa.rlm.RLM`."""

    limits: Limits
    sandbox_factory: SandboxFactory
    sandbox_config: SandboxConfig = field(default_factory=SandboxConfig)
    profile: PromptProfile | None = None  # None: chosen per model by profile_for()
    sub_calls: bool = True
    root_settings: LMSettings = field(default_factory=LMSettings)
    sub_settings: LMSettings = field(default_factory=LMSettings)
    sub_prompt_chars: int = 100_000  # what the prompt tells the root a sub-call can read


@dataclass
class Tree:
    """What every engine in one run's tree shares."""

    root_lm: LM
    sub_lm: LM
    models: Mapping[str, LM]  # models llm_query(model=...) may pick, by full and short name
    config: EngineConfig
    budget: Budget
    tracer: Tracer
    gate: LMGate
    run_id: str
    journal: Journal | None = None
    # Live sandboxes of this tree (Limits.max_sandboxes); pass one pool to share it among trees.
    slots: SandboxSlots | None = None

    def __post_init__(self) -> None:
        if self.slots is None:
            lim = self.config.limits
            self.slots = SandboxSlots(lim.max_sandboxes or lim.max_depth + 1, lim.max_depth)


@dataclass
class _State:
    """Per-engine loop state."""

    iterations: int = 0
    consecutive_errors: int = 0
    code_ran: bool = False
    candidate: str = ""  # best partial answer so far
    seen: dict[str, str] = field(default_factory=dict)  # code hash -> output hash
    shown: str = ""  # every output so far, lower-cased with whitespace folded (capped)
    pushed_back: bool = False  # a FINAL was already sent back once for checking


@dataclass(frozen=True)
class _Step:
    final: str | None = None
    feedback: str = ""


# How much of the outputs a run keeps for checking answers against (characters).
_SHOWN_CAP = 2_000_000


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = int(limit * 0.8)
    tail = limit - head
    cut = len(text) - head - tail
    return (
        f"{text[:head]}\n[... {cut:,} characters of output cut; print less, e.g. a slice or a "
        f"count ...]\n{text[len(text) - tail :]}"
    )


class Engine:
    """One RLM at one depth of the tree."""

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
        self.profile = tree.config.profile or profile_for(lm.name)
        # Output shown per turn: the limit if set, else what the model reads comfortably.
        self.output_chars = (
            tree.config.limits.max_output_chars
            or lm.capabilities.output_chars
            or DEFAULT_OUTPUT_CHARS
        )
        self.state = _State()
        self.cell_span: Span | None = None  # parent for sub-call spans made by the running cell
        self.run_span: Span | None = None
        self._prepaid: Reservation | None = None  # the first turn's call, reserved at start

    # ---- the run -------------------------------------------------------------------------------
    async def run(self, question: str, context: Context) -> Result:
        from recursa.subcalls import SubCalls  # the handler for llm_query & co.

        tree, limits = self.tree, self.tree.config.limits
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
        sandbox = tree.config.sandbox_factory(tree.config.sandbox_config, SubCalls(self).handle)
        answer, stop, detail = "", StopReason.ERROR, ""
        failure: BaseException | None = None
        has_slot = False
        messages: list[Message] = []
        try:
            messages = self._first_messages(question, context)
            # No worker starts unless a slot is free and the first turn is paid for: a batch of
            # children the budget cannot pay for never starts their processes.
            await self._take_slot()
            has_slot = True
            self._prepaid = await tree.gate.reserve(self.lm, messages, tree.config.root_settings)
            await sandbox.start()
            await sandbox.load_context(context.value, alias_parts=context.multi)
            answer, stop, detail = await self._loop(messages, sandbox)
        except BudgetExhausted as exc:
            answer, stop, detail = await self._wrap_up(
                messages, sandbox, exc.reason, exc.detail, turn=False
            )
        except asyncio.CancelledError:
            answer, stop, detail = self.state.candidate, StopReason.CANCELLED, "cancelled"
            raise
        except RecursaError as exc:
            answer = await self._repl_answer(sandbox) or self.state.candidate
            stop, detail = StopReason.ERROR, str(exc)
            failure = exc
        finally:
            if self._prepaid is not None:
                tree.budget.release(self._prepaid)  # never sent: not a call
                self._prepaid = None
            if has_slot:
                try:
                    await asyncio.shield(sandbox.shutdown())
                finally:
                    tree.slots.release()  # type: ignore[union-attr]  # set in Tree.__post_init__
            tree.tracer.end(
                self.run_span,
                error=detail if stop in (StopReason.ERROR, StopReason.CANCELLED) else None,
                answer=clip(answer, 20_000),
                stop_reason=stop.value,
                detail=detail,
                iterations=self.state.iterations,
                usage=self.meter.usage.to_dict(),  # this run's subtree; the root's is the total
            )
        result = self._result(answer, stop, detail)
        if failure is not None:
            failure.result = result  # type: ignore[attr-defined]  # nothing is lost
            raise failure
        if stop is not StopReason.FINAL and limits.raise_on_limit and self.depth == 0:
            raise LimitExceeded(stop, result, detail)
        return result

    def _result(self, answer: str, stop: StopReason, detail: str) -> Result:
        b = self.tree.budget
        return Result(
            answer=answer,
            stop_reason=stop,
            iterations=self.state.iterations,
            usage=b.usage,
            usage_by_model=dict(b.by_model),
            usage_by_depth=dict(b.by_depth),
            wall_time_s=(self.run_span.duration_s or 0.0) if self.run_span else 0.0,
            run_id=self.tree.run_id,
            detail=detail,
            spans=tuple(self.tree.tracer.finished),
            warnings=tuple(b.warnings),
            cache_hits=b.cache_hits,
            saved_usd=b.saved_usd,
            replayed_calls=b.replayed,
            retries=b.retries,
        )

    async def _take_slot(self) -> None:
        """Wait (within the run's wall clock) until this engine may start a sandbox."""
        budget = self.tree.budget
        budget.check()
        try:
            async with asyncio.timeout(budget.remaining_time()):
                await self.tree.slots.acquire(self.depth)  # type: ignore[union-attr]
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
                )
            ),
            Message.user(self.profile.first_turn(question=question, metadata=context.describe())),
        ]

    async def _loop(self, messages: list[Message], sandbox: Sandbox) -> tuple[str, StopReason, str]:
        cfg, st, budget = self.tree.config, self.state, self.tree.budget
        while st.iterations < cfg.limits.max_iterations:
            if self._prepaid is None:  # the first turn was paid for before the sandbox started
                budget.check()
            st.iterations += 1
            step = await self._iteration(messages, sandbox, st.iterations)
            if step.final is not None:
                return step.final, StopReason.FINAL, ""
            messages.append(Message.user(step.feedback))
            if st.consecutive_errors >= cfg.limits.max_consecutive_errors:
                why = f"{st.consecutive_errors} iterations in a row without working code"
                return await self._wrap_up(
                    messages, sandbox, StopReason.MAX_CONSECUTIVE_ERRORS, why, turn=True
                )
        detail = f"max_iterations={cfg.limits.max_iterations} reached"
        return await self._wrap_up(messages, sandbox, StopReason.MAX_ITERATIONS, detail, turn=True)

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
        st = self.state
        found = await self._repl_answer(sandbox)
        if found:
            return found, stop, f"{detail}; partial answer from the REPL's answer dict"
        if turn and self.tree.config.limits.final_answer_turn:
            messages.append(Message.user(self.profile.final_turn))
            try:
                step = await self._iteration(messages, sandbox, st.iterations + 1, last_turn=True)
            except BudgetExhausted as exc:  # no budget left for the extra turn: say so
                detail = f"{detail}; no answer-now turn: {exc.detail}"
            else:
                if step.final:
                    return step.final, stop, f"{detail}; answer from one answer-now turn (no code)"
        if st.candidate:
            return st.candidate, stop, f"{detail}; partial answer: a FINAL not yet checked"
        return "", stop, f"{detail}; no partial answer: the model gave none"

    async def _iteration(
        self, messages: list[Message], sandbox: Sandbox, index: int, *, last_turn: bool = False
    ) -> _Step:
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
                self.tree.config.root_settings,
                role="root",
                depth=self.depth,
                parent=span,
                meter=self.meter,
                reservation=prepaid,
            )
            messages.append(Message.assistant(completion.text))
            step = await self._step(completion.text, sandbox, span, last_turn=last_turn)
        except BaseException as exc:
            tracer.end(span, error=f"{type(exc).__name__}: {exc}")
            raise
        tracer.end(span, final=step.final is not None)
        return step

    # ---- one reply -----------------------------------------------------------------------------
    def _remember(self, output: str) -> None:
        st = self.state
        if len(st.shown) < _SHOWN_CAP:
            st.shown += " " + " ".join(output.split()).lower()

    def _check_final(self, answer: str, *, saw_output: bool, last_turn: bool) -> str | None:
        """Under a profile that asks for it, send a FINAL back once for checking when the model
        had seen no output yet, or when the answer appears in none of the outputs (small
        models guess a plausible value after a search found nothing). Returns the feedback,
        or ``None`` to accept the answer."""
        st, profile = self.state, self.profile
        if not profile.require_code_before_final or last_turn or st.pushed_back:
            return None
        norm = " ".join(answer.split()).lower()
        if saw_output and (not norm or len(norm) > 300 or norm in st.shown):
            return None
        st.pushed_back = True
        st.candidate = answer
        if not saw_output:
            return profile.final_unverified
        return profile.final_unseen.format(answer=answer[:200])

    async def _step(self, text: str, sandbox: Sandbox, span: Span, *, last_turn: bool) -> _Step:
        st, profile = self.state, self.profile
        saw_output = st.code_ran  # before this reply's code: has the model seen any output?
        blocks = find_code_blocks(text)
        bare = find_final(text)
        if last_turn:  # an "answer now" turn: a FINAL is taken, code is never run
            if bare is None:
                return _Step()
            return _Step(final=await self._resolve_bare(bare, sandbox))
        if not blocks:
            if bare is None:
                st.consecutive_errors += 1
                return _Step(feedback=profile.no_code)
            if profile.require_code_before_final and not st.code_ran and not last_turn:
                st.candidate = bare.text()
                st.consecutive_errors += 1
                return _Step(feedback=profile.final_before_code)
            answer = await self._resolve_bare(bare, sandbox)
            pushback = self._check_final(answer, saw_output=saw_output, last_turn=last_turn)
            return _Step(feedback=pushback) if pushback else _Step(final=answer)
        outputs: list[str] = []
        any_ok = False
        repeated = True
        for i, code in enumerate(blocks, start=1):
            res = await self._cell(code, sandbox, span, i)
            st.code_ran = True
            any_ok = any_ok or res.ok
            shown = self._format_cell(res, i, len(blocks))
            out_hash, code_hash = _digest(shown), _digest(code.strip())
            repeated = repeated and st.seen.get(code_hash) == out_hash
            st.seen[code_hash] = out_hash
            outputs.append(shown)
            self._remember(res.stdout)
            if res.final is not None:
                pushback = self._check_final(res.final, saw_output=saw_output, last_turn=last_turn)
                if pushback is None:
                    return _Step(final=res.final)
                outputs.append(pushback)
                bare = None  # the reply's answer is being checked already
                break
            if res.fatal:
                await sandbox.restart()
                break
        st.consecutive_errors = 0 if any_ok else st.consecutive_errors + 1
        if bare is not None:
            name = bare.name()
            value = await sandbox.get_var(name) if name else None
            if value is not None or last_turn or not profile.require_code_before_final:
                answer = value if value is not None else bare.text()
                pushback = self._check_final(answer, saw_output=saw_output, last_turn=last_turn)
                if pushback is None:
                    return _Step(final=answer)
                outputs.append(pushback)
            else:
                st.candidate = bare.text()
                outputs.append(profile.final_unverified)
        limit = self.output_chars
        feedback = _truncate("\n\n".join(outputs), limit)
        nudge = profile.repeated_code if repeated else profile.after_output
        return _Step(feedback=f"{feedback}\n\n{nudge}")

    async def _resolve_bare(self, bare, sandbox: Sandbox) -> str:
        """A FINAL written outside code: a REPL variable's value if it names one, else its text."""
        name = bare.name()
        if name and self.state.code_ran:
            value = await sandbox.get_var(name)
            if value is not None:
                return value
        return bare.text()

    async def _cell(self, code: str, sandbox: Sandbox, parent: Span, index: int) -> CellResult:
        limits, budget, tracer = self.tree.config.limits, self.tree.budget, self.tree.tracer
        deadline = None if limits.timeout_s is None else budget.started + limits.timeout_s
        self.cell_span = tracer.start(
            "cell", f"cell {index}", parent, code=code, depth=self.depth, index=index
        )
        try:
            res = await sandbox.execute(code, timeout_s=limits.cell_timeout_s, deadline=deadline)
        except BaseException as exc:
            tracer.end(self.cell_span, error=f"{type(exc).__name__}: {exc}")
            raise
        diverged = self._journal_cell(code, res)
        tracer.end(
            self.cell_span,
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
        try:
            warning = journal.record_cell(self.path, code, res)
        except sqlite3.Error as exc:
            self.tree.budget.warnings.append(f"journaling stopped ({exc}); cannot be resumed")
            self.tree.journal = None
            return False
        if warning:
            self.tree.budget.warnings.append(warning)
        return warning is not None

    def _format_cell(self, res: CellResult, index: int, total: int) -> str:
        parts = [f"[output of block {index} of {total}]"] if total > 1 else []
        if res.stdout:
            parts.append(res.stdout.rstrip("\n"))
            if res.output_cut_chars:
                parts.append(f"[... {res.output_cut_chars:,} more characters were printed and cut]")
        if res.fatal:
            parts.append(
                f"The REPL process died ({res.error}). It was restarted: every variable you made "
                "is lost; `context` is loaded again."
            )
        elif res.error:
            parts.append(f"Error:\n{res.error}")
        if not res.stdout and not res.error and not res.fatal:
            parts.append("(the code ran and printed nothing)")
        return "\n".join(parts)
