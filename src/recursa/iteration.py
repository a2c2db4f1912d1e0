"""One iteration of the RLM loop, as a typed record built by small steps you can test alone.

    reply = parse(text)                          # code blocks, a FINAL written outside code
    cells = await run_cells(reply.blocks, ...)   # each block's CellResult, in order
    verdict, history = judge(profile, history, reply, cells, final_var)  # the profile's rules
    feedback = render(profile, cells, verdict, limit)                      # the next user turn

Only :func:`run_cells` has effects (it runs code through the callables it is given); the other
steps are pure. What one iteration leaves for the next is a frozen :class:`History`: the engine
passes it in and gets a new one back, so no loop state is shared between methods.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

from recursa.parsing import FinalText, find_code_blocks, find_final
from recursa.prompts import PromptProfile, fill, render_text
from recursa.types import CellResult

__all__ = [
    "Cell",
    "History",
    "Iteration",
    "Reply",
    "Verdict",
    "final_var_name",
    "format_cell",
    "judge",
    "parse",
    "render",
    "run_cells",
    "truncate",
]

# How much of the outputs a run keeps for checking answers against (characters).
SHOWN_CAP = 2_000_000
# Answers longer than this (folded) are not looked up in the outputs.
CHECKABLE_CHARS = 300


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()


def _fold(text: str) -> str:
    return " ".join(text.split()).lower()


class Reply(NamedTuple):
    """The root model's reply, read: its code blocks and a FINAL written outside them."""

    text: str
    blocks: tuple[str, ...]
    bare: FinalText | None


class Cell(NamedTuple):
    """One block as it ran: its code, its result and its output as the model will see it."""

    code: str
    result: CellResult
    shown: str


class History(NamedTuple):
    """What one RLM's iterations carry forward (replaced, never changed in place)."""

    code_ran: bool = False
    consecutive_errors: int = 0
    candidate: str = ""  # the best partial answer so far: a FINAL not (yet) accepted
    pushed_back: bool = False  # a FINAL was already sent back once for checking
    # code hash -> hash of its latest output. Never changed in place: an iteration that adds
    # to it makes a new dict (a C-level copy, cheaper than any persistent structure here).
    seen: Mapping[str, str] = MappingProxyType({})
    shown: str = ""  # every output so far, folded and lower-cased (capped at SHOWN_CAP)


class Verdict(NamedTuple):
    """The judge's decision: an accepted ``final``, else what to tell the model.

    ``note`` follows the cells' output (a pushback); ``message`` replaces the whole feedback
    (a reply with no code to run). ``repeated``: the reply re-ran code whose output had not
    changed.
    """

    final: str | None = None
    note: str | None = None
    message: str | None = None
    repeated: bool = False


class Iteration(NamedTuple):
    """One iteration, whole: the reply, what its code did, and the answer or the feedback."""

    number: int  # 1 for the first turn (an "answer now" turn follows the last)
    reply: Reply
    cells: tuple[Cell, ...] = ()
    final: str | None = None
    feedback: str = ""
    last_turn: bool = False


# ---- parse ------------------------------------------------------------------------------------
def parse(text: str) -> Reply:
    return Reply(text, tuple(find_code_blocks(text)), find_final(text))


# ---- run --------------------------------------------------------------------------------------
def format_cell(res: CellResult, index: int, total: int) -> str:
    """A cell's output as the model sees it (pure)."""
    parts = [render_text("cell_header", index=index, total=total)] if total > 1 else []
    if res.stdout:
        parts.append(res.stdout.rstrip("\n"))
        if res.output_cut_chars:
            parts.append(render_text("output_cut", chars=f"{res.output_cut_chars:,}"))
    if res.fatal:
        parts.append(render_text("repl_died", error=res.error))
    elif res.error:
        parts.append(render_text("cell_error", error=res.error))
    if not res.stdout and not res.error and not res.fatal:
        parts.append(render_text("printed_nothing"))
    return "\n".join(parts)


async def run_cells(
    blocks: Sequence[str],
    execute: Callable[[str, int], Awaitable[CellResult]],
    restart: Callable[[], Awaitable[None]],
) -> tuple[Cell, ...]:
    """Run the blocks in order until one gives a final answer or kills the worker (which is
    then restarted). ``execute(code, index)`` runs one block (index from 1)."""
    cells: list[Cell] = []
    for i, code in enumerate(blocks, start=1):
        res = await execute(code, i)
        cells.append(Cell(code, res, format_cell(res, i, len(blocks))))
        if res.final is not None:
            break
        if res.fatal:
            await restart()
            break
    return tuple(cells)


def final_var_name(reply: Reply, history: History, cells: Sequence[Cell]) -> str | None:
    """The REPL variable a FINAL written outside code names, when it should be looked up: not
    when a cell gave the answer, and not before any code has run."""
    if reply.bare is None or (name := reply.bare.name()) is None:
        return None
    if cells:
        return None if cells[-1].result.final is not None else name
    return name if history.code_ran else None


