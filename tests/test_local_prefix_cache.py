"""Choosing and pruning stored system-prompt states (no model needed)."""

from __future__ import annotations

import array
import os
import time
from types import SimpleNamespace

from recursa.embedded import prefix_cache
from recursa.embedded.prefix_cache import MAX_FILES, MIN_PREFIX_TOKENS, PrefixCache


def _store(cache: PrefixCache, tokens: list[int]):
    path = cache._path(tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"state")
    path.with_suffix(".tokens").write_bytes(array.array("i", tokens).tobytes())
    return path


def _cache(tmp_path, n_ctx: int = 4096) -> PrefixCache:
    model = tmp_path / "m.gguf"
    if not model.exists():
        model.write_bytes(b"GGUF")
    return PrefixCache(tmp_path / "kv", model, n_ctx, SimpleNamespace(__version__="0.3.36"))


def test_the_longest_shared_prefix_wins(tmp_path):
    cache = _cache(tmp_path)
    base = list(range(MIN_PREFIX_TOKENS + 50))
    short = _store(cache, base[: MIN_PREFIX_TOKENS + 10])
    longer = _store(cache, [*base, 7, 7])  # shares all of base, then differs from the prompt
    assert cache.best([*base, 1, 2, 3]) == (longer, len(base))
    assert cache.best(base[: MIN_PREFIX_TOKENS + 20]) == (longer, MIN_PREFIX_TOKENS + 20)
    assert short.exists()


def test_too_short_a_match_is_not_worth_a_file(tmp_path):
    cache = _cache(tmp_path)
    _store(cache, list(range(MIN_PREFIX_TOKENS + 5)))
    assert cache.best([*range(MIN_PREFIX_TOKENS - 1), -1]) is None
    assert cache.best([]) is None


def test_files_of_another_model_or_window_are_ignored(tmp_path):
    tokens = list(range(300))
    _store(_cache(tmp_path, n_ctx=4096), tokens)
    assert _cache(tmp_path, n_ctx=8192).best(tokens) is None
    assert _cache(tmp_path, n_ctx=4096).best(tokens) is not None


def test_old_files_are_pruned(tmp_path):
    cache = _cache(tmp_path)
    paths = []
    for i in range(MAX_FILES + 3):
        p = _store(cache, [i, *range(200)])
        past = time.time() - 1000 + i
        os.utime(p, (past, past))
        paths.append(p)
    cache._prune()
    kept = sorted(cache._candidates())
    assert kept == sorted(paths[-MAX_FILES:])
    assert not paths[0].with_suffix(".tokens").exists()


def test_common_prefix():
    assert prefix_cache.common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert prefix_cache.common_prefix([], [1]) == 0
