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

__all__ = ["LM", "BaseLM", "Capabilities", "ProviderOptions", "retry_guard"]

#: Set by whoever makes a call (a run's LM gate) around one ``complete``. A backend calls it
#: before each retry it is about to send; it raises to forbid the retry (the run has no call,
#: or no time, left), and the backend lets that exception through. Unset: retries are free.
retry_guard: ContextVar[Callable[[], None] | None] = ContextVar("recursa_retry_guard", default=None)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend declares about itself, as data (``None``: no opinion, the engine's default).

    Attributes:
        chunk_chars: how many characters one sub-call prompt should carry; the root model is
            told this figure when it plans chunks (small local models read far less).
        output_chars: how much REPL output per turn the model reads comfortably.
        greedy_by_default: the backend decodes greedily unless told otherwise, so a request
            without a temperature has one fixed answer and may be served from the call cache.
        default_max_output_tokens: the output cap a call gets when its settings name none;
            token and cost budgets reserve it as the call's worst case.
        context_window: tokens the model can take in one prompt, where known.
        choices: the backend honours ``LMSettings.choices``: its reply is exactly one of the
            given choices, picked by the model's own probabilities, with nothing generated
            (the embedded model does; ``llm_classify`` and ``llm_filter`` then ask one short
            prompt per item instead of parsing packed replies).
    """

    chunk_chars: int | None = None
    output_chars: int | None = None
    greedy_by_default: bool = False
    default_max_output_tokens: int | None = None
    context_window: int | None = None
    choices: bool = False


@runtime_checkable
class LM(Protocol):
    """A language model. ``name`` is its ``provider:model`` string (used for prices and traces);
    ``capabilities`` declares what the engine may rely on (:class:`Capabilities`)."""

    name: str
    capabilities: Capabilities

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
    """Convenience base: a name, no declared capabilities, a no-op ``aclose`` and a readable
    ``repr``. A backend declares what it knows by setting ``capabilities`` (class or instance).
    """

    name: str = "base"
    capabilities: Capabilities = Capabilities()

    async def complete(
        self, messages: Sequence[Message], settings: LMSettings | None = None
    ) -> Completion:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
