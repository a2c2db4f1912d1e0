"""Importing an optional package that reads a setting from the environment only while it loads.

Some packages offer no other way to give such a setting: LiteLLM fetches its model-cost map
from the network while ``import litellm`` runs unless ``LITELLM_LOCAL_MODEL_COST_MAP`` is set,
and libgomp (loaded with llama.cpp's libraries) reads ``OMP_WAIT_POLICY`` once, when it is
loaded. :func:`import_with_env` sets such variables for the import alone: when it returns,
``os.environ`` is as it was, so the library never changes its user's environment (nor what
their child processes inherit). A variable the user set is left as it is and wins.

Other threads may see the variables while the import runs (the environment is one per process).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from types import ModuleType

__all__ = ["import_with_env"]


def import_with_env(module: str, env: Mapping[str, str]) -> ModuleType:
    """``import module`` with each of ``env`` that is unset set for the import only.

    A module imported before (by the user, say) is returned as it is: it read its settings then.
    Raises ``ImportError`` (``ModuleNotFoundError``) as ``import`` does.
    """
    loaded = sys.modules.get(module)
    if loaded is not None:
        return loaded
    added = {name: value for name, value in env.items() if name not in os.environ}
    os.environ.update(added)
    try:
        return importlib.import_module(module)
    finally:
        for name in added:
            os.environ.pop(name, None)