# ---- judge ------------------------------------------------------------------------------------
def _check(
    profile: PromptProfile, history: History, answer: str, saw_output: bool
) -> tuple[str | None, History]:
    """Under a profile that asks for it, send a FINAL back once for checking when the model had
    seen no output yet, or when the answer appears in none of the outputs (small models guess a
    plausible value after a search found nothing). Returns the pushback (``None``: accept)."""
    if not profile.require_code_before_final or history.pushed_back:
        return None, history
    norm = _fold(answer)
    if saw_output and (not norm or len(norm) > CHECKABLE_CHARS or norm in history.shown):
        return None, history
    history = history._replace(pushed_back=True, candidate=answer)
    if not saw_output:
        return profile.final_unverified, history
    return profile.unseen(answer[:200]), history


def _after_cells(history: History, cells: Sequence[Cell]) -> tuple[History, bool]:
    """The history once the cells ran, and whether every one repeated earlier code and output."""
    seen = dict(history.seen)
    shown = history.shown
    repeated = True
    ok = False
    for cell in cells:
        code_hash, out_hash = _digest(cell.code.strip()), _digest(cell.shown)
        repeated = repeated and seen.get(code_hash) == out_hash
        seen[code_hash] = out_hash
        if len(shown) < SHOWN_CAP:
            shown = f"{shown} {_fold(cell.result.stdout)}"
        ok = ok or cell.result.ok
    errors = 0 if ok else history.consecutive_errors + 1
    updated = History(
        code_ran=True,
        consecutive_errors=errors,
        candidate=history.candidate,
        pushed_back=history.pushed_back,
        seen=seen,
        shown=shown,
    )
    return updated, repeated


def judge(
    profile: PromptProfile,
    history: History,
    reply: Reply,
    cells: Sequence[Cell],
    final_var: str | None = None,
    *,
    last_turn: bool = False,
) -> tuple[Verdict, History]:
    """Accept the reply's answer or say what to do next, by the profile's declared rules.

    ``final_var`` is the value of the variable a FINAL outside code named (see
    :func:`final_var_name`), if it exists. On an "answer now" turn a FINAL is taken as it is.
    """
    bare = reply.bare
    if last_turn:
        if bare is None:
            return Verdict(), history
        return Verdict(final=final_var if final_var is not None else bare.text()), history
    strict = profile.require_code_before_final
    saw_output = history.code_ran  # before this reply's code: had the model seen any output?
    if not cells:
        if bare is None:
            history = history._replace(consecutive_errors=history.consecutive_errors + 1)
            return Verdict(message=profile.no_code), history
        if strict and not history.code_ran:
            errors = history.consecutive_errors + 1
            history = history._replace(candidate=bare.text(), consecutive_errors=errors)
            return Verdict(message=profile.final_before_code), history
        answer = final_var if final_var is not None else bare.text()
        pushback, history = _check(profile, history, answer, saw_output)
        return (Verdict(message=pushback) if pushback else Verdict(final=answer)), history
    history, repeated = _after_cells(history, cells)
    given = cells[-1].result.final
    if given is None and bare is not None:
        if final_var is None and strict:  # FINAL in the same reply as code, before its output
            history = history._replace(candidate=bare.text())
            return Verdict(note=profile.final_unverified, repeated=repeated), history
        given = final_var if final_var is not None else bare.text()
    if given is None:
        return Verdict(repeated=repeated), history
    pushback, history = _check(profile, history, given, saw_output)
    if pushback is None:
        return Verdict(final=given), history
    return Verdict(note=pushback, repeated=repeated), history


# ---- render -----------------------------------------------------------------------------------
def truncate(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters: its head and tail, with a marker between."""
    if len(text) <= limit:
        return text
    head = int(limit * 0.8)
    tail = limit - head
    cut = len(text) - head - tail
    return render_text("truncated", head=text[:head], cut=f"{cut:,}", tail=text[len(text) - tail :])


def render(
    profile: PromptProfile,
    cells: Sequence[Cell],
    verdict: Verdict,
    output_chars: int,
    question: str = "",
) -> str:
    """The next user message after an iteration that gave no accepted answer (pure). A
    profile's nudge may restate the ``${question}`` (small models lose sight of it)."""
    if verdict.message is not None:
        return verdict.message
    outputs = [cell.shown for cell in cells]
    if verdict.note:
        outputs.append(verdict.note)
    nudge = profile.repeated_code if verdict.repeated else profile.after_output
    if "${question}" in nudge:
        nudge = fill(nudge, question=" ".join(question.split()))
    shown = truncate("\n\n".join(outputs), output_chars)
    return f"{shown}\n\n{nudge}"
