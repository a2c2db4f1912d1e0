"""System-prompt KV states on disk, so a new process skips evaluating a prompt it has seen.

Every run's root conversation starts with the same system prompt (about 500 tokens for the
strict profile: 7 s of prompt processing on two cores, a quarter of a short run). After a
process evaluates one, its KV state goes to ``<cache>/kv/<key>.kv`` (13 MB, written in about
50 ms); the next process loads it in about 15 ms instead. A file is used for the longest prefix
it shares with the new prompt, so a system prompt whose last line differs still reuses the rest.

Files are keyed by the model file (path, size, mtime), the llama.cpp build and the window, are
written under a temporary name and renamed, and a file llama.cpp refuses is deleted.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["MIN_PREFIX_TOKENS", "PrefixCache", "common_prefix"]

log = logging.getLogger("recursa.embedded")

MIN_PREFIX_TOKENS = 128  # shorter prefixes evaluate faster than a file round trip is worth
MAX_FILES = 8


class PrefixCache:
    """KV-state files of conversation prefixes for one model file and context size."""

    def __init__(self, folder: Path, model_path: Path, n_ctx: int, lib: Any) -> None:
        self.folder = folder
        self.lib = lib
        stat = model_path.stat()
        ident = f"{model_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{n_ctx}|"
        ident += getattr(lib, "__version__", "?")
        self.model_key = hashlib.sha256(ident.encode()).hexdigest()[:16]

    def _path(self, tokens: list[int]) -> Path:
        digest = hashlib.sha256(array.array("i", tokens).tobytes()).hexdigest()[:16]
        return self.folder / f"{self.model_key}-{digest}.kv"

    def _candidates(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob(f"{self.model_key}-*.kv"))

    @staticmethod
    def _tokens_of(path: Path) -> list[int]:
        side = path.with_suffix(".tokens")
        data = array.array("i")
        data.frombytes(side.read_bytes())
        return data.tolist()

    def best(self, prompt: list[int]) -> tuple[Path, int] | None:
        """The stored prefix sharing the most leading tokens with ``prompt`` (if long enough)."""
        found: tuple[Path, int] | None = None
        for path in self._candidates():
            try:
                stored = self._tokens_of(path)
            except OSError:
                continue
            n = common_prefix(stored, prompt)
            if n >= MIN_PREFIX_TOKENS and (found is None or n > found[1]):
                found = (path, n)
        return found

    def load(self, llama: Any, path: Path) -> int:
        """Load ``path`` into ``llama``'s (empty) context; the number of tokens it holds, or 0."""
        capacity = llama.n_ctx()
        out = (self.lib.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        ok = self.lib.llama_state_load_file(
            llama.ctx, str(path).encode(), out, capacity, ctypes.byref(count)
        )
        if not ok:
            log.info("dropping a prefix file llama.cpp refused: %s", path)
            llama.reset()
            for p in (path, path.with_suffix(".tokens")):
                p.unlink(missing_ok=True)
            return 0
        n = count.value
        # What the KV cache now holds; the next call keeps the part it shares with its prompt.
        llama.input_ids[:n] = out[:n]
        llama.n_tokens = n
        llama._requires_eval = True  # logits are not part of the file: re-evaluate one token
        return n

    def save(self, llama: Any, tokens: list[int]) -> None:
        """Store ``llama``'s state, which must hold exactly ``tokens``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        dest = self._path(tokens)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=dest.name, suffix=".tmp")
        os.close(fd)
        try:
            arr = (self.lib.llama_token * len(tokens))(*tokens)
            if not self.lib.llama_state_save_file(llama.ctx, tmp.encode(), arr, len(tokens)):
                return
            dest.with_suffix(".tokens").write_bytes(array.array("i", tokens).tobytes())
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._prune()

    def _prune(self) -> None:
        files = sorted(self._candidates(), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[MAX_FILES:]:
            for p in (old, old.with_suffix(".tokens")):
                p.unlink(missing_ok=True)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
