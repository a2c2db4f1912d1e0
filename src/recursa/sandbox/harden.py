"""OS-level protections for the sandbox worker, and the host's own (Linux).

Standard library only. The worker loads this file by path (``hardening.module`` in the init
frame, see ``worker._apply_hardening``) and calls :func:`apply` once, before any model code
runs; the host imports it normally for :func:`protect_host` and :func:`probe`.

:func:`apply` runs, in this order, in a single-threaded worker:

1. ``PR_SET_NO_NEW_PRIVS``: required by Landlock and seccomp for unprivileged callers, and it
   stops setuid programs from gaining privileges.
2. Landlock (``landlock.py``): reads only the Python installation, the shared libraries, the
   run's ``inputs/`` and a few device files; writes only the run's ``scratch/``; no TCP;
   signals and abstract unix sockets scoped to the sandbox (at the ABI the kernel offers).
3. Capabilities: a worker running as root drops all of them (``capset``), so it cannot raise
   its own hard limits or priority, override file permissions, or make device nodes.
4. seccomp (``seccomp.py``): a default-deny allow-list; no sockets, no new processes, no exec,
   no ptrace, no io_uring, no namespaces or mounts, nothing aimed at another process (signals,
   limits, priorities, scheduling), no ``prctl`` that would undo the steps above.

Landlock goes first because seccomp would otherwise have to allow its three system calls.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from types import ModuleType

# This module runs inside every worker: `typing` would cost each worker start ~5 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["apply", "probe", "protect_host", "python_paths"]

_HERE = os.path.dirname(os.path.abspath(__file__))
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# Shared libraries that extension modules load lazily (ctypes -> libffi, ssl -> libssl).
# Code already mapped keeps working; these are for imports made after the rules apply.
_LIB_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
# Harmless system files some stdlib modules read: the loader cache, time zones.
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo")


def _sibling(name: str) -> ModuleType:
    """Import ``name``.py from this folder by path (this module itself may be path-loaded)."""
    spec = importlib.util.spec_from_file_location(
        f"_recursa_{name}", os.path.join(_HERE, name + ".py")
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name}.py beside {__file__}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _mapped_lib_dirs() -> set[str]:
    """Folders of the shared objects this process has mapped (from /proc/self/maps)."""
    found: set[str] = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.rstrip("\n").partition("/")[2]
                if path and ".so" in path:
                    found.add(os.path.dirname("/" + path))
    except OSError:
        pass
    return found


def python_paths() -> list[str]:
    """What the interpreter needs to read: its prefixes, stdlib, site-packages and libraries.

    ``sys.path`` entries outside these (editable installs' source trees, the current folder)
    are left out on purpose: they are usually a project checkout, with its ``.env`` beside it.
    """
    # From sys alone: importing sysconfig would cost more than the rest of the hardening.
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.add(os.path.dirname(os.__file__))  # the standard library
    roots.add(os.path.dirname(sys.executable))
    roots.update(p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p))
    roots.update(p for p in sys.path if p and os.path.basename(p) == "lib-dynload")
    roots.update(_LIB_DIRS)
    roots.update(_SYSTEM_FILES)
    roots.update(_mapped_lib_dirs())
    paths: set[str] = set()
    for p in roots:
        if p and os.path.exists(p):
            paths.add(p)
            paths.add(os.path.realpath(p))  # rules follow the real file, not the symlink
    return sorted(paths)


def _safe(paths: list[str], protect: list[str]) -> list[str]:
    """Drop any allowed path that would expose a protected one (a prefix of $HOME or of the
    project folder, e.g. a Python installed under ``/home`` or ``/``)."""
    keep = []
    for p in paths:
        real = os.path.realpath(p)
        if any(_is_within(os.path.realpath(q), real) for q in protect if q):
            continue
        keep.append(p)
    return keep


def _thread_count() -> int:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return threading.active_count()


def _no_new_privs() -> None:
    c_ulong = ctypes.c_ulong
    if _libc().prctl(PR_SET_NO_NEW_PRIVS, c_ulong(1), c_ulong(0), c_ulong(0), c_ulong(0)):
        err = ctypes.get_errno()
        raise OSError(err, f"PR_SET_NO_NEW_PRIVS failed: {os.strerror(err)}")


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _drop_capabilities() -> bool:
    """Clear the effective, permitted and inheritable capability sets (ambient ones go with
    them). Nothing can bring them back: exec is denied and no-new-privs is set. Returns whether
    the worker had any to drop."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    libc = _libc()
    if libc.capget(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget failed: {os.strerror(err)}")
    if not any(d.effective or d.permitted or d.inheritable for d in data):
        return False
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    if libc.capset(ctypes.byref(header), (_CapData * 2)()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"dropping capabilities failed: {os.strerror(err)}")
    return True


def _landlock(options: dict[str, Any], landlock: ModuleType) -> list[str]:
    fs_rw = landlock.FS_READ_FILE | landlock.FS_WRITE_FILE | landlock.FS_TRUNCATE
    devices = {
        "/dev/null": fs_rw,
        "/dev/zero": landlock.FS_READ_FILE,
        "/dev/urandom": landlock.FS_READ_FILE,
        "/dev/random": landlock.FS_READ_FILE,
    }
    protect = list(options.get("protect") or [])
    read = _safe(python_paths(), protect) + list(options.get("read") or [])
    write = list(options.get("write") or [])
    done = landlock.restrict(read, write, devices)
    names = [f"landlock:{done['abi']}", "landlock-fs"]
    if done["net"]:
        names.append("landlock-net")
    if done["scope"]:
        names.append("landlock-scope")
    return names


def apply(options: dict[str, Any]) -> list[str]:
    """Harden the calling worker; return the names of the protections now in force.

    A mechanism the kernel lacks is skipped (the host warns about it); a mechanism that is
    present but fails raises, so that a half-configured worker never runs model code.
    """
    if not sys.platform.startswith("linux"):
        return []
    if _thread_count() != 1:
        raise RuntimeError("hardening needs a single-threaded worker (rules bind one thread)")
    landlock, seccomp = _sibling("landlock"), _sibling("seccomp")
    _no_new_privs()
    applied = ["no-new-privs"]
    if options.get("landlock", True) and landlock.abi_version() >= 1:
        applied += _landlock(options, landlock)
    if _drop_capabilities():
        applied.append("capabilities-dropped")
    if options.get("seccomp", True) and seccomp.supported():
        seccomp.install()
        applied.append("seccomp")
    return applied


def protect_host() -> bool:
    """Mark the calling (host) process non-dumpable; return whether it worked.

    With ``PR_SET_DUMPABLE`` at 0 the kernel makes ``/proc/<host>/*`` owned by root and refuses
    ptrace-style access (``/proc/<host>/mem``, ``environ``, ``process_vm_readv``) to processes
    without CAP_SYS_PTRACE, so a worker that escaped its own rules still cannot read the
    host's memory or environment (its API keys). Side effects, all on the host process: no core
    dumps, debuggers and profilers (gdb, py-spy) need root to attach, and non-root code can no
    longer read some of its own ``/proc/self`` files.
    """
    if not sys.platform.startswith("linux"):
        return False
    c_ulong = ctypes.c_ulong
    rc: int = _libc().prctl(PR_SET_DUMPABLE, c_ulong(0), c_ulong(0), c_ulong(0), c_ulong(0))
    return rc == 0


def probe() -> dict[str, Any]:
    """What this machine offers, without changing anything: ``{"platform", "seccomp",
    "landlock_abi", "rlimits", "no_new_privs"}``."""
    info: dict[str, Any] = {"platform": sys.platform, "seccomp": False, "landlock_abi": 0}
    try:
        import resource  # noqa: F401

        info["rlimits"] = True
    except ImportError:
        info["rlimits"] = False
    if sys.platform.startswith("linux"):
        info["seccomp"] = bool(_sibling("seccomp").supported())
        info["landlock_abi"] = int(_sibling("landlock").abi_version())
    return info
