"""recursa: Recursive Language Models.

A long input never enters the model's prompt: it lives as ``context`` in a sandboxed Python
REPL; the model writes code to inspect and chunk it and calls language models on the pieces
until it returns ``FINAL(answer)``.

>>> from recursa import RLM, Limits
>>> rlm = RLM(model="openai:gpt-5-mini", limits=Limits(max_cost_usd=0.50))  # doctest: +SKIP
>>> rlm.run("Which clients hit the rate limit most often?", Path("logs/")).answer  # doctest: +SKIP
"""

from recursa.batch import batch
from recursa.cache import CallCache
from recursa.config import RunConfig
from recursa.context import Context, load_context
from recursa.errors import (
    ConfigError,
    ContextError,
    JournalError,
    LimitExceeded,
    LMError,
    MissingAPIKeyError,
    MissingDependencyError,
    RecursaError,
    SandboxError,
    ScriptMismatch,
    TraceError,
    UnknownProviderError,
)
from recursa.limits import Limits
from recursa.lm import (
    LM,
    BaseLM,
    Capabilities,
    ProviderOptions,
    ScriptedLM,
    Step,
    register_provider,
    resolve_model,
)
from recursa.pricing import ModelPrice, PriceTable
from recursa.rlm import RLM
from recursa.sampling import Sampling
from recursa.sandbox import ProcessSandbox, SandboxConfig
from recursa.session import AsyncSession, Session, resume_session
from recursa.tools import Tool, ToolSet, load_tools
from recursa.trace.spans import Span, TraceProcessor, Tracer
from recursa.types import CellResult, Completion, LMSettings, Message, Result, StopReason, Usage

__version__ = "0.1.0"

__all__ = [
    "LM",
    "RLM",
    "AsyncSession",
    "BaseLM",
    "CallCache",
    "Capabilities",
    "CellResult",
    "Completion",
    "ConfigError",
    "Context",
    "ContextError",
    "JournalError",
    "LMError",
    "LMSettings",
    "LimitExceeded",
    "Limits",
    "Message",
    "MissingAPIKeyError",
    "MissingDependencyError",
    "ModelPrice",
    "PriceTable",
    "ProcessSandbox",
    "ProviderOptions",
    "RecursaError",
    "Result",
    "RunConfig",
    "Sampling",
    "SandboxConfig",
    "SandboxError",
    "ScriptMismatch",
    "ScriptedLM",
    "Session",
    "Span",
    "Step",
    "StopReason",
    "Tool",
    "ToolSet",
    "TraceError",
    "TraceProcessor",
    "Tracer",
    "UnknownProviderError",
    "Usage",
    "__version__",
    "batch",
    "load_context",
    "load_tools",
    "register_provider",
    "resolve_model",
    "resume_session",
]
