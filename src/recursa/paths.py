"""Where recursa keeps files on disk. Read at the edges only; every path can be overridden.

- cache (model weights, call cache): ``$RECURSA_CACHE_DIR``, else ``$XDG_CACHE_HOME/recursa``,
  else ``~/.cache/recursa``.
- data (run journals, traces of past runs): ``$RECURSA_DATA_DIR``, else
  ``$XDG_DATA_HOME/recursa``, else ``~/.local/share/recursa``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["cache_dir", "data_dir"]


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
