"""The container tier (``sandbox="docker"``): the same worker inside a locked-down container.

The worker runs as ``nobody`` in a throwaway container with no network, a read-only root file
system, a private in-memory ``/scratch``, every capability dropped, ``no-new-privileges``,
and memory and process-count limits. Contexts are mounted read-only at ``/inputs``; the sandbox
package folder (``worker.py`` and the hardening modules) at ``/recursa``, so the worker also
applies its own Landlock and seccomp rules where the host kernel and Docker's profile allow.
Frames travel over the container's stdin/stdout, exactly as in the process tier.

What it adds over the process tier: a separate mount, PID, IPC and network namespace (so no
file, process or socket of the host is even visible), and kernel-enforced memory and pids
limits. What it does not: the kernel is shared, so a kernel exploit escapes it; and whoever can
talk to the Docker engine is root on the host, so the host side must be trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from recursa.errors import ConfigError
from recursa.sandbox._support import Loaded, within
from recursa.sandbox.base import CallHandler, SandboxConfig
from recursa.sandbox.process import ProcessSandbox

__all__ = ["DockerSandbox", "docker_command", "docker_status"]

SANDBOX_DIR = Path(__file__).parent
_IN_WORKER = "/recursa"
_IN_INPUTS = "/inputs"
_IN_SCRATCH = "/scratch"
# The docker client needs these to reach the engine; nothing else of the host's environment
# (API keys included) is handed to it, and the container gets none of it.
_CLIENT_ENV = (
    "PATH",
    "HOME",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "XDG_RUNTIME_DIR",
)


def docker_command(
    config: SandboxConfig, *, name: str, inputs: Path, docker: str = "docker"
) -> list[str]:
    """The ``docker run`` argv for one worker container."""
    argv = [
        docker,
        "run",
        "--rm",
        "--interactive",  # frames on stdin; no TTY, which would mangle binary frames
        "--name",
        name,
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        f"{_IN_SCRATCH}:rw,nosuid,nodev,noexec,size={config.file_size_limit_mb or 256}m,mode=1777",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,noexec,size=16m,mode=1777",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "65534:65534",
        "--pids-limit",
        str(config.max_pids),
        "--ipc",
        "none",
        "--workdir",
        _IN_SCRATCH,
        "--volume",
        f"{SANDBOX_DIR}:{_IN_WORKER}:ro",
        "--volume",
        f"{inputs}:{_IN_INPUTS}:ro",
    ]
    if config.memory_limit_mb:
        mem = f"{config.memory_limit_mb}m"
        argv += ["--memory", mem, "--memory-swap", mem]
    for key, value in {"HOME": _IN_SCRATCH, "TMPDIR": _IN_SCRATCH, "LANG": "C.UTF-8"}.items():
        argv += ["--env", f"{key}={value}"]
    for key, value in config.env.items():
        argv += ["--env", f"{key}={value}"]
    argv += [config.docker_image, "python3", "-I", f"{_IN_WORKER}/worker.py"]
    return argv


def docker_status(docker: str | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    """For ``recursa doctor`` and the tests: does a Docker engine answer here?"""
    docker = docker or shutil.which("docker")
    if docker is None:
        return {"available": False, "detail": "no docker client on PATH"}
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "client": docker, "detail": f"docker info: {exc}"}
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no answer"]
        return {"available": False, "client": docker, "detail": f"no engine: {detail[0]}"}
    return {"available": True, "client": docker, "engine": done.stdout.strip()}


_ENGINE_SEEN = False  # an engine answered once in this process: later starts skip the check


async def _require_engine() -> None:
    """A one-line :class:`ConfigError` (exit 2) naming the fix when no Docker engine answers,
    instead of the worker dying with the docker client's own two lines."""
    global _ENGINE_SEEN
    if _ENGINE_SEEN:
        return
    status = await asyncio.to_thread(docker_status)
    if not status["available"]:
        raise ConfigError(
            f"sandbox='docker' needs a running Docker engine ({status['detail']}): start one "
            "(e.g. `sudo systemctl start docker`) or use --sandbox process"
        )
    _ENGINE_SEEN = True


class DockerSandbox(ProcessSandbox):
    """Runs the worker in a container (see the module docstring)."""

    tier = "docker"
    scratch_on_host = False  # a tmpfs inside the container, sized there
    cpu_readable = False  # the started process is the docker client, not the worker
    uses_pids_cgroup = False  # --pids-limit does this

    def __init__(self, config: SandboxConfig | None = None, on_call: CallHandler | None = None):
        super().__init__(config, on_call)
        self.container = f"recursa-{secrets.token_hex(6)}"

    async def start(self) -> None:
        await _require_engine()
        await super().start()

    def _command(self) -> list[str]:
        assert self._root is not None
        docker = shutil.which("docker") or "docker"
        return docker_command(
            self.config, name=self.container, inputs=self._root / "inputs", docker=docker
        )

    def _worker_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k in _CLIENT_ENV}

    def _init_message(self) -> dict[str, Any]:
        msg = super()._init_message()
        msg["scratch"] = _IN_SCRATCH
        return msg

    def _hardening_options(self) -> dict[str, Any]:
        if not self.config.hardening:
            return {}
        return {
            "module": f"{_IN_WORKER}/harden.py",
            "read": [_IN_INPUTS],
            "write": [_IN_SCRATCH],
            "protect": [],
        }

    def _load_message(self, item: Loaded) -> dict[str, Any]:
        msg = super()._load_message(item)
        msg["path"] = f"{_IN_INPUTS}/{item.path.name}"
        return msg

    async def _kill(self) -> None:
        await super()._kill()
        # Killing the client does not stop the container; remove it by name.
        with contextlib.suppress(OSError, TimeoutError):
            proc = await asyncio.create_subprocess_exec(
                shutil.which("docker") or "docker",
                "rm",
                "--force",
                self.container,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await within(proc.wait(), 15)
        self.container = f"recursa-{secrets.token_hex(6)}"  # a restart gets a fresh name

    def isolation(self) -> dict[str, Any]:
        """The container's walls plus whatever the worker applied inside it."""
        report = super().isolation()
        inner = report["protections"]
        report["protections"] = [
            "container",
            "network-none",
            "read-only-root",
            "cap-drop-all",
            "no-new-privileges",
            "pids-limit",
            *(["memory-cgroup"] if self.config.memory_limit_mb else []),
            *inner,
        ]
        # The namespaces hold whatever the worker's own rules add; only a missing seccomp
        # filter changes anything a user should know: processes are then only counted.
        warnings = []
        if inner and "seccomp" not in inner:
            warnings.append(
                f"no seccomp filter inside the container: model code may start up to "
                f"{self.config.max_pids} processes (--pids-limit), with no network either way"
            )
        report.update(
            network_blocked=True,
            tcp_blocked=True,
            filesystem_confined=True,
            signals_scoped=True,
            thread_cap=f"{self.config.max_pids} (--pids-limit)",
            threads_capped_by_kernel=True,
            scratch_limit_mb=None,  # a tmpfs in the container
            image=self.config.docker_image,
            warnings=warnings,
        )
        return report
