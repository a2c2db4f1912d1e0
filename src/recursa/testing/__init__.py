"""Test helpers that ship with recursa, so you can test your own code the way recursa is tested.

- :class:`FakeLLMServer`: a fake OpenAI/Anthropic-compatible HTTP server on loopback, with
  scripted replies, latency and injected failures (:class:`Fault`); also runnable as
  ``python -m recursa.testing.fake_server``.
- :class:`~recursa.lm.scripted.ScriptedLM` and :class:`~recursa.lm.scripted.Step`: a scripted
  model that needs no server at all.

Names are imported on first use: running ``python -m recursa.testing.fake_server`` must not
import that module twice (once through this package, once as ``__main__``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recursa.lm.scripted import ScriptedLM, Step
    from recursa.testing._server import FakeLLMServer
    from recursa.testing._wire import Fault, RecordedRequest

__all__ = ["FakeLLMServer", "Fault", "RecordedRequest", "ScriptedLM", "Step"]

_WHERE = {
    "FakeLLMServer": "recursa.testing._server",
    "Fault": "recursa.testing._wire",
    "RecordedRequest": "recursa.testing._wire",
    "ScriptedLM": "recursa.lm.scripted",
    "Step": "recursa.lm.scripted",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'recursa.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
