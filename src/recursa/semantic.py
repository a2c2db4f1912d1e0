"""Semantic list operations: ``llm_map``, ``llm_classify`` and ``llm_filter``.

Model code hands over a list of items and one instruction; the host answers every item and
returns a list aligned with the input. How, is the point of this module:

- **Packing.** Items go many to one prompt, numbered in and numbered out, sized to what the
  sub-model reads well (its ``chunk_chars``) and to how many answers it writes reliably in one
  reply. One prompt per item would pay the instruction once per item; one prompt for everything
  would not fit, or would lose items in the middle.
- **Shared prefix first.** Every prompt of an operation starts with the same text (the
  instruction, the labels, the answer format) and only then lists its items, so a backend with
  a prompt cache, or the embedded model's KV cache, evaluates that prefix once.
- **Robust parsing, narrow retries.** Each reply is read line by line (``3: label``); an answer
  that is missing or is not one of the labels marks only that item for another try, in smaller
  packs, then alone. What still fails comes back as ``None`` (``False`` for a filter) and is
  counted in a note the REPL prints.
- **Identical items are answered once.**

The pure steps (:func:`pack`, :func:`render_pack`, :func:`parse_pack`) know nothing about
models; :func:`run_operation` drives them with any ``ask(prompt, max_tokens) -> str`` callable.
The REPL side is a row of the host-function table (:mod:`recursa.sandbox.functions`) and the
handler in :mod:`recursa.subcalls`, which sends each prompt through the run's LM gate (budget,
journal, cache and trace, as for every sub-call).
"""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "OPERATIONS",
    "Operation",
    "OperationResult",
    "pack",
    "parse_pack",
    "render_pack",
    "run_operation",
]

Kind = Literal["map", "classify", "filter"]
#: Sends one prompt to the sub-model: ``(prompt, max_output_tokens) -> reply``.
Ask = Callable[[str, int], Awaitable[str]]
#: Asks a backend that can choose to reply with one of the choices: ``(prompt, choices) -> one``.
Choose = Callable[[str, tuple[str, ...]], Awaitable[str]]

OPERATIONS: dict[str, Kind] = {"llm_map": "map", "llm_classify": "classify", "llm_filter": "filter"}

# At most this many items per prompt: a small model keeps count of about this many numbered
# answers; a larger pack saves little, since the shared prefix is evaluated once anyway.
MAX_ITEMS = {"map": 10, "classify": 25, "filter": 25}
MAX_ITEM_CHARS = 2_000  # one item's text in a packed prompt (a longer one is cut)
RETRY_ROUNDS = 2  # after the first pass: smaller packs, then one item a prompt
MAX_OUTPUT_TOKENS = 4_096

_YES = {"yes", "y", "true", "1", "holds", "match", "matches"}
_NO = {"no", "n", "false", "0", "none"}
_NUMBERED = re.compile(r"^\W{0,3}(?:item\s*)?#?(\d{1,5})\s*[:.)\]\-–=]\s*(.*?)\s*$", re.IGNORECASE)
_EDGE = " \t\"'`*_.,;:!()[]{}<>"


def _norm(text: str) -> str:
    return " ".join(text.lower().strip(_EDGE).split())


@dataclass(frozen=True, slots=True)
class Operation:
    """One semantic operation: its kind, the instruction and (for a classification) labels."""

    kind: Kind
    instruction: str = ""
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "classify":
            # Sorted: the order a caller lists labels in changes nothing, so two calls with the
            # same labels send the same prompts (and the call cache can answer the second).
            unique = {str(x).strip() for x in self.labels if str(x).strip()}
            labels = tuple(sorted(unique, key=lambda x: (x.lower(), x)))
            if len(labels) < 2:
                raise ValueError("llm_classify needs at least two different labels")
            object.__setattr__(self, "labels", labels)
        elif not self.instruction.strip():
            what = "condition" if self.kind == "filter" else "instruction"
            raise ValueError(f"llm_{self.kind} needs a non-empty {what}")

    # ---- the prompt -------------------------------------------------------------------------
    def header(self) -> str:
        """The shared prefix of every prompt of this operation."""
        if self.kind == "classify":
            task = self.instruction.strip() or "Classify each item."
            labels = "\n".join(f"- {label}" for label in self.labels)
            answer = (
                "the one label from the list that fits the item best, spelled exactly as listed"
            )
            return f"{task}\n\nLabels:\n{labels}\n\n{_format_rule(answer)}"
        if self.kind == "filter":
            return (
                f"Condition: {self.instruction.strip()}\n\n"
                f"{_format_rule('yes if the condition holds for the item, no if it does not')}"
            )
        rule = _format_rule("your answer for that item, on one line")
        return f"{self.instruction.strip()}\n\n{rule}"

    def tokens_per_item(self) -> int:
        """Reply tokens one item needs (its number, the answer, the line break), generously."""
        if self.kind == "classify":
            return 6 + max(len(label) for label in self.labels) // 2
        if self.kind == "filter":
            return 6
        return 80

    # ---- one answer -------------------------------------------------------------------------
    def read(self, text: str) -> Any:
        """One item's answer as a value (a label, a bool, a string), or None if unusable."""
        if self.kind == "classify":
            return _match_label(text, self.labels)
        if self.kind == "filter":
            words = _norm(text).split()
            if words and words[0] in _YES:
                return True
            if words and words[0] in _NO:
                return False
            return None
        text = text.strip()
        return text or None

    def choices(self) -> tuple[str, ...]:
        """The replies a backend that can choose (``Capabilities.choices``) picks from: the
        labels, or yes/no; none for a map."""
        if self.kind == "classify":
            return self.labels
        return ("yes", "no") if self.kind == "filter" else ()

    def failed(self) -> Any:
        """What an item that never got a usable answer becomes."""
        return False if self.kind == "filter" else None


