"""``ScriptedLM``: a deterministic model for tests, examples and offline demos.

It replays a script and records every call (``calls``) and the reply it gave to each
(``replies_given``), so tests observe the fake instead of patching it. When the calls and the
script disagree (more calls than replies, no rule matching a prompt, an ``expect`` pattern not
found) it fails loudly with :class:`~recursa.errors.ScriptMismatch` instead of inventing an
answer.

Two ways to script, which can be combined:

- ``replies``: answered in order, one per call (root turns are naturally ordered).
- ``rules``: ``(pattern, reply)`` pairs; the first pattern found (``re.search``) in the last
  user message wins. Use rules for sub-calls, whose order in a concurrent batch is not fixed.

A reply is a string or a function of the messages returning one. Token usage is estimated
(four characters per token) so budgets and cost accounting can be tested.

From the command line, ``--model scripted:FILE`` loads a JSON file of the form
``{"replies": [...], "rules": [{"match": "regex", "reply": "..."}], "default": "..."}``
(a bare JSON list is taken as ``replies``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from recursa.errors import ConfigError, ScriptMismatch
from recursa.limits import approx_tokens
from recursa.lm.base import BaseLM, Capabilities
from recursa.types import Completion, LMSettings, Message, Usage

__all__ = ["ScriptedLM", "Step"]

Reply = str | Callable[[Sequence[Message]], str]


@dataclass(frozen=True, slots=True)
class Step:
    """A reply that also asserts something about the prompt it answers."""

    reply: Reply
    expect: str | None = None  # a regex that must be found in the last user message


def _last_user(messages: Sequence[Message]) -> str:
    for m in reversed(messages):
        if m.role == "user":
            return m.content
    return ""


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


class ScriptedLM(BaseLM):
    """A model that answers from a script. See the module docstring."""

    capabilities = Capabilities(greedy_by_default=True)  # the same script, the same answers

    def __init__(
        self,
        replies: Iterable[Reply | Step] | Reply | None = None,
        *,
        rules: Iterable[tuple[str | re.Pattern[str], Reply]] = (),
        default: Reply | None = None,
        name: str = "scripted",
        latency_s: float = 0.0,
    ) -> None:
        if callable(replies) or isinstance(replies, str):
            # A single function (or string) answers every call.
            default, replies = replies, None
        self._replies: list[Step] = [r if isinstance(r, Step) else Step(r) for r in (replies or [])]
        self._rules = [(re.compile(p) if isinstance(p, str) else p, r) for p, r in rules]
        self._default = default
        self.name = name if name.startswith("scripted") else f"scripted:{name}"
        self.latency_s = latency_s
        self.calls: list[list[Message]] = []
        # The settings each call was made with, index for index with ``calls`` (LMSettings()
        # when none were given): tests check what a run asked of its models.
        self.call_settings: list[LMSettings] = []
        # The reply to each call, index for index with ``calls``: None while a call waits out
        # ``latency_s``, and for one that got no reply (ScriptMismatch, a reply function that
        # raised, a cancelled call).
        self.replies_given: list[str | None] = []
        self._next = 0

    @property
    def remaining(self) -> int:
        """Ordered replies not yet used."""
        return len(self._replies) - self._next

    @property
    def prompts(self) -> list[str]:
        """The last user message of every call so far, in call order."""
        return [_last_user(c) for c in self.calls]

    def _choose(self, messages: Sequence[Message]) -> str:
        prompt = _last_user(messages)
        for pattern, reply in self._rules:
            if pattern.search(prompt):
                return reply(messages) if callable(reply) else reply
        if self._next < len(self._replies):
            step = self._replies[self._next]
            self._next += 1
            if step.expect is not None and not re.search(step.expect, prompt):
                raise ScriptMismatch(
                    f"{self.name}: call {len(self.calls)} expected a prompt matching "
                    f"{step.expect!r}, got: {_short(prompt)!r}"
                )
            return step.reply(messages) if callable(step.reply) else step.reply
        if self._default is not None:
            return self._default(messages) if callable(self._default) else self._default
        raise ScriptMismatch(
            f"{self.name}: the script has {len(self._replies)} replies and no rule or default "
            f"for call {len(self.calls)}; its prompt was: {_short(prompt)!r}"
        )

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        index = len(self.calls)
        self.calls.append(list(messages))
        self.call_settings.append(settings or LMSettings())
        self.replies_given.append(None)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        text = self._choose(messages)
        self.replies_given[index] = text
        usage = Usage(
            input_tokens=approx_tokens(sum(len(m.content) for m in messages)),
            output_tokens=approx_tokens(len(text)),
            calls=1,
        )
        return Completion(text=text, usage=usage, model=self.name, finish_reason="stop")

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedLM:
        """Load a script from JSON (see the module docstring for the format)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read script {p}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"script {p} is not valid JSON: {exc}") from exc
        if isinstance(data, list):
            data = {"replies": data}
        if not isinstance(data, dict):
            raise ConfigError(f"script {p}: expected a list of replies or an object")
        replies = data.get("replies", [])
        rules = data.get("rules", [])
        if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
            raise ConfigError(f"script {p}: 'replies' must be a list of strings")
        try:
            pairs = [(re.compile(str(r["match"])), str(r["reply"])) for r in rules]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"script {p}: each rule needs 'match' and 'reply'") from exc
        except re.error as exc:
            raise ConfigError(
                f"script {p}: a rule's 'match' is not a valid regular expression: {exc}"
            ) from exc
        try:
            latency_s = float(data.get("latency_s", 0.0))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"script {p}: 'latency_s' must be a number of seconds") from exc
        default = data.get("default")
        return cls(
            replies,
            rules=pairs,
            default=None if default is None else str(default),
            name=f"scripted:{p.stem}",
            latency_s=latency_s,
        )
