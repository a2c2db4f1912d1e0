"""Where recursa keeps files on disk. Read at the edges only; every path can be overridden.

- cache (model weights, call cache): ``$RECURSA_CACHE_DIR``, else ``$XDG_CACHE_HOME/recursa``,
  else ``~/.cache/recursa``.
- data (run journals, traces of past runs): ``$RECURSA_DATA_DIR``, else
  ``$XDG_DATA_HOME/recursa``, else ``~/.local/share/recursa``.

Journals, traces, stored summaries and the call cache hold prompts, contexts and answers, so
folders recursa creates for them are private to the user (0700) and so are the files (0600):
:func:`private_dir`, :func:`private_file`, :func:`open_private`, :func:`write_private`.
Folders that already exist keep their mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "cache_dir",
    "data_dir",
    "open_private",
    "private_dir",
    "private_file",
    "write_private",
]

DIR_MODE = 0o700
FILE_MODE = 0o600


def _base(env: Mapping[str, str], own: str, xdg: str, fallback: str) -> Path:
    if env.get(own):
        return Path(env[own]).expanduser()
    if env.get(xdg):
        return Path(env[xdg]).expanduser() / "recursa"
    return Path.home() / fallback / "recursa"


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Folder for re-creatable files (model weights, the call cache)."""
    return _base(
        os.environ if env is None else env, "RECURSA_CACHE_DIR", "XDG_CACHE_HOME", ".cache"
    )


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """Folder for files worth keeping (run journals)."""
    return _base(
        os.environ if env is None else env, "RECURSA_DATA_DIR", "XDG_DATA_HOME", ".local/share"
    )


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and any missing parents as folders only this user can open (0700).

    ``Path.mkdir(mode=..., parents=True)`` gives the parents the default mode instead, which
    would leave a fresh ``~/.local/share/recursa`` readable by everyone.
    """
    path = Path(path)
    missing: list[Path] = []
    here = path
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it first
            pass
    return path


def private_file(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` exists; create it empty and private (0600) if it does not.

    For files other code opens afterwards (SQLite gives its ``-wal``/``-shm`` files the mode
    of the database file)."""
    path = Path(path)
    private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    return path


def open_private(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for writing, creating the file private (0600) if it is new."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    private_dir(Path(path).parent)
    return open(path, mode, opener=lambda p, _: os.open(p, flags, FILE_MODE), **kwargs)


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path``, which ends up private (0600) even if it existed."""
    with open_private(path, "wb") as f:
        os.fchmod(f.fileno(), FILE_MODE)
        f.write(data)
