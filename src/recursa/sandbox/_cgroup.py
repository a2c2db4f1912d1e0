"""A pids cgroup per sandbox, where the host may make one: the kernel's cap on a worker's threads.

RLIMIT_NPROC does not bind root, and seccomp cannot count, so for a root host (CI, containers)
the only kernel-enforced thread cap is the pids controller. The host makes a child group beside
its own (cgroup v1 ``/sys/fs/cgroup/pids/...`` or the v2 unified tree when ``pids`` is enabled
for its children), writes ``pids.max`` and moves each new worker in before sending it anything.
Where that is not allowed (no pids controller, no write access: the usual case for a non-root
user outside a delegated systemd scope) nothing happens and the caller falls back to
RLIMIT_NPROC and the in-worker cap.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from pathlib import Path

__all__ = ["PidsCgroup"]

_ROOT = Path("/sys/fs/cgroup")
_counter = itertools.count()
_parent: Path | bool | None = False  # False: not looked up yet


def _own_groups() -> list[tuple[str, str]]:
    """(controllers, path) for each line of /proc/self/cgroup."""
    out = []
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f:
                _id, controllers, path = line.rstrip("\n").split(":", 2)
                out.append((controllers, path))
    except (OSError, ValueError):
        pass
    return out


def _find_parent() -> Path | None:
    """The folder under which this process may make a pids group, or None."""
    if not sys.platform.startswith("linux"):
        return None
    groups = _own_groups()
    for controllers, path in groups:  # cgroup v1: a hierarchy with the pids controller
        if "pids" in controllers.split(","):
            base = _ROOT / "pids" / path.lstrip("/")
            if (base / "cgroup.procs").exists() and os.access(base, os.W_OK):
                return base
    for controllers, path in groups:  # cgroup v2: pids enabled for this group's children
        if controllers == "":
            base = _ROOT / path.lstrip("/")
            try:
                enabled = (base / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "pids" in enabled and os.access(base, os.W_OK):
                return base
    return None


def _sweep(parent: Path) -> None:
    """Remove the empty groups of hosts that are gone (killed before their shutdown)."""
    with contextlib.suppress(OSError):
        for child in parent.iterdir():
            owner = child.name.split("-")
            if len(owner) != 3 or owner[0] != "recursa" or not owner[1].isdigit():
                continue
            if int(owner[1]) != os.getpid() and not Path(f"/proc/{owner[1]}").exists():
                with contextlib.suppress(OSError):
                    child.rmdir()  # fails, harmlessly, while anything still runs in it


def _parent_dir() -> Path | None:
    global _parent
    if _parent is False:
        _parent = _find_parent()
        if _parent is not None:
            _sweep(_parent)
    return _parent  # type: ignore[return-value]


class PidsCgroup:
    """One group with ``pids.max = limit``; workers are moved in with :meth:`add`."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit

    @classmethod
    def create(cls, limit: int) -> PidsCgroup | None:
        parent = _parent_dir()
        if parent is None:
            return None
        path = parent / f"recursa-{os.getpid()}-{next(_counter)}"
        try:
            path.mkdir()
        except OSError:
            return None
        try:
            (path / "pids.max").write_text(f"{limit}\n")
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            return None
        return cls(path, limit)

    def add(self, pid: int) -> bool:
        """Move ``pid`` (its whole thread group) into the group."""
        try:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")
            return True
        except OSError:
            return False

    def remove(self) -> None:
        """Delete the group (it must be empty: call after the worker was reaped)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()
