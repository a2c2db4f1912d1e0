"""The default sandbox: a separate worker process per run.

The worker is ``python -I worker.py`` (isolated mode: no user site, no PYTHON* variables, no
script directory on ``sys.path``) started in its own session, so the whole process group can be
killed at once. It gets a scrubbed environment (no API keys), a private scratch folder as its
working and home directory, and resource limits (address space, file size, open files, no core
dumps) that it applies to itself before running any model code. On Linux it then applies
Landlock rules and a seccomp filter to itself (``harden.py``): it can read only the Python
installation and its inputs, write only its scratch folder, and open no socket, start no
process and signal no one else. The host marks itself non-dumpable so that nothing can read its
memory or environment through ``/proc``. Threads are capped (``SandboxConfig.max_pids``) by a
pids cgroup where the host can make one, by RLIMIT_NPROC for a worker that is not root, and
inside the worker; ``scratch/`` is capped in total size and entries (``_host.py``). What is in
force is reported by :meth:`isolation`, and what is missing is said in a
:class:`~recursa.sandbox.base.SandboxWarning` at start.

The host reads every frame through one reader task. A frame that arrives while no request is
outstanding (for example from a thread the model left running after its cell returned), an
oversized frame or a malformed one gets the worker killed; the next cell runs in a fresh one.

This module is named ``process`` rather than the design's ``subprocess`` to keep it from
shadowing the standard library module of that name in tracebacks and imports.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from recursa.sandbox import isolation
from recursa.sandbox._cgroup import PidsCgroup
from recursa.sandbox._host import WorkerHost

__all__ = ["HARDEN_PATH", "WORKER_PATH", "ProcessSandbox", "host_is_protected"]

WORKER_PATH = Path(__file__).with_name("worker.py")
HARDEN_PATH = Path(__file__).with_name("harden.py")
_host_protected = False


def _protect_host() -> bool:
    """Make the host non-dumpable once per process (see ``harden.protect_host``)."""
    global _host_protected
    if not _host_protected:
        from recursa.sandbox import harden

        _host_protected = harden.protect_host()
    return _host_protected


def host_is_protected() -> bool:
    """Whether this process has made itself non-dumpable (see ``harden.protect_host``)."""
    return _host_protected


class ProcessSandbox(WorkerHost):
    """Runs model code in a separate, resource-limited, hardened worker process."""

    tier = "process"
    scratch_on_host = True
    cpu_readable = True
    uses_pids_cgroup = True  # False in tiers whose worker is not the Python process itself
    _pids_cgroup: PidsCgroup | None = None
    _pids_cgroup_tried = False

    async def start(self) -> None:
        if self.config.protect_host:
            _protect_host()
        await super().start()

    async def _spawned(self, pid: int) -> None:
        """Move the new worker into this sandbox's pids cgroup (made at the first spawn)."""
        if not self.uses_pids_cgroup or not self.config.max_pids:
            return
        if not self._pids_cgroup_tried:
            self._pids_cgroup_tried = True
            self._pids_cgroup = await asyncio.to_thread(PidsCgroup.create, self.config.max_pids)
        group = self._pids_cgroup
        # In a thread: moving a task between cgroups waits for an RCU grace period (ms).
        if group is not None and not await asyncio.to_thread(group.add, pid):
            self._pids_cgroup = None  # the group went away: say so in isolation()

    async def _released(self) -> None:
        if self._pids_cgroup is not None:
            self._pids_cgroup.remove()
            self._pids_cgroup = None
            self._pids_cgroup_tried = False

    def _worker_env(self) -> dict[str, str]:
        scratch = str(self.scratch)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": scratch,
            "TMPDIR": scratch,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }
        env.update(self.config.env)
        return env

    def _rlimits(self) -> dict[str, int]:
        cfg = self.config
        limits: dict[str, int] = {"core": 0}
        if cfg.memory_limit_mb:
            limits["address_space"] = cfg.memory_limit_mb * 1024 * 1024
        if cfg.file_size_limit_mb:
            limits["file_size"] = cfg.file_size_limit_mb * 1024 * 1024
        if cfg.max_open_files:
            limits["open_files"] = cfg.max_open_files
        return limits

    def _init_message(self) -> dict[str, Any]:
        """The first frame; stronger tiers extend ``hardening``."""
        return {
            "type": "init",
            "scratch": str(self.scratch),
            "rlimits": self._rlimits(),
            "max_output_chars": self.config.max_captured_chars,
            "hardening": self._hardening_options(),
            "max_threads": self.config.max_pids,
            # RLIMIT_NPROC counts the user's processes machine-wide: only where the worker
            # shares the host's view of them (not in a container, whose --pids-limit caps it).
            "thread_nproc": self.uses_pids_cgroup,
            # The worker runs in its own session, so a host killed with SIGKILL would leave it
            # behind; it asks the kernel to kill it when this process goes away.
            "host_pid": os.getpid(),
            # The worker builds llm_query & co. from the host's one table of functions.
            "functions": self.config.functions.wire(),
        }

    def _hardening_options(self) -> dict[str, Any]:
        """What ``harden.apply`` gets in the worker: read-only ``inputs/``, read-write
        ``scratch/``, and folders that must stay unreadable even if the Python installation
        lives beneath them (the user's home, the current project)."""
        if not self.config.hardening or not sys.platform.startswith("linux"):
            return {}
        assert self._root is not None
        return {
            "module": str(HARDEN_PATH),
            "read": [str(self._root / "inputs")],
            "write": [str(self.scratch)],
            "protect": [str(Path.home()), os.getcwd()],
        }

    def _command(self) -> list[str]:
        return [self.config.python or sys.executable, "-I", str(WORKER_PATH)]

    def isolation(self) -> dict[str, Any]:
        """What this worker is protected by (as it reported at start) and what is missing."""
        return isolation.describe(
            self.tier,
            self.protections,
            hardening=self.config.hardening,
            host_non_dumpable=_host_protected,
            pids_cgroup=self._pids_cgroup.limit if self._pids_cgroup is not None else None,
            scratch_limit_mb=self.config.scratch_limit_mb,
        )
