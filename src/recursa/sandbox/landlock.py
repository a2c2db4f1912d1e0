"""Landlock rules for the sandbox worker, from ``ctypes`` alone (Linux 5.13+).

Standard library only, loadable from a file path (see ``harden.py``). Landlock lets an
unprivileged process give up access rights for itself and its future children; the kernel then
denies, with EACCES, every handled action not allowed by a rule. Unlike ``chroot`` or DAC it
binds root too, and it is stackable and irreversible.

The three system calls have the same numbers on every architecture (they were added after
the syscall tables were unified): ``landlock_create_ruleset`` 444, ``landlock_add_rule`` 445,
``landlock_restrict_self`` 446.

What each ABI level adds, and what we use it for:

- ABI 1 (5.13): file-system rights (read, write, list, create, remove, execute...). We handle
  all of them, so the worker may only read the folders given as ``read`` (the Python install,
  the run's ``inputs/``) and write only under ``write`` (the run's ``scratch/``). Everything
  else (``~/.ssh``, ``~/.aws``, the project's ``.env``, ``/proc/<pid>/environ``) is denied.
  Landlock also blocks ptrace of any process outside the sandbox from ABI 1 on.
- ABI 2 (5.19): ``REFER`` (link/rename across folders); handled, allowed inside scratch.
- ABI 3 (6.2): ``TRUNCATE``; handled, allowed inside scratch and on ``/dev/null``.
- ABI 4 (6.7): TCP ``bind`` and ``connect``; handled with no rule, so both are denied.
- ABI 5 (6.10): ``IOCTL_DEV`` (ioctls on device files); handled, never allowed.
- ABI 6 (6.12): scopes. ``SIGNAL``: no signals to processes outside the sandbox.
  ``ABSTRACT_UNIX_SOCKET``: no connecting to abstract unix sockets made outside it.
- ABI 7 (6.15): audit-logging flags only; nothing more to restrict.

Rules only ever grant: a right that is handled and granted by no rule is denied. Rules on a
regular file may only carry file rights (EINVAL otherwise), hence the split below.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable

__all__ = ["abi_version", "restrict"]

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1

# File-system access rights (<linux/landlock.h>), with the ABI that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

# Rights that make sense on a regular file (the kernel rejects the others in a file rule).
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
READ_RIGHTS = FS_READ_FILE | FS_READ_DIR
# Inside scratch: read, write, create files/folders/symlinks, remove, rename, truncate.
# Not device nodes, fifos or sockets, and not execute.
WRITE_RIGHTS = (
    READ_RIGHTS
    | FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
)


class _RulesetAttr(ctypes.Structure):
    # struct landlock_ruleset_attr. Older kernels accept the larger struct as long as the
    # fields they do not know are zero, so the full size is always passed.
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    # struct landlock_path_beneath_attr { __u64 allowed_access; __s32 parent_fd; } __packed
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _syscall() -> Callable[..., int]:
    """libc's ``syscall(2)``, returning a C long (the new fd, or -1 with errno set)."""
    fn = ctypes.CDLL(None, use_errno=True).syscall
    fn.restype = ctypes.c_long
    return fn


def abi_version() -> int:
    """The highest Landlock ABI this kernel offers; 0 when Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    rc = _syscall()(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), CREATE_RULESET_VERSION)
    return max(0, int(rc))


def handled_fs(abi: int) -> int:
    """Every file-system right the given ABI knows about."""
    rights = (1 << 13) - 1  # ABI 1: bits 0..12
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} failed: {os.strerror(err)}")
    return rc


def _add_path_rule(syscall: Callable[..., int], ruleset: int, path: str, rights: int) -> bool:
    """Grant ``rights`` beneath ``path``; return False when the path does not exist."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if not os.path.isdir(path):
            rights &= FILE_RIGHTS
        attr = _PathBeneathAttr(rights, fd)
        _check(
            syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(attr), 0),
            f"landlock_add_rule({path})",
        )
    finally:
        os.close(fd)
    return True


def restrict(
    read: list[str], write: list[str], devices: dict[str, int] | None = None
) -> dict[str, bool | int]:
    """Restrict this thread (and its future children) to the given paths.

    ``read``: folders/files readable (and listable); ``write``: folders fully usable;
    ``devices``: extra per-file rights (``/dev/null`` read+write). Returns what was enforced:
    ``{"abi": n, "fs": True, "net": bool, "scope": bool}``. Raises ``OSError`` if Landlock is
    present but a step fails (a sandbox half set up must not run model code).
    """
    abi = abi_version()
    if abi < 1:
        raise OSError(errno.EOPNOTSUPP, "Landlock is not available on this kernel")
    fs = handled_fs(abi)
    attr = _RulesetAttr(fs, 0, 0)
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP  # no rule: all TCP denied
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    syscall = _syscall()
    ruleset = _check(
        syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0),
        "landlock_create_ruleset",
    )
    try:
        for path in read:
            _add_path_rule(syscall, ruleset, path, READ_RIGHTS & fs)
        for path in write:
            _add_path_rule(syscall, ruleset, path, WRITE_RIGHTS & fs)
        for path, rights in (devices or {}).items():
            _add_path_rule(syscall, ruleset, path, rights & fs)
        _check(syscall(SYS_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return {"abi": abi, "fs": True, "net": abi >= 4, "scope": abi >= 6}
