"""Compaction of long root conversations: a summary in the prompt, the whole transcript in the REPL.

An RLM's root conversation only grows: every turn appends the model's code and the output it
printed. When it nears the model's context window, :class:`Compactor` replaces the older turns
with a summary the model writes of them, and loads every message so far into the REPL as
``history_transcript`` (a list of ``{"role", "content"}`` dicts that is appended to, never cut),
so what the summary leaves out stays searchable raw material rather than lost.

What is kept: the system prompt, the first user turn (the question and the context's metadata,
with the compaction note after it) and the last turns verbatim, so user and assistant messages
still alternate (some chat templates refuse anything else).

The summary is a call to the engine's own model through the run's gate, with role
``"compaction"``: it is budgeted, journaled (a resumed run replays it, so the compacted prompts
match the journal's), cached and traced, under a ``compaction`` span. The functions here are
pure; :class:`Compactor` holds one engine's state and does the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from recursa.gate import clip
from recursa.limits import UsageMeter
from recursa.lm.base import LM
from recursa.prompts import render_text
from recursa.types import LMSettings, Message, Usage

if TYPE_CHECKING:
    from recursa.engine import Tree
    from recursa.sandbox.base import Sandbox
    from recursa.trace.spans import Span

__all__ = [
    "DEFAULT_THRESHOLD",
    "TRANSCRIPT_VAR",
    "Compactor",
    "Measured",
    "Plan",
    "alternates",
    "compacted_messages",
    "compactor_for",
    "estimate_tokens",
    "next_trigger",
    "plan_compaction",
    "should_compact",
    "summary_request",
]

TRANSCRIPT_VAR = "history_transcript"
DEFAULT_THRESHOLD = 0.85  # what rlms users know (compaction_threshold_pct)
KEEP_TURNS = 2  # the last (reply, output) pairs kept verbatim: the model's current footing
# Code, numbers and JSON tokenize denser than prose: estimate on the safe side of the usual 4.
CHARS_PER_TOKEN = 3.5
MESSAGE_TOKENS = 4  # a chat template's per-message framing
SUMMARY_TOKENS = 1024  # the summary's output cap, where the window leaves room for it
MIN_SUMMARY_TOKENS = 64


@dataclass(frozen=True, slots=True)
class Measured:
    """Tokens a model reported for the first ``messages`` messages (its prompt and reply)."""

    messages: int
    tokens: int


def char_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _tokens(messages: Sequence[Message]) -> int:
    return sum(char_tokens(len(m.content)) + MESSAGE_TOKENS for m in messages)


def estimate_tokens(messages: Sequence[Message], measured: Measured | None = None) -> int:
    """The conversation's size in tokens: what the model reported for its prefix (the last root
    call's prompt plus reply) plus an estimate of what came after, else an estimate of all."""
    if measured is not None and 0 < measured.messages <= len(messages):
        return measured.tokens + _tokens(messages[measured.messages :])
    return _tokens(messages)


def should_compact(tokens: int, window: int | None, threshold: float) -> bool:
    """Whether a conversation of ``tokens`` has reached ``threshold`` of ``window`` (never
    when the window is unknown)."""
    return window is not None and window > 0 and tokens >= threshold * window


def next_trigger(after: int, threshold_tokens: int, window: int) -> int | None:
    """Where the next compaction starts when this one left ``after`` tokens: ``None`` (the
    threshold) if it got under the threshold, else halfway from ``after`` to the window. A
    conversation whose first turn and last output alone pass the threshold would otherwise be
    compacted before every turn, a summary call each for a few tokens of room."""
    return None if after < threshold_tokens else (after + window) // 2


def alternates(messages: Sequence[Message]) -> bool:
    """System messages first, then user and assistant in turn, starting and ending with user
    (what a chat template accepts before the model's reply)."""
    body = [m for m in messages if m.role != "system"]
    leading = len(messages) - len(body)
    if any(m.role == "system" for m in messages[leading:]) or not body:
        return False
    expected = ("user", "assistant")
    return all(m.role == expected[i % 2] for i, m in enumerate(body)) and len(body) % 2 == 1


@dataclass(frozen=True, slots=True)
class Plan:
    """Which messages a compaction keeps: ``head`` at the start (system prompt and first user
    turn), ``tail`` at the end (the last turns); the ``removed`` between are summarized."""

    head: int
    tail: int
    total: int

    @property
    def removed(self) -> int:
        return self.total - self.head - self.tail

    @property
    def turns_removed(self) -> int:
        return self.removed // 2