def _format_rule(answer: str) -> str:
    return (
        "For each numbered item below, write one line: the item's number, a colon, then "
        f"{answer}. Answer every item, in order, and write nothing else."
    )


def _match_label(text: str, labels: tuple[str, ...]) -> str | None:
    said = _norm(text.split("\n", 1)[0])
    if not said:
        return None
    by_norm = {_norm(label): label for label in labels}
    if said in by_norm:
        return by_norm[said]
    # "the label is numeric value" / "numeric value (a date)": the longest label it contains.
    inside = [n for n in by_norm if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", said)]
    if inside:
        best = max(inside, key=len)
        if sum(1 for n in inside if n not in best) == 0:
            return by_norm[best]
    # "numeric" for "numeric value": a unique label it starts.
    starts = [n for n in by_norm if n.startswith(said) or said.startswith(n)]
    if len(starts) == 1:
        return by_norm[starts[0]]
    close = difflib.get_close_matches(said, list(by_norm), n=2, cutoff=0.8)
    if len(close) == 1:
        return by_norm[close[0]]
    return None


# ---- the pure steps ------------------------------------------------------------------------------
def _item_text(item: str) -> str:
    one_line = " ".join(item.split())
    if len(one_line) > MAX_ITEM_CHARS:
        one_line = one_line[:MAX_ITEM_CHARS] + " [...]"
    return one_line


def pack(texts: Sequence[str], room_chars: int, max_items: int) -> list[list[int]]:
    """Indices of ``texts`` grouped into prompts: in order, each group at most ``max_items``
    long and about ``room_chars`` of item text (a group always takes at least one item)."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, text in enumerate(texts):
        cost = len(text) + 8  # the number and line break
        if current and (len(current) >= max_items or size + cost > room_chars):
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += cost
    if current:
        groups.append(current)
    return groups


def render_pack(op: Operation, texts: Sequence[str]) -> str:
    """The prompt for one pack: the shared header, then the items numbered from 1."""
    lines = "\n".join(f"{k}. {text}" for k, text in enumerate(texts, start=1))
    n = len(texts)
    tail = f"Now write {n} line{'s' if n != 1 else ''}, one per item, from 1 to {n}."
    return f"{op.header()}\n\nItems:\n{lines}\n\n{tail}"


def render_single(op: Operation, text: str) -> str:
    """The prompt for one item alone: the answer is the whole reply. The item comes last, so
    every item's prompt shares everything before it."""
    if op.kind == "classify":
        task = op.instruction.strip() or "Classify the item."
        labels = "\n".join(f"- {label}" for label in op.labels)
        return (
            f"{task}\n\nLabels:\n{labels}\n\nReply with the one label from the list that fits "
            f"the item best.\n\nItem: {text}"
        )
    if op.kind == "filter":
        return (
            f"Condition: {op.instruction.strip()}\n\nReply yes if the condition holds for the "
            f"item, no if it does not.\n\nItem: {text}"
        )
    return f"{op.instruction.strip()}\n\nReply with your answer for the item only.\n\nItem: {text}"


def parse_pack(op: Operation, reply: str, n: int) -> list[Any]:
    """The values of a pack of ``n`` items from the reply (None where an answer is unusable).

    Lines ``k: answer`` (also ``k.``, ``k)``, ``Item k -``) are matched to items by number; the
    first answer for a number wins. A reply with no numbers but exactly ``n`` lines is read in
    order."""
    answers: dict[int, str] = {}
    plain: list[str] = []
    for line in reply.splitlines():
        if not line.strip() or line.strip().startswith("```"):
            continue
        m = _NUMBERED.match(line)
        if m:
            answers.setdefault(int(m.group(1)), m.group(2))
        else:
            plain.append(line)
    if not answers and len(plain) == n:
        answers = dict(enumerate(plain, start=1))
    return [op.read(answers[k]) if k in answers else None for k in range(1, n + 1)]


# ---- running one operation -----------------------------------------------------------------------
@dataclass
class OperationResult:
    """An operation's values (aligned with its items) and what it took."""

    values: list[Any]
    calls: int = 0
    retried: int = 0  # distinct items asked again after the first pass
    failed: int = 0  # items that never got a usable answer
    errors: list[str] = field(default_factory=list)  # failed calls, as text (the first few)

    def note(self, fn: str) -> str:
        """What the REPL prints after the call ("" when every item was answered)."""
        if not self.failed:
            return ""
        gave = "False" if fn == "llm_filter" else "None"
        why = f" (last error: {self.errors[-1]})" if self.errors else ""
        return (
            f"[{fn}: {self.failed} of {len(self.values)} items got no usable answer, even when "
            f"asked again; they are {gave} in the result{why}]"
        )


async def run_operation(
    op: Operation,
    items: Sequence[str],
    ask: Ask,
    *,
    room_chars: int,
    max_items: int | None = None,
    fatal: tuple[type[BaseException], ...] = (),
    choose: Choose | None = None,
) -> OperationResult:
    """Answer every item: pack, ask concurrently, parse, retry what failed.

    With ``choose`` (a backend that picks one of given replies by their likelihood, as the
    embedded model does), a classification or filter asks one prompt per item instead: no
    reply to parse, nothing generated, and the items' prompts share all but the item itself.
    ``fatal`` exceptions (the budget running out) propagate; any other failed call only marks
    its items for a retry."""
    texts = [_item_text(str(item)) for item in items]
    unique = list(dict.fromkeys(texts))  # identical items are answered once
    values: dict[str, Any] = {}
    result = OperationResult(values=[])
    if choose is not None and op.choices():
        await _choose_each(op, unique, choose, values, result, fatal)
        result.failed = sum(1 for t in texts if t not in values)
        result.values = [values.get(t, op.failed()) for t in texts]
        return result
    limit = max(1, max_items or MAX_ITEMS[op.kind])
    room = max(room_chars - len(op.header()) - 200, 500)
    pending = unique
    asked_again: set[str] = set()
    for round_ in range(RETRY_ROUNDS + 1):
        if not pending:
            break
        if round_:
            asked_again.update(pending)
        single = round_ == RETRY_ROUNDS and round_ > 0
        size = 1 if single else max(1, limit >> round_)
        groups = [[pending[i] for i in g] for g in pack(pending, room, size)]
        jobs = [_ask_group(op, group, ask, single) for group in groups]
        pending = await _settle(groups, jobs, values, result, fatal)
    result.retried = len(asked_again)
    result.failed = sum(1 for t in texts if t not in values)
    result.values = [values.get(t, op.failed()) for t in texts]
    return result


async def _choose_each(
    op: Operation,
    texts: list[str],
    choose: Choose,
    values: dict[str, Any],
    result: OperationResult,
    fatal: tuple[type[BaseException], ...],
) -> None:
    choices = op.choices()
    pending = texts
    for round_ in range(2):  # a failed call is tried once more
        if not pending:
            return
        if round_:
            result.retried = len(pending)
        groups = [[t] for t in pending]
        jobs = [_choose_one(op, t, choose, choices) for t in pending]
        pending = await _settle(groups, jobs, values, result, fatal)


async def _settle(
    groups: list[list[str]],
    jobs: Sequence[Awaitable[list[Any]]],
    values: dict[str, Any],
    result: OperationResult,
    fatal: tuple[type[BaseException], ...],
) -> list[str]:
    """Run one round's calls concurrently (each answers one group of items); record the usable
    values and return the items to ask again. ``fatal`` exceptions propagate."""
    replies = await asyncio.gather(*jobs, return_exceptions=True)
    result.calls += len(groups)
    still: list[str] = []
    for group, reply in zip(groups, replies, strict=True):
        if isinstance(reply, BaseException):
            if isinstance(reply, fatal) or not isinstance(reply, Exception):
                raise reply
            result.errors = [*result.errors[-2:], f"{type(reply).__name__}: {reply}"]
            still.extend(group)
            continue
        for text, value in zip(group, reply, strict=True):
            if value is None:
                still.append(text)
            else:
                values[text] = value
    return still


async def _choose_one(
    op: Operation, text: str, choose: Choose, choices: tuple[str, ...]
) -> list[Any]:
    return [op.read(await choose(render_single(op, text), choices))]


async def _ask_group(op: Operation, group: list[str], ask: Ask, single: bool) -> list[Any]:
    if single:
        reply = await ask(render_single(op, group[0]), 16 + op.tokens_per_item())
        return [op.read(reply)]
    tokens = min(MAX_OUTPUT_TOKENS, 16 + op.tokens_per_item() * len(group))
    reply = await ask(render_pack(op, group), tokens)
    return parse_pack(op, reply, len(group))
