"""The LM seam: one async method, ``complete(messages, settings) -> Completion``.

Backends own their transport, retries, timeouts and usage extraction. The engine only ever calls
:meth:`LM.complete` and :meth:`LM.aclose`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from recursa.types import Completion, LMSettings, Message

__all__ = ["LM", "BaseLM", "ProviderOptions", "retry_guard"]

#: Set by whoever makes a call (a run's LM gate) around one ``complete``. A backend calls it
#: before each retry it is about to send; it raises to forbid the retry (the run has no call,
#: or no time, left), and the backend lets that exception through. Unset: retries are free.
retry_guard: ContextVar[Callable[[], None] | None] = ContextVar("recursa_retry_guard", default=None)


@runtime_checkable
class LM(Protocol):
    """A language model. ``name`` is its ``provider:model`` string (used for prices and traces)."""

    name: str

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """What a provider factory may need besides the model name.

    ``None`` fields mean "use the provider's default, possibly from its environment variable";
    only the registry reads the environment.
    """

    base_url: str | None = None
    api_key: str | None = None
    timeout_s: float | None = None
    max_retries: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class BaseLM:
    """Convenience base: a name, a no-op ``aclose`` and a readable ``repr``.

    A backend may also set ``recommended_chunk_chars``: how many characters one sub-call
    prompt should carry (the engine tells the root model this figure when it plans chunks), and
    ``greedy_by_default`` (see below).
    """

    name: str = "base"
    recommended_chunk_chars: int | None = None
    # How much REPL output per turn the model reads comfortably (None: the engine's default).
    recommended_output_chars: int | None = None
    # True when the backend decodes greedily unless told otherwise, so a request without a
    # temperature has one fixed answer and may be served from the call cache.
    greedy_by_default: bool = False
    # The output cap a call gets when its settings name none (None: no cap of its own). Token
    # and cost budgets reserve it as the call's worst case.
    default_max_output_tokens: int | None = None

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
