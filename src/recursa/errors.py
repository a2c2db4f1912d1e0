"""The error tree. Every error recursa raises on purpose is a :class:`RecursaError`.

::

    RecursaError
    ├── ConfigError              the caller asked for something that cannot work (CLI exit 2)
    │   ├── ContextError         the input could not be loaded (missing, unreadable, empty)
    │   ├── UnknownProviderError a "provider:model" string names no registered provider
    │   ├── MissingAPIKeyError   a backend needs a key that is not set
    │   ├── MissingDependencyError  an optional extra is not installed
    │   └── server.errors.RequestError  a server request is invalid (HTTP 400; subclasses for
    │                            404 model/run not found, 413 body too large, 403 path refused)
    ├── LMError                  a model call failed after retries
    │   ├── LMAuthError          401/403: the key is wrong or lacks access
    │   ├── LMRateLimitError     429 that did not clear within the retry budget
    │   ├── LMTimeoutError       no answer within the per-call timeout
    │   ├── LMConnectionError    the server could not be reached
    │   ├── LMRequestError       the server refused the request (4xx)
    │   ├── LMServerError        5xx that did not clear within the retry budget
    │   └── LMResponseError      the body could not be understood
    ├── SandboxError             the place where model code runs failed
    │   ├── SandboxStartError    the worker could not be started
    │   ├── SandboxCrashed       the worker died while running a cell (fatal, restartable)
    │   └── ProtocolError        the worker broke the frame protocol (it is killed)
    ├── LimitExceeded            a limit stopped the run (only raised when asked for)
    ├── ScriptMismatch           a ScriptedLM was called in a way its script did not expect
    ├── server.errors.ServerBusy every run slot is taken (HTTP 429)
    ├── TraceError               a trace file could not be read
    └── JournalError             a run journal is missing or damaged (other runs are unaffected)

Errors are matched by class, never by message text. Each message says what to do next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recursa.types import Result, StopReason

__all__ = [
    "ConfigError",
    "ContextError",
    "JournalError",
    "LMAuthError",
    "LMConnectionError",
    "LMError",
    "LMRateLimitError",
    "LMRequestError",
    "LMResponseError",
    "LMServerError",
    "LMTimeoutError",
    "LimitExceeded",
    "MissingAPIKeyError",
    "MissingDependencyError",
    "ProtocolError",
    "RecursaError",
    "SandboxCrashed",
    "SandboxError",
    "SandboxStartError",
    "ScriptMismatch",
    "TraceError",
    "UnknownProviderError",
]


class RecursaError(Exception):
    """Root of every error recursa raises on purpose.

    ``result`` is set when the error ended a run that had already done work: the
    :class:`~recursa.types.Result` with the best partial answer, usage and trace, so nothing
    is lost (``None`` for errors raised before or outside a run).
    """

    result: Result | None = None


class ConfigError(RecursaError):
    """The caller asked for something that cannot work; fix the arguments and retry."""


class ContextError(ConfigError):
    """The context could not be loaded: a missing file, an unreadable folder, an empty input."""


class UnknownProviderError(ConfigError):
    """A model string names a provider that is not registered."""


class MissingAPIKeyError(ConfigError):
    """A backend needs an API key that is not set."""

    def __init__(self, provider: str, env_var: str) -> None:
        self.provider = provider
        self.env_var = env_var
        super().__init__(
            f"no API key for {provider}: set {env_var} or pass --model local "
            "(the embedded model needs no key)"
        )


class MissingDependencyError(ConfigError):
    """An optional extra is needed for this feature and is not installed."""

    def __init__(self, feature: str, extra: str, module: str | None = None) -> None:
        self.feature = feature
        self.extra = extra
        self.module = module
        hint = f"pip install 'recursa[{extra}]'"
        super().__init__(f"{feature} needs the '{extra}' extra: {hint}")


class LMError(RecursaError):
    """A language-model call failed (after the retries the backend allows)."""

    def __init__(self, message: str, *, model: str | None = None, status: int | None = None):
        self.model = model
        self.status = status
        super().__init__(message)


class LMAuthError(LMError):
    """The server rejected the credentials (401/403)."""


class LMRateLimitError(LMError):
    """The server kept answering 429 until the retries ran out."""


class LMTimeoutError(LMError):
    """The call did not finish within its timeout."""


class LMConnectionError(LMError):
    """The server could not be reached."""


class LMRequestError(LMError):
    """The server refused the request as malformed or too large (4xx)."""


class LMServerError(LMError):
    """The server kept failing (5xx) until the retries ran out."""


class LMResponseError(LMError):
    """The response body could not be understood."""


class SandboxError(RecursaError):
    """The sandbox that runs model code failed."""


class SandboxStartError(SandboxError):
    """The sandbox worker could not be started."""


class SandboxCrashed(SandboxError):
    """The worker died (crash, kill, timeout). The REPL state is lost; a new worker is needed."""

    def __init__(self, message: str, *, reason: str = "crash", stderr_tail: str = "") -> None:
        self.reason = reason
        self.stderr_tail = stderr_tail
        super().__init__(message)


class ProtocolError(SandboxError):
    """The worker sent something the host does not accept; the worker is killed."""


class LimitExceeded(RecursaError):
    """A limit stopped the run. Raised only when ``Limits(raise_on_limit=True)``.

    ``result`` carries the best partial answer, usage and trace so no work is lost.
    """

    def __init__(self, stop_reason: StopReason, result: Result | None = None, detail: str = ""):
        self.stop_reason = stop_reason
        self.result: Result | None = result
        msg = f"run stopped: {stop_reason.value}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class ScriptMismatch(RecursaError):
    """A :class:`~recursa.lm.scripted.ScriptedLM` was called in a way its script does not cover."""


class TraceError(RecursaError):
    """A trace file is missing, malformed or of an unknown format version."""

    def __init__(self, message: str, *, path: Any = None) -> None:
        self.path = path
        super().__init__(message)


class JournalError(RecursaError):
    """A run journal is missing, damaged or of an unknown version. Other runs are unaffected."""
