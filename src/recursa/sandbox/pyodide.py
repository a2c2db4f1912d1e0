"""Finding Deno and fetching Pyodide for the WebAssembly tier.

Deno comes from PyPI (``pip install 'recursa[wasm]'`` installs the ``deno`` package, which
ships the binary). Pyodide comes from the npm registry as the ``pyodide`` package at a pinned
version, checked against its pinned sha512 integrity, unpacked into recursa's cache
(``<cache>/pyodide/<version>/``) at first use or by ``recursa doctor --install wasm``; it is
never committed or vendored. After unpacking, a memory snapshot of an initialised interpreter
is made once (``snapshot.bin``) so that each worker starts in about a second instead of five.

The tarball is fetched with ``npm pack`` when npm is installed, else straight from the
registry's tarball URL with httpx.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recursa.errors import MissingDependencyError, SandboxStartError
from recursa.paths import cache_dir

__all__ = [
    "PYODIDE_VERSION",
    "RUNNER_PATH",
    "ensure_pyodide",
    "find_deno",
    "pyodide_dir",
    "wasm_status",
]

# 314.x is CPython 3.14 and the first line whose loader is an ES module throughout
# (pyodide.asm.mjs), which Deno runs without CommonJS shims.
PYODIDE_VERSION = "314.0.7"
# The npm registry's "dist.integrity" for that version (sha512 of the tarball, base64).
PYODIDE_INTEGRITY = (
    "sha512-0YvXxEhfEdpLfb/XkM2BFAeMROq0iMUX2bzzH9pOttyMcWkwq+HbE5uyuGD82LN7y2q+SNvi/6V5JE"
    "sOlD2R1A=="
)
PYODIDE_TARBALL = f"https://registry.npmjs.org/pyodide/-/pyodide-{PYODIDE_VERSION}.tgz"
# The files the runner needs; the rest of the package (consoles, maps, types) is left out.
PYODIDE_FILES = (
    "package.json",
    "pyodide.mjs",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
)
RUNNER_PATH = Path(__file__).with_name("wasm_runner.mjs")
_READY = ".complete"


def find_deno() -> str | None:
    """The Deno binary: ``$RECURSA_DENO``, the ``deno`` PyPI package, or ``deno`` on PATH."""
    env = os.environ.get("RECURSA_DENO")
    if env:
        return env
    try:
        from deno import find_deno_bin  # the PyPI package

        path = os.fsdecode(find_deno_bin())
        if os.path.exists(path):
            return path
    except (ImportError, OSError, RuntimeError):
        pass
    return shutil.which("deno")


def pyodide_dir(version: str = PYODIDE_VERSION) -> Path:
    """Where this Pyodide version lives: ``$RECURSA_PYODIDE_DIR`` or the recursa cache."""
    env = os.environ.get("RECURSA_PYODIDE_DIR")
    return Path(env) if env else cache_dir() / "pyodide" / version


def _installed(folder: Path) -> bool:
    return (folder / _READY).exists() and all((folder / f).exists() for f in PYODIDE_FILES)


def _integrity(path: Path) -> str:
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode("ascii")


def _fetch_tarball(dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm:
        spec = f"pyodide@{PYODIDE_VERSION}"
        cmd = [npm, "pack", spec, "--pack-destination", str(dest), "--silent"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode == 0:
            return dest / f"pyodide-{PYODIDE_VERSION}.tgz"
    import httpx

    target = dest / f"pyodide-{PYODIDE_VERSION}.tgz"
    with httpx.stream("GET", PYODIDE_TARBALL, follow_redirects=True, timeout=120) as resp:
        resp.raise_for_status()
        with open(target, "wb") as f:
            for chunk in resp.iter_bytes():
                f.write(chunk)
    return target


def _unpack(tarball: Path, folder: Path) -> None:
    with tarfile.open(tarball, "r:gz") as tar:
        for name in PYODIDE_FILES:
            member = tar.getmember(f"package/{name}")
            src = tar.extractfile(member)
            if src is None:
                raise SandboxStartError(f"the Pyodide package lacks {name}")
            with src, open(folder / name, "wb") as out:
                shutil.copyfileobj(src, out)


def make_snapshot(folder: Path, deno: str) -> bool:
    """Make ``snapshot.bin``: an initialised interpreter to start from. Best effort."""
    out = folder / "snapshot.bin"
    tmp = folder / "snapshot.tmp"
    cmd = [
        deno,
        "run",
        "--no-prompt",
        "--no-config",
        "--no-lock",
        f"--allow-read={folder}",
        f"--allow-write={tmp}",
        str(RUNNER_PATH),
        str(folder),
        "--make-snapshot",
        str(tmp),
    ]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1"}
    env["DENO_DIR"] = str(cache_dir() / "deno")
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=300, check=False)
    if done.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(out)
    return True


@contextlib.contextmanager
def _install_lock(folder: Path) -> Iterator[None]:
    """One installer at a time per folder (two workers starting together on a fresh machine)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; installs there are rare and serial
        yield
        return
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_pyodide(*, snapshot: bool = True) -> Path:
    """Fetch, verify and unpack Pyodide if needed; return its folder."""
    folder = pyodide_dir()
    if _installed(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with _install_lock(folder):
        if not _installed(folder):  # another process may have finished meanwhile
            _install(folder, snapshot=snapshot)
    return folder


def _install(folder: Path, *, snapshot: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="recursa-pyodide-") as tmp:
        try:
            tarball = _fetch_tarball(Path(tmp))
        except Exception as exc:
            raise SandboxStartError(
                f"cannot fetch Pyodide {PYODIDE_VERSION} from the npm registry: {exc}; "
                "fetch it where the network allows with `recursa doctor --install wasm`, "
                "or point RECURSA_PYODIDE_DIR at an unpacked copy"
            ) from exc
        found = _integrity(tarball)
        if found != PYODIDE_INTEGRITY:
            raise SandboxStartError(
                f"the Pyodide {PYODIDE_VERSION} tarball failed its integrity check "
                f"(expected {PYODIDE_INTEGRITY}, got {found}); nothing was installed"
            )
        _unpack(tarball, folder)
    deno = find_deno()
    if snapshot and deno:
        make_snapshot(folder, deno)
    (folder / _READY).write_text(PYODIDE_VERSION)


def require_deno() -> str:
    deno = find_deno()
    if deno is None:
        raise MissingDependencyError("sandbox='wasm'", "wasm", "deno")
    return deno


def wasm_status() -> dict[str, Any]:
    """For ``recursa doctor``: is the wasm tier ready here?"""
    deno = find_deno()
    folder = pyodide_dir()
    installed = _installed(folder)
    status: dict[str, Any] = {
        "available": bool(deno) and installed,
        "deno": deno,
        "pyodide_version": PYODIDE_VERSION,
        "pyodide_dir": str(folder),
        "pyodide_installed": installed,
        "snapshot": (folder / "snapshot.bin").exists(),
    }
    if not deno:
        status["detail"] = "Deno is missing: pip install 'recursa[wasm]'"
    elif not installed:
        status["detail"] = "Pyodide is not fetched yet: recursa doctor --install wasm"
    return status