def plan_compaction(
    messages: Sequence[Message], *, keep_turns: int = KEEP_TURNS, tail_tokens: int | None = None
) -> Plan | None:
    """What to keep, or ``None`` when there is nothing to compact (fewer than two turns, or a
    conversation that does not alternate). At least one turn is kept verbatim (the last output
    is what the model acts on next) and at least one removed; ``tail_tokens`` drops kept turns
    (down to one) while they would take more than that."""
    if not alternates(messages):
        return None
    head = next(i for i, m in enumerate(messages) if m.role == "user") + 1
    turns = (len(messages) - head) // 2  # (assistant reply, user message) pairs
    if turns < 2:
        return None
    keep = max(1, min(keep_turns, turns - 1))
    while keep > 1 and tail_tokens is not None and _tokens(messages[-2 * keep :]) > tail_tokens:
        keep -= 1
    return Plan(head=head, tail=2 * keep, total=len(messages))


def summary_words(cap: int) -> int:
    return max(40, int(cap * 0.6))


def summary_request(
    messages: Sequence[Message], plan: Plan, window: int, tokens: int, cap: int = SUMMARY_TOKENS
) -> tuple[list[Message], int, str]:
    """The summary call's messages, its output cap and its form.

    ``"prefix"``: the conversation itself with the request after the last output, so provider
    prompt caches and a local model's KV cache serve all but the request. When that would not
    leave room for the summary in the window, ``"standalone"``: a short prompt holding the
    first turn and a log of the turns, cut in the middle to fit.
    """
    cap = min(cap, max(MIN_SUMMARY_TOKENS, window // 8))
    request = render_text("compaction_request", words=summary_words(cap))
    room = window - tokens - char_tokens(len(request)) - MESSAGE_TOKENS
    if room >= MIN_SUMMARY_TOKENS:
        cap = min(cap, room)
        last = messages[-1]
        asked = Message.user(f"{last.content}\n\n{request}")
        return [*messages[:-1], asked], cap, "prefix"
    system = render_text("compaction_system")
    first = messages[plan.head - 1].content
    log = "\n\n".join(f"--- {m.role} ---\n{m.content}" for m in messages[plan.head :])
    fixed = char_tokens(len(system) + len(first) + len(request)) + 200  # framing, margin
    log_chars = max(1000, int((window - cap - fixed) * CHARS_PER_TOKEN))
    text = render_text("compaction_log", first_turn=first, log=clip(log, log_chars))
    return [Message.system(system), Message.user(f"{text}\n\n{request}")], cap, "standalone"


def compacted_messages(
    messages: Sequence[Message], plan: Plan, first_turn: str, note: str
) -> list[Message]:
    """The conversation after compaction: the head with ``note`` after the original first
    turn, then the kept tail verbatim."""
    head = list(messages[: plan.head - 1])
    return [*head, Message.user(f"{first_turn}\n\n{note}"), *messages[plan.total - plan.tail :]]


def window_for(lm: LM, tree: Tree) -> int | None:
    """The window compaction works to: ``root_window`` for the root model if set, else what
    the model declares."""
    override = tree.config.root_window if lm is tree.root_lm else None
    window = override or lm.capabilities.context_window
    return window if window and window > 0 else None


def compactor_for(
    tree: Tree,
    lm: LM,
    *,
    depth: int,
    meter: UsageMeter,
    parent: Span | None,
    settings: LMSettings,
) -> Compactor | None:
    """The compactor of one engine's conversation, or ``None`` when compaction is off or the
    model's window is unknown (said once in the run's warnings when compaction was asked for)."""
    asked = tree.config.compaction
    if asked is False:
        return None
    window = window_for(lm, tree)
    if window is None:
        warning = (
            f"compaction is on but {lm.name} declares no context window, so its conversation "
            "is never compacted: pass root_window=TOKENS (--root-window) to compact it"
        )
        if asked and warning not in tree.warnings:
            tree.warnings.append(warning)
        return None
    threshold = tree.config.compaction_threshold
    return Compactor(tree, lm, depth, meter, parent, settings, window, threshold)


@dataclass
class Compactor:
    """One engine's compactions: call :meth:`observe` after each root call and
    :meth:`before_turn` before each; the transcript and counts live here."""

    tree: Tree
    lm: LM
    depth: int
    meter: UsageMeter
    parent: Span | None
    settings: LMSettings
    window: int
    threshold: float
    keep_turns: int = KEEP_TURNS
    transcript: list[dict[str, str]] = field(default_factory=list)
    count: int = 0
    _measured: Measured | None = None
    _recorded: int | None = None  # messages of the current list already in the transcript
    _first_turn: str | None = None  # the first user turn as it was before any note
    _trigger: int | None = None  # see next_trigger()
    _warned: bool = False  # said once that compaction cannot get under the threshold

    def observe(self, n_messages: int, usage: Usage | None) -> None:
        """The usage the last root call reported, for the first ``n_messages`` messages."""
        tokens = usage.input_tokens + usage.output_tokens if usage is not None else 0
        self._measured = Measured(n_messages, tokens) if tokens > 0 else None

    @property
    def threshold_tokens(self) -> int:
        return int(self.threshold * self.window)

    async def before_turn(self, messages: list[Message], sandbox: Sandbox) -> bool:
        """Compact ``messages`` in place if they reached the threshold; True if it did."""
        tokens = estimate_tokens(messages, self._measured)
        if not should_compact(tokens, self.window, self.threshold):
            return False
        if self._trigger is not None and tokens < self._trigger:
            return False
        plan = plan_compaction(
            messages, keep_turns=self.keep_turns, tail_tokens=self.threshold_tokens // 2
        )
        if plan is None:
            return False
        await self._compact(messages, plan, tokens, sandbox)
        return True

    async def _compact(
        self, messages: list[Message], plan: Plan, tokens: int, sandbox: Sandbox
    ) -> None:
        tracer = self.tree.tracer
        self.count += 1
        span = tracer.start(
            "compaction",
            f"compaction {self.count}",
            self.parent,
            index=self.count,
            depth=self.depth,
            window=self.window,
            threshold_tokens=self.threshold_tokens,
            tokens_before=tokens,
            messages_before=len(messages),
            turns_removed=plan.turns_removed,
            messages_removed=plan.removed,
        )
        meter = UsageMeter(self.meter)  # the summary's own cost, still counted as this RLM's
        try:
            summary, form = await self._summarize(messages, plan, tokens, span, meter)
            if self._first_turn is None:
                self._first_turn = messages[plan.head - 1].content
            transcript = self.transcript + self._unrecorded(messages, plan)
            # Loaded like a context, not set like a variable: a restarted worker gets it back.
            await sandbox.load_context(transcript, name=TRANSCRIPT_VAR)
            self.transcript = transcript
            note = render_text(
                "compacted_note",
                removed=plan.removed,
                count=self.count,
                summary=summary,
                entries=len(self.transcript),
            )
            messages[:] = compacted_messages(messages, plan, self._first_turn, note)
        except BaseException as exc:
            tracer.end(span, error=f"{type(exc).__name__}: {exc}")
            raise
        self._recorded, self._measured = len(messages), None  # the measured prefix is gone
        after = estimate_tokens(messages)
        self._trigger = next_trigger(after, self.threshold_tokens, self.window)
        if self._trigger is not None:
            self._warn_stuck(after)
        tracer.end(
            span,
            form=form,
            tokens_after=after,
            messages_after=len(messages),
            summary_chars=len(summary),
            summary=clip(summary),
            transcript_messages=len(self.transcript),
            usage=meter.usage.to_dict(),
            # The whole new conversation: a trace can rebuild every root prompt from it
            # and the root calls' new messages (what SFT export needs).
            messages=[m.to_dict() for m in messages],
        )

    async def _summarize(
        self, messages: list[Message], plan: Plan, tokens: int, span: Span, meter: UsageMeter
    ) -> tuple[str, str]:
        user_cap = self.settings.max_output_tokens
        cap = min(SUMMARY_TOKENS, user_cap) if user_cap else SUMMARY_TOKENS
        request, cap, form = summary_request(messages, plan, self.window, tokens, cap)
        settings = replace(self.settings, max_output_tokens=cap, expect_code=False)
        completion = await self.tree.gate.complete(
            self.lm,
            request,
            settings,
            role="compaction",
            depth=self.depth,
            parent=span,
            meter=meter,
        )
        # The model's text goes back to the same model as a user message: it is no more
        # trusted than its replies already are, only bounded (a summary must shrink the prompt).
        summary = clip(completion.text.strip(), int(cap * CHARS_PER_TOKEN * 1.5))
        return summary or render_text("compaction_empty"), form

    def _unrecorded(self, messages: Sequence[Message], plan: Plan) -> list[dict[str, str]]:
        """The messages not yet in the transcript (the first time: all but the system prompt;
        later: the turns since the last compaction)."""
        start = self._recorded if self._recorded is not None else plan.head - 1
        return [m.to_dict() for m in messages[start:]]

    def _warn_stuck(self, tokens: int) -> None:
        if self._warned:
            return
        self._warned = True
        self.tree.warnings.append(
            f"compaction could not bring {self.lm.name}'s conversation under "
            f"{self.threshold_tokens:,} tokens (about {tokens:,} remain: the first turn and the "
            "last output): lower max_output_chars (--max-output-chars), or set root_window "
            "(--root-window) if the model's real window is larger"
        )
