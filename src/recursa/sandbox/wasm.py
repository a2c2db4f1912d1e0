"""The WebAssembly tier (``sandbox="wasm"``): the worker runs in Pyodide under Deno.

Model code runs in CPython compiled to WebAssembly, inside Deno with no permission except
reading the Pyodide files. It has no system calls at all: its files live in an in-memory file
system that disappears with the worker, and every way out to the host (``import js`` and
Deno's APIs, sockets, subprocesses) meets Deno's permission checks and fails. This holds on
every OS Deno runs on, not only on Linux.

Same host machinery as the process tier (frames, timeouts, restarts, sub-calls): only the
command, the environment, the boot frame carrying ``worker.py``'s source, and the way contexts
are delivered (inline in the frame, since the worker cannot read the host's files) differ.

Not protected: CPU time inside a cell until its timeout kills the worker; memory up to the
wasm32 bound of 4 GiB (lower with ``memory_limit_mb``) plus what Deno itself uses.
Threads, subprocesses and native extension modules are not available to model code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recursa.sandbox._support import Loaded
from recursa.sandbox.base import CallHandler, SandboxConfig
from recursa.sandbox.process import WORKER_PATH, ProcessSandbox, host_is_protected
from recursa.sandbox.pyodide import RUNNER_PATH, ensure_pyodide, require_deno

__all__ = ["WasmSandbox", "deno_command"]

_WASM32_MAX_MB = 4096
_JS_HEAP_MB = 512
_SCRATCH = "/scratch"


def deno_command(deno: str, pyodide: Path, config: SandboxConfig) -> list[str]:
    """The ``deno run`` argv: read access to the Pyodide folder and nothing else."""
    wasm_mb = min(config.memory_limit_mb or _WASM32_MAX_MB, _WASM32_MAX_MB)
    v8 = f"--max-old-space-size={_JS_HEAP_MB},--wasm-max-mem-pages={wasm_mb * 16}"
    return [
        deno,
        "run",
        "--no-prompt",  # a missing permission is an error, never a question on a terminal
        "--no-config",
        "--no-lock",
        "--no-remote",
        "--no-npm",
        f"--allow-read={pyodide}",
        "--deny-net",
        "--deny-env",
        "--deny-run",
        "--deny-ffi",
        "--deny-sys",
        "--deny-write",
        f"--v8-flags={v8}",
        str(RUNNER_PATH),
        str(pyodide),
    ]


class WasmSandbox(ProcessSandbox):
    """Runs model code in Pyodide under Deno (see the module docstring)."""

    tier = "wasm"
    scratch_on_host = False  # an in-memory file system inside Deno, capped by the runner
    uses_pids_cgroup = False  # Deno's own threads; Python in WebAssembly has none

    def __init__(self, config: SandboxConfig | None = None, on_call: CallHandler | None = None):
        super().__init__(config, on_call)
        self._deno: str | None = None
        self._pyodide: Path | None = None
        self._worker_source = ""

    async def start(self) -> None:
        import asyncio

        self._deno = require_deno()
        self._pyodide = await asyncio.to_thread(ensure_pyodide)
        self._worker_source = WORKER_PATH.read_text(encoding="utf-8")
        await super().start()

    def _command(self) -> list[str]:
        assert self._deno is not None, "start() finds Deno first"
        assert self._pyodide is not None, "start() fetches Pyodide first"
        return deno_command(self._deno, self._pyodide, self.config)

    def _worker_env(self) -> dict[str, str]:
        from recursa.paths import cache_dir

        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.scratch),
            "DENO_DIR": str(cache_dir() / "deno"),  # Deno's own code cache, not reachable by JS
            "DENO_NO_UPDATE_CHECK": "1",
            "NO_COLOR": "1",
            **self.config.env,
        }

    def _boot_frames(self) -> list[dict[str, Any]]:
        mb = 1024 * 1024
        cfg = self.config
        return [
            {
                "type": "boot",
                "worker": self._worker_source,
                "file_size_limit": (cfg.file_size_limit_mb or 0) * mb,
                "fs_quota": (cfg.memory_limit_mb or 0) * mb,
            }
        ]

    def _init_message(self) -> dict[str, Any]:
        msg = super()._init_message()
        msg["scratch"] = _SCRATCH  # a folder of the in-memory file system
        msg["rlimits"] = {}  # no resource module in WebAssembly; the runner caps files
        return msg

    def _hardening_options(self) -> dict[str, Any]:
        return {}  # the walls are Deno's permissions and WebAssembly itself

    def _load_message(self, item: Loaded) -> dict[str, Any]:
        msg = super()._load_message(item)
        del msg["path"]
        with open(item.path, encoding="utf-8", errors="surrogatepass") as f:
            msg["data"] = f.read()
        return msg

    def isolation(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "tier": self.tier,
            "process": True,
            "scrubbed_env": True,
            "protections": [
                "webassembly",
                "deno-permissions",
                "in-memory-fs",
                *(["file_size"] if cfg.file_size_limit_mb else []),
            ],
            "runtime": "pyodide under deno",
            "rlimits": ["wasm32-memory", "file_size", "fs_quota"],
            "filesystem_confined": True,
            "network_blocked": True,
            "tcp_blocked": True,
            "processes_blocked": True,
            "signals_scoped": True,
            "host_non_dumpable": host_is_protected(),
            "thread_cap": "none exist (WebAssembly)",
            "threads_capped_by_kernel": True,
            "scratch_limit_mb": None,  # in memory, within the runner's fs_quota
            "memory_limit_mb": min(cfg.memory_limit_mb or _WASM32_MAX_MB, _WASM32_MAX_MB),
            "warnings": [],
        }
