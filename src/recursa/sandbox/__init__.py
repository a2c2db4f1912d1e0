"""Where model-written code runs. See :mod:`recursa.sandbox.base` for the seam.

Tiers are looked up by name with :func:`sandbox_factory`; stronger tiers register themselves
with :func:`register_tier`.
"""

from __future__ import annotations

from collections.abc import Callable

from recursa.errors import ConfigError
from recursa.sandbox.base import CallHandler, CallRefused, Sandbox, SandboxConfig, SandboxWarning
from recursa.sandbox.process import ProcessSandbox

__all__ = [
    "CallHandler",
    "CallRefused",
    "ProcessSandbox",
    "Sandbox",
    "SandboxConfig",
    "SandboxWarning",
    "available_tiers",
    "register_tier",
    "sandbox_factory",
]

SandboxFactory = Callable[[SandboxConfig, CallHandler], Sandbox]

# name -> "module:attribute" of a sandbox class, imported only when used.
_TIERS: dict[str, str] = {
    "process": "recursa.sandbox.process:ProcessSandbox",
    "wasm": "recursa.sandbox.wasm:WasmSandbox",
    "docker": "recursa.sandbox.docker:DockerSandbox",
}
# Tiers that run model code inside the host process: allowed only with trusted=True.
_IN_PROCESS = {"inprocess": "recursa.sandbox.inprocess:InProcessSandbox"}


def register_tier(name: str, target: str) -> None:
    """Make ``sandbox=name`` resolve to ``target`` ("module:ClassName")."""
    _TIERS[name] = target


def available_tiers() -> list[str]:
    return sorted(_TIERS)


def _load(target: str) -> SandboxFactory:
    import importlib

    module, _, attr = target.partition(":")
    factory: SandboxFactory = getattr(importlib.import_module(module), attr)
    return factory


def sandbox_factory(name: str, *, trusted: bool = False) -> SandboxFactory:
    """The factory for tier ``name``. ``trusted=True`` selects the in-process tier."""
    if trusted:
        return _load(_IN_PROCESS["inprocess"])
    if name in _IN_PROCESS:
        raise ConfigError(
            f"sandbox={name!r} runs model-written code inside your process; "
            "pass trusted=True if that is really what you want"
        )
    target = _TIERS.get(name)
    if target is None:
        raise ConfigError(
            f"unknown sandbox {name!r}; choose one of: {', '.join(available_tiers())}"
        )
    return _load(target)
