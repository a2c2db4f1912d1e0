"""The run folder on the host's disk: how big the worker made it, and removing it.

Both walks are iterative (no recursion limit however deep the worker nested its folders),
work on directory file descriptors (no path grows past ``PATH_MAX``; a symlink is never
followed, so nothing outside the folder is counted or touched), and keep at most
``MAX_DEPTH`` descriptors open.

:func:`remove_tree` never raises. It makes folders the worker locked (``chmod 000``,
read-only) writable again, and moves subtrees nested deeper than ``MAX_DEPTH`` up to the top
of the tree before going on, so that any tree, however deep, comes down with a bounded number of
open descriptors. It is meant for a folder whose worker is gone; run while one still writes, it
removes what it can and reports what is left.
"""

from __future__ import annotations

import itertools
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_DEPTH", "Usage", "empty_dir", "remove_tree", "usage"]

MAX_DEPTH = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
_OWNER_ALL = stat.S_IRWXU


@dataclass(slots=True)
class Usage:
    """What a folder holds: bytes on disk (allocated blocks), entries, and whether the walk
    stopped early (past a limit, too deep, or a folder it could not open)."""

    bytes: int = 0
    entries: int = 0
    depth: int = 0
    unreadable: int = 0
    stopped: bool = False


def _open_dir(name: str, dir_fd: int | None, *, fix: bool) -> int:
    """Open a folder without following a symlink; with ``fix``, make a locked one readable."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        if not fix:
            raise
        os.chmod(name, _OWNER_ALL, dir_fd=dir_fd)  # only ever called on a real folder
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _blocks(st: os.stat_result) -> int:
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def usage(path: Path, *, max_bytes: int | None = None, max_entries: int | None = None) -> Usage:
    """Bytes and entries under ``path`` (folders included), for a folder a worker may still be
    writing to. Stops as soon as a limit is passed and marks ``stopped``; so does a folder
    nested past ``MAX_DEPTH`` or one it cannot open (``unreadable``): either could hide
    anything. It changes nothing (a live worker could swap a folder for a symlink between a
    check and a ``chmod``)."""
    out = Usage()
    try:
        fd = _open_dir(str(path), None, fix=False)
    except OSError:
        out.unreadable, out.stopped = 1, True
        return out
    stack: list[tuple[int, list[str]]] = []
    try:
        while fd >= 0:
            subdirs: list[str] = []
            with os.scandir(fd) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # gone meanwhile
                    out.bytes += _blocks(st)
                    out.entries += 1
                    if stat.S_ISDIR(st.st_mode):
                        subdirs.append(entry.name)
            if (max_bytes is not None and out.bytes > max_bytes) or (
                max_entries is not None and out.entries > max_entries
            ):
                out.stopped = True
                return out
            stack.append((fd, subdirs))
            fd = -1
            out.depth = max(out.depth, len(stack))
            while stack:
                parent_fd, pending = stack[-1]
                if not pending:
                    os.close(parent_fd)
                    stack.pop()
                    continue
                if len(stack) >= MAX_DEPTH:
                    out.stopped = True
                    return out
                try:
                    fd = _open_dir(pending.pop(), parent_fd, fix=False)
                    break
                except FileNotFoundError:
                    continue
                except OSError:
                    out.unreadable += 1
                    out.stopped = True
                    return out
        return out
    finally:
        if fd >= 0:
            os.close(fd)
        for open_fd, _ in stack:
            os.close(open_fd)


def _unlink(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except PermissionError:
        os.chmod(dir_fd, _OWNER_ALL)  # a read-only folder: its entries cannot be removed
        os.unlink(name, dir_fd=dir_fd)


def _empty_fd(top: int) -> None:
    """Remove everything inside the open folder ``top`` (see the module docstring)."""
    tag = secrets.token_hex(4)
    hoisted = itertools.count()
    retries = 0
    # Each level: (its fd, its name in the parent, subfolders still to remove).
    stack: list[tuple[int, str, list[str]]] = []
    fd, name = top, ""
    try:
        while True:
            if fd >= 0:
                subdirs: list[str] = []
                with os.scandir(fd) as it:
                    entries = list(it)
                for entry in entries:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if is_dir:
                        subdirs.append(entry.name)
                    else:
                        _unlink(entry.name, fd)
                if subdirs and len(stack) + 1 >= MAX_DEPTH:
                    # Too deep to hold a descriptor per level: move these subtrees to the top,
                    # whose next round removes them with a short stack.
                    for sub in subdirs:
                        new = f".recursa-deep-{tag}-{next(hoisted)}"
                        os.rename(sub, new, src_dir_fd=fd, dst_dir_fd=top)
                    subdirs = []
                stack.append((fd, name, subdirs))
                fd = -1
            cur_fd, cur_name, pending = stack[-1]
            if pending:
                name = pending.pop()
                try:
                    fd = _open_dir(name, cur_fd, fix=True)
                except FileNotFoundError:
                    fd = -1
                continue
            stack.pop()
            if not stack:  # back at the top: another round if hoisted subtrees wait there
                with os.scandir(top) as it:
                    if next(it, None) is None:
                        return
                retries += 1
                if retries > 100_000:
                    raise OSError(f"{top}: the folder keeps refilling")
                fd, name = top, ""
                continue
            os.close(cur_fd)
            parent_fd = stack[-1][0]
            try:
                os.rmdir(cur_name, dir_fd=parent_fd)
            except FileNotFoundError:
                pass
            except OSError:
                retries += 1
                if retries > 100_000:
                    raise
                os.chmod(parent_fd, _OWNER_ALL)  # a read-only parent; or refilled: look again
                stack[-1][2].append(cur_name)
    finally:
        if fd >= 0 and fd != top:
            os.close(fd)
        for open_fd, _, _ in stack:
            if open_fd != top:
                os.close(open_fd)


def empty_dir(path: Path) -> str | None:
    """Remove everything inside ``path``, keeping the folder. Never raises: returns ``None``
    when it is empty, else why not."""
    try:
        top = _open_dir(str(path), None, fix=True)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot open {path}: {exc}"
    try:
        for _attempt in range(3):
            try:
                _empty_fd(top)
                return None
            except OSError as exc:
                last = exc
        return f"could not empty {path}: {last}"
    except Exception as exc:  # never into the run
        return f"could not empty {path}: {type(exc).__name__}: {exc}"
    finally:
        os.close(top)


def remove_tree(path: Path) -> str | None:
    """Remove ``path`` and everything under it. Never raises: returns ``None`` on success (or
    when it was not there), else why some of it is left."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot look at {path}: {exc}"
    try:
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return None
    except OSError as exc:
        return f"cannot remove {path}: {exc}"
    why = empty_dir(path)
    if why is not None:
        return why
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"cannot remove {path}: {exc}"
    return None
