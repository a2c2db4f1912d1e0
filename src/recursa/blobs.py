"""A content-addressed store: bytes kept once under their SHA-256, shared by every run.

The run journal keeps here what it cannot find again later (a context passed in memory, or a
file that changed while the run went on); runs over the same context share one copy. Blobs live
in ``<data_dir>/blobs/<first two hex digits>/<digest>``, private to the user (folders 0700,
files 0600: they hold whole contexts), each written to a temporary file and renamed into place,
so a reader never sees half a blob and a kill leaves at most a stray ``.tmp`` file.

Bytes are taken and written in chunks, hashed as they pass: a 100 MB context is never copied
whole. SHA-256 rather than BLAKE2b because CPUs with SHA extensions (most x86 since 2017, Apple
and ARMv8 chips) hash it about twice as fast. Blobs are stored uncompressed by default: zlib at
level 1 costs about 1 s of CPU per 100 MB of text here, more than the rest of the journal does
(see benchmarks/journal_context.py); ``compress=True`` trades that time for a third of the disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from recursa.errors import JournalError
from recursa.paths import FILE_MODE, data_dir, private_dir

__all__ = ["BlobStore", "blobs_dir"]

_MAGIC = b"RCB1"  # then one byte: the codec
_RAW, _ZLIB = b"0", b"z"
_CHUNK = 1 << 20
_DIGEST = re.compile(r"[0-9a-f]{64}")


def blobs_dir(root: Path | None = None) -> Path:
    """Where blobs go: ``blobs/`` beside ``runs/`` in the data folder (or ``root``)."""
    return (root or data_dir()) / "blobs"


class BlobStore:
    """Blobs under one folder, by the SHA-256 of their content."""

    def __init__(self, folder: Path, *, compress: bool = False) -> None:
        self.folder = folder
        self.compress = compress

    def path(self, digest: str) -> Path:
        # Digests come from journals on disk: anything but 64 hex digits could name another file.
        if not _DIGEST.fullmatch(digest):
            raise JournalError(f"{digest!r:.80} is not a blob digest; the journal is damaged")
        return self.folder / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put(self, chunks: Iterable[bytes]) -> str:
        """Store the concatenation of ``chunks`` (unless a blob with that content is there) and
        return its digest. Raises ``OSError`` when the disk refuses."""
        private_dir(self.folder)
        digest = hashlib.sha256()
        tmp = self.folder / f".{os.getpid()}-{id(digest):x}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + (_ZLIB if self.compress else _RAW))
                packer = zlib.compressobj(1) if self.compress else None
                for chunk in chunks:
                    digest.update(chunk)
                    f.write(packer.compress(chunk) if packer else chunk)
                if packer:
                    f.write(packer.flush())
            name = digest.hexdigest()
            final = self.path(name)
            if final.is_file():  # already stored (by an earlier run over the same context)
                tmp.unlink()
            else:
                private_dir(final.parent)
                os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return name

    def chunks(self, digest: str) -> Iterator[bytes]:
        """The blob's content, in chunks, checked against its digest at the end: a
        :class:`JournalError` if it is missing or damaged."""
        path = self.path(digest)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, after the generator is drained
        except FileNotFoundError:
            raise JournalError(
                f"blob {digest[:12]} is missing from {self.folder}: it was removed by hand"
            ) from None
        with f:
            head = f.read(len(_MAGIC) + 1)
            if head[:4] != _MAGIC or head[4:] not in (_RAW, _ZLIB):
                raise JournalError(f"blob {path} is not a recursa blob; remove it")
            unpacker = zlib.decompressobj() if head[4:] == _ZLIB else None
            check = hashlib.sha256()
            try:
                while block := f.read(_CHUNK):
                    data = unpacker.decompress(block) if unpacker else block
                    check.update(data)
                    yield data
                if unpacker:
                    tail = unpacker.flush()
                    check.update(tail)
                    yield tail
            except zlib.error as exc:
                raise JournalError(f"blob {path} is damaged ({exc}); remove it") from None
        if check.hexdigest() != digest:
            raise JournalError(f"blob {path} is damaged (its content changed); remove it")

    def get(self, digest: str) -> bytes:
        """The whole blob (see :meth:`chunks`)."""
        return b"".join(self.chunks(digest))

    def remove(self, digests: Iterable[str]) -> int:
        """Remove these blobs (those present); how many were removed."""
        removed = 0
        for digest in digests:
            try:
                self.path(digest).unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed
