"""The folders an MCP client may ask about, and loading paths inside them safely.

A path is resolved (``..`` collapsed, every symlink followed) before it is checked, so neither
``root/../etc`` nor a link inside a root that points elsewhere gets out. Relative paths are
taken from the first root.

Inside a folder, :func:`~recursa.context.load_context` skips links leading out of the folder and
anything that is not a regular file (FIFOs, sockets, devices), naming them in its warnings.
Sizes are checked before anything is read: a file over ``max_file_bytes`` is refused (skipped
inside a folder), and all files of one request together may hold ``max_context_bytes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from recursa.context import (
    DEFAULT_MAX_CONTEXT_BYTES,
    DEFAULT_MAX_FILE_BYTES,
    Context,
    load_context,
)
from recursa.errors import ConfigError, ContextError
from recursa.server.errors import PathNotAllowed

__all__ = ["Roots"]


class Roots:
    """The allowed folders, resolved once at start."""

    def __init__(
        self,
        folders: Sequence[str | Path],
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
    ) -> None:
        if max_file_bytes < 1 or max_context_bytes < 1:
            raise ConfigError("--max-file-mb and --max-context-mb must be positive")
        self.max_file_bytes = max_file_bytes
        self.max_context_bytes = max_context_bytes
        if not folders:
            raise ConfigError("give at least one root folder (--root DIR)")
        resolved = []
        for folder in folders:
            path = Path(folder).expanduser()
            if not path.is_dir():
                raise ConfigError(f"root {folder} is not a folder")
            resolved.append(path.resolve())
        self.folders: tuple[Path, ...] = tuple(resolved)

    def __contains__(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.folders)

    def resolve(self, raw: str) -> Path:
        """The real path of ``raw``, which must exist inside a root."""
        if not raw or not raw.strip():
            raise ContextError("an empty path was given")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.folders[0] / path
        try:
            real = path.resolve(strict=True)
        except FileNotFoundError:
            raise ContextError(f"no such file or folder: {raw}") from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise ContextError(f"cannot resolve {raw}: {exc}") from None
        if real not in self:
            raise PathNotAllowed(
                f"{raw} is outside the folders this server may read "
                f"({', '.join(map(str, self.folders))}); start it with --root to allow more",
                param="paths",
            )
        return real

    def load(self, raws: Sequence[str]) -> Context:
        """Load the given paths (each checked) as one context; several make a list context.

        Inside a folder, :func:`~recursa.context.load_context` itself skips links that lead out
        of the folder and anything that is not a regular file, so nothing outside the roots and
        nothing that would hang (a FIFO, /dev/zero) is read.
        """
        paths = [self.resolve(raw) for raw in raws]
        for path in paths:
            if not path.is_dir() and not path.is_file():
                raise ContextError(f"{path} is not a regular file or folder")
        return load_context(
            *paths, max_file_bytes=self.max_file_bytes, max_context_bytes=self.max_context_bytes
        )
