"""Language-model backends behind one protocol, and the registry that builds them."""

from recursa.lm.base import LM, BaseLM, Capabilities, ProviderOptions
from recursa.lm.registry import (
    available_providers,
    parse_model,
    register_provider,
    resolve_model,
)
from recursa.lm.retry import RetryPolicy
from recursa.lm.scripted import ScriptedLM, Step

__all__ = [
    "LM",
    "BaseLM",
    "Capabilities",
    "ProviderOptions",
    "RetryPolicy",
    "ScriptedLM",
    "Step",
    "available_providers",
    "parse_model",
    "register_provider",
    "resolve_model",
]
