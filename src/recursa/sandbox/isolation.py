"""What a sandbox protects against on this machine, in words a user can act on.

Each worker reports the protections it put in force (the ``ready`` frame); this module turns
that list into the :meth:`Sandbox.isolation` report and into warnings for what is missing, and
gathers what every tier would offer here for ``recursa doctor``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from typing import Any

from recursa.sandbox.base import SandboxWarning

__all__ = ["describe", "missing_protections", "probe_tiers", "warn_once"]

RLIMIT_NAMES = ("address_space", "file_size", "open_files", "core")
_warned: set[str] = set()


def landlock_abi(protections: Iterable[str]) -> int:
    for p in protections:
        if p.startswith("landlock:"):
            return int(p.partition(":")[2] or 0)
    return 0


def missing_protections(protections: list[str], *, hardening: bool) -> list[str]:
    """Warnings for the protections a worker lacks on this machine (empty when it has all)."""
    if not hardening:
        return [
            "sandbox hardening is turned off (SandboxConfig(hardening=False)): model code runs "
            "with resource limits only and can read your files and use the network"
        ]
    if not sys.platform.startswith("linux"):
        return [
            f"only resource limits protect this machine ({sys.platform}): model code can read "
            "files your user can read, open network connections and start processes; use "
            "sandbox='docker' or sandbox='wasm' for untrusted input"
        ]
    out = []
    seccomp = "seccomp" in protections
    abi = landlock_abi(protections)
    if not seccomp:
        out.append(
            "seccomp is not available: model code can open sockets and start processes "
            "(a kernel without CONFIG_SECCOMP_FILTER or an unknown CPU architecture)"
        )
    if abi < 1:
        out.append(
            "Landlock is not available (Linux < 5.13, or 'landlock' missing from the lsm= "
            "boot list): model code can read every file your user can read"
        )
    elif abi < 4 and not seccomp:
        out.append(f"Landlock ABI {abi} cannot block TCP (needs 4): the network is open")
    elif abi < 6:
        out.append(
            f"Landlock ABI {abi} cannot scope signals and abstract unix sockets (needs 6); "
            + ("seccomp still blocks both" if seccomp else "they are open")
        )
    return out


def warn_once(messages: Iterable[str]) -> None:
    """Emit each message as a :class:`SandboxWarning`, once per process."""
    for msg in messages:
        if msg not in _warned:
            _warned.add(msg)
            warnings.warn(msg, SandboxWarning, stacklevel=3)


def thread_cap(protections: list[str], pids_cgroup: int | None) -> str:
    """What caps a process-tier worker's threads, in words (``recursa doctor``'s row)."""
    inner = next((p.partition(":")[2] for p in protections if p.startswith("thread-cap:")), "")
    if pids_cgroup is not None:
        return f"{pids_cgroup} (pids cgroup)"
    if "nproc" in protections:
        return f"{inner} (RLIMIT_NPROC)"
    if inner:
        return f"{inner} (in-worker only)"
    return "-"


def describe(
    tier: str,
    protections: list[str],
    *,
    hardening: bool,
    host_non_dumpable: bool,
    pids_cgroup: int | None = None,
    scratch_limit_mb: int | None = None,
) -> dict[str, Any]:
    """The isolation report of a worker-process tier from the protections it reported.

    ``thread_cap`` says what caps the worker's threads: a pids cgroup (kernel, also for root),
    RLIMIT_NPROC (kernel, not for root), or only the worker's own patched ``_thread``, which
    determined code can get around."""
    seccomp = "seccomp" in protections
    net_tcp = "landlock-net" in protections
    return {
        "tier": tier,
        "process": True,
        "scrubbed_env": True,
        "protections": list(protections),
        "rlimits": [p for p in protections if p in RLIMIT_NAMES],
        "seccomp": seccomp,
        "landlock_abi": landlock_abi(protections),
        "filesystem_confined": "landlock-fs" in protections,
        "network_blocked": seccomp,  # Landlock alone covers TCP, not UDP or unix sockets
        "tcp_blocked": seccomp or net_tcp,
        "processes_blocked": seccomp,
        "signals_scoped": seccomp or "landlock-scope" in protections,
        "host_non_dumpable": host_non_dumpable,
        "thread_cap": thread_cap(protections, pids_cgroup),
        "threads_capped_by_kernel": pids_cgroup is not None or "nproc" in protections,
        "scratch_limit_mb": scratch_limit_mb,
        "warnings": missing_protections(protections, hardening=hardening),
    }


def probe_tiers() -> dict[str, dict[str, Any]]:
    """What each tier offers on this machine, without starting anything heavy."""
    from recursa.sandbox import harden

    host = harden.probe()
    out: dict[str, dict[str, Any]] = {"process": {"available": True, **host}}
    try:
        from recursa.sandbox.pyodide import wasm_status

        out["wasm"] = wasm_status()
    except Exception as exc:  # a broken optional tier must not break the report
        out["wasm"] = {"available": False, "detail": f"{type(exc).__name__}: {exc}"}
    try:
        from recursa.sandbox.docker import docker_status

        out["docker"] = docker_status()
    except Exception as exc:
        out["docker"] = {"available": False, "detail": f"{type(exc).__name__}: {exc}"}
    return out
