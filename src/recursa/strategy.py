"""How a run answers: the RLM loop, or one plain call with the whole context in the prompt.

On short inputs an RLM is slower than the plain model and often no better (a reproduction of
the RLM paper measured it worse there), so a run may take another route:

- ``rlm`` (the default): the REPL loop of :mod:`recursa.engine`;
- ``direct``: one call to the root model, the context (rendered as text, see
  :func:`render_context`) and then the question in the user message, under a short system
  prompt (``prompts/direct_system.md``). A context too long for the model's declared window
  is cut in the middle to fit, and the result says how much was cut;
- ``auto``: ``direct`` when the whole prompt fits the root model's window with room to spare,
  else ``rlm`` (:func:`choose_strategy`, a pure function of sizes; the threshold is
  :data:`AUTO_DIRECT_FRACTION`).

The direct call goes through the run's LM gate, so the budget, journal, call cache and trace
see it exactly as they see an RLM's calls, and its trace has the same root ``run`` span.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from recursa.errors import ConfigError, LimitExceeded, RecursaError
from recursa.types import Message, Result, StopReason

if TYPE_CHECKING:
    from recursa.context import Context
    from recursa.engine import Tree
    from recursa.lm.base import LM

__all__ = [
    "AUTO_DIRECT_FRACTION",
    "CHARS_PER_TOKEN_ESTIMATE",
    "DEFAULT_ANSWER_TOKENS",
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "Strategy",
    "answer_directly",
    "answer_room",
    "check_strategy",
    "choose_strategy",
    "direct_messages",
    "direct_system_prompt",
    "fit_middle",
    "max_context_chars",
    "plan",
    "render_context",
    "rendered_chars",
]

Strategy = Literal["auto", "rlm", "direct"]
STRATEGIES: tuple[Strategy, ...] = ("auto", "rlm", "direct")
DEFAULT_STRATEGY: Strategy = "rlm"

#: ``auto`` answers directly when the prompt and the answer's room take at most this share of
#: the root model's window. Measured with the embedded 1.5B model (16K window; benchmarks/
#: RESULTS.md): at 8K tokens, where the context fills 50-75% of the window, ``direct`` scored
#: no worse than ``rlm`` on S-NIAH (1.00 both) and better on OOLONG (0.44 against 0.25 on the
#: same four tasks); beyond the window ``direct`` must cut the context and ``rlm`` wins. The
#: last quarter is room for an estimate that runs short (dense lines of short words take
#: fewer than 3 characters a token).
AUTO_DIRECT_FRACTION = 0.75
#: A conservative estimate for choosing and cutting: three characters a token (most text and
#: code have more, so a prompt estimated to fit does fit). The budget uses four (an average).
CHARS_PER_TOKEN_ESTIMATE = 3
#: Room for the answer when the root settings name no output cap.
DEFAULT_ANSWER_TOKENS = 1024

_QUESTION_LEAD = "\n\nQuestion: "  # between the context and the question in the user message


# ---- choosing --------------------------------------------------------------------------------


def check_strategy(value: str, what: str = "strategy") -> Strategy:
    """``value`` as a :data:`Strategy`; a :class:`ConfigError` naming the choices otherwise."""
    name = str(value).strip().lower()
    if name not in STRATEGIES:
        raise ConfigError(f"unknown {what} {value!r}: choose one of {', '.join(STRATEGIES)}")
    return name


def direct_system_prompt() -> str:
    """The system prompt of a direct answer (``prompts/direct_system.md``)."""
    from recursa.prompts import render

    return render("direct_system")


def _overhead_chars() -> int:
    """What a direct prompt holds besides the context and the question."""
    return len(direct_system_prompt()) + len(_QUESTION_LEAD)


def _estimate(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN_ESTIMATE)


def choose_strategy(
    strategy: str,
    context_chars: int,
    question_chars: int,
    window: int | None,
    answer_tokens: int,
) -> tuple[Strategy, str]:
    """The strategy a run takes, and why, in words (a pure function of sizes).

    ``rlm`` and ``direct`` are taken as asked. ``auto`` takes ``direct`` when
    ``ceil((context_chars + question_chars + system prompt) / 3) + answer_tokens`` is at most
    :data:`AUTO_DIRECT_FRACTION` of ``window`` (the root model's context window in tokens),
    and ``rlm`` otherwise or when the model declares no window (``window`` is ``None``).
    """
    name = check_strategy(strategy)
    if name != "auto":
        return name, f"asked for {name}"
    if window is None or window <= 0:
        return "rlm", "auto chose rlm: the model declares no context window to fit a prompt in"
    need = _estimate(context_chars + question_chars + _overhead_chars()) + max(0, answer_tokens)
    limit = int(AUTO_DIRECT_FRACTION * window)
    need_text = f"about {need:,} tokens (at {CHARS_PER_TOKEN_ESTIMATE} characters a token)"
    limit_text = f"{limit:,} ({AUTO_DIRECT_FRACTION:g} of the model's {window:,}-token window)"
    if need <= limit:
        return "direct", (
            f"auto chose direct: prompt and answer need {need_text}, within {limit_text}"
        )
    return "rlm", (
        f"auto chose rlm: the context is too long to answer directly: prompt and answer need "
        f"{need_text}, more than {limit_text}"
    )


def answer_room(max_output_tokens: int | None) -> int:
    """Tokens kept for the answer: the root settings' output cap, else
    :data:`DEFAULT_ANSWER_TOKENS`."""
    return max_output_tokens or DEFAULT_ANSWER_TOKENS


def plan(
    strategy: str,
    question: str,
    context: Context,
    lm: LM,
    max_output_tokens: int | None,
    window: int | None = None,
) -> tuple[Strategy, str]:
    """:func:`choose_strategy` for one run: its question, context, root model and output cap.
    ``window`` (``RunConfig.root_window``) overrides the window the model declares."""
    return choose_strategy(
        strategy,
        rendered_chars(context),
        len(question),
        window or lm.capabilities.context_window,
        answer_room(max_output_tokens),
    )


# ---- the context as text -----------------------------------------------------------------------


def _sections(
    value: Any, label: str | None, labels: tuple[str, ...] = ()
) -> Iterator[tuple[str | None, str]]:
    """``(name, text)`` for each text of ``value``; names join nested labels with ``/``."""
    if isinstance(value, str):
        yield label, value
        return
    items: list[tuple[str, Any]]
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(labels[i] if i < len(labels) else str(i), v) for i, v in enumerate(value)]
    else:
        yield label, str(value)
        return
    for name, item in items:
        yield from _sections(item, name if label is None else f"{label}/{name}")


def _context_sections(context: Context) -> list[tuple[str | None, str]]:
    labels = tuple(label for label, _ in context.parts)
    return list(_sections(context.value, None, labels))


def _header(name: str | None) -> str:
    return "" if name is None else f"=== {name} ===\n"


_SEPARATOR = "\n\n"


def render_context(context: Context) -> str:
    """The context as one text: a string as it is; each part of a list or dict (a folder's
    files) under a ``=== name ===`` line, as the benchmark's baselines show collections."""
    return _SEPARATOR.join(_header(name) + text for name, text in _context_sections(context))


def rendered_chars(context: Context) -> int:
    """``len(render_context(context))``, without building the text."""
    sections = _context_sections(context)
    body = sum(len(_header(name)) + len(text) for name, text in sections)
    return body + len(_SEPARATOR) * max(0, len(sections) - 1)


def _cut_middle(text: str, max_chars: int) -> tuple[str, int]:
    """``text`` cut in the middle to about ``max_chars``, and how many characters were cut."""
    if len(text) <= max_chars:
        return text, 0
    marker = "\n\n[... {n:,} characters cut here to fit the model's context window ...]\n\n"
    keep = max(0, max_chars - len(marker) - 12)
    head = text[: keep // 2]
    tail = text[len(text) - (keep - len(head)) :] if keep > len(head) else ""
    cut = len(text) - len(head) - len(tail)
    return head + marker.format(n=cut) + tail, cut


def fit_middle(text: str, max_chars: int) -> tuple[str, bool]:
    """``text`` cut in the middle to ``max_chars`` (beginning and end kept, as LongBench does),
    with a marker saying how much was cut; and whether anything was."""
    body, cut = _cut_middle(text, max_chars)
    return body, cut > 0


def max_context_chars(window: int, question_chars: int, answer_tokens: int) -> int:
    """The longest context a direct prompt may carry in a ``window``-token model, by the same
    conservative estimate :func:`choose_strategy` uses."""
    room = (window - max(0, answer_tokens)) * CHARS_PER_TOKEN_ESTIMATE
    return max(0, room - question_chars - _overhead_chars())


def direct_messages(question: str, context_text: str) -> list[Message]:
    """The direct prompt: the system prompt, then the context and the question."""
    return [
        Message.system(direct_system_prompt()),
        Message.user(f"{context_text}{_QUESTION_LEAD}{question}"),
    ]


# ---- answering directly ------------------------------------------------------------------------


async def answer_directly(
    tree: Tree,
    question: str,
    context: Context,
    *,
    reason: str = "asked for direct",
    lm: LM | None = None,
) -> Result:
    """Answer ``question`` with one call to ``lm`` (default: the tree's root model), the whole
    context in the prompt; iterations are 0 and a complete answer's stop reason is ``FINAL``.

    The call goes through ``tree.gate`` (budget, journal, call cache, trace). A budget that
    cannot pay for it gives a partial result with the limit's stop reason (or raises
    :class:`~recursa.errors.LimitExceeded` under ``raise_on_limit``), as an RLM run does.
    """
    from recursa.gate import clip
    from recursa.limits import BudgetExhausted, UsageMeter

    lm = lm or tree.root_lm
    settings = replace(tree.config.root_settings, expect_code=False)
    text = render_context(context)
    window = tree.config.root_window or lm.capabilities.context_window
    if window is not None and window > 0:
        limit = max_context_chars(window, len(question), answer_room(settings.max_output_tokens))
        text, cut = _cut_middle(text, limit)
        if cut:
            tree.warnings.append(
                f"direct: the context ({rendered_chars(context):,} characters) does not fit "
                f"{lm.name}'s {window:,}-token window: {cut:,} characters were cut from its "
                "middle (use --strategy rlm to read all of it)"
            )
    messages = direct_messages(question, text)
    tracer = tree.tracer
    span = tracer.start(
        "run",
        "direct",
        None,
        question=clip(question, 4000),
        depth=0,
        model=lm.name,
        sub_model=tree.sub_lm.name,
        context={
            "kind": context.kind,
            "chars": context.total_chars,
            "parts": len(context.parts),
        },
        warnings=[*context.warnings, *tree.warnings],
        strategy="direct",
        strategy_reason=reason,
    )
    meter = UsageMeter()
    answer, stop, detail = "", StopReason.ERROR, ""
    failure: RecursaError | None = None
    try:
        completion = await tree.gate.complete(
            lm, messages, settings, role="root", depth=0, parent=span, meter=meter
        )
        answer, stop = completion.text.strip(), StopReason.FINAL
    except BudgetExhausted as exc:
        stop, detail = exc.reason, f"{exc.detail}; no answer: the direct call was not made"
    except asyncio.CancelledError:
        stop, detail = StopReason.CANCELLED, "cancelled"
        raise
    except RecursaError as exc:
        stop, detail, failure = StopReason.ERROR, str(exc), exc
    finally:
        tracer.end(
            span,
            error=detail if stop in (StopReason.ERROR, StopReason.CANCELLED) else None,
            answer=clip(answer, 20_000),
            stop_reason=stop.value,
            detail=detail,
            iterations=0,
            usage=meter.usage.to_dict(),
        )
    ledger = tree.ledger
    result = Result(
        answer=answer,
        stop_reason=stop,
        iterations=0,
        usage=ledger.usage,
        usage_by_model=dict(ledger.by_model),
        usage_by_depth=dict(ledger.by_depth),
        wall_time_s=span.duration_s or 0.0,
        run_id=tree.run_id,
        detail=detail,
        spans=tuple(tracer.finished),
        warnings=tuple(tree.warnings),
        cache_hits=ledger.cache_hits,
        saved_usd=ledger.saved_usd,
        replayed_calls=ledger.replayed,
        retries=ledger.retries,
        strategy="direct",
        strategy_reason=reason,
    )
    if failure is not None:
        failure.result = result  # nothing is lost
        raise failure
    if stop is not StopReason.FINAL and tree.config.limits.raise_on_limit:
        raise LimitExceeded(stop, result, detail)
    return result
