"""Is the embedded model safe to run in this process, on this CPU, with this llama.cpp build?

A crash in native code cannot be caught: it takes the whole process with it. llama.cpp chooses
some of its CPU kernels when it is built (``-march=native``) and some when the weights load (the
"extra buffer types": weights repacked for AMX tiles or wide SIMD). On some machines that goes
wrong: a build with AMX kernels in a VM that advertises AMX without allowing it dies with a
general protection fault on the first prompt longer than 256 tokens, and a native build copied to
an older CPU dies with SIGILL. Short prompts work, so the crash shows only on real work.

So before the first real call in a process, :func:`safe_settings` asks *child* processes
(``python -m recursa.embedded.probe``) to load the same weights with each candidate setting,
evaluate a prompt longer than one batch (:data:`PROBE_TOKENS`) and generate a few tokens. A
child that dies by a signal proves its setting crashes here. The candidates:

1. extra buffer types off: plain kernels, what ran on the AMX machines;
2. extra buffer types on: weights repacked for AMX or wide SIMD, llama.cpp's own default.

Of those that survive, the repacked one is used only when it evaluated the prompt at least
:data:`REPACK_MARGIN` faster: it costs ~600 MB more memory and a slower load, and on the AVX2
machine we measured it was *slower* (28-36 against 41 prompt tokens/s). So each machine gets the
setting that is both safe and fastest on it, measured rather than assumed.

The outcome is recorded in ``<cache>/llama-probe.json`` under a key that names the llama.cpp
build (its library files' sizes and mtimes, so a reinstall probes again), this CPU (model name
and flags) and the weights file. Later processes read the record and start at once; the probe
costs two model loads and two short prompts, once per machine and build. When every candidate
crashes, :class:`~recursa.embedded.errors.LocalModelUnsafeError` names the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recursa.embedded.errors import LocalModelUnsafeError

__all__ = [
    "PROBE_TOKENS",
    "ProbeAttempt",
    "RuntimeChoice",
    "build_identity",
    "cpu_features",
    "cpu_identity",
    "probe_key",
    "read_records",
    "rebuild_hint",
    "safe_settings",
    "stored_choice",
]

log = logging.getLogger("recursa.embedded")

# More than one 512-token batch, so the probe runs both the large-batch matrix kernels (where
# the AMX and repacked paths start, above 256 tokens) and a partial batch, then generation.
PROBE_TOKENS = 640
PROBE_GENERATE = 8
PROBE_TIMEOUT_S = 600.0
CANDIDATES: tuple[bool, ...] = (False, True)  # use_extra_bufts: plain kernels, then repacked
# Repacked weights cost ~600 MB more memory and a slower load; they are chosen only when they
# evaluate prompts at least this much faster (measured on an AVX2 CPU they were slower).
REPACK_MARGIN = 1.10
RECORD_VERSION = 2  # 2: both settings measured

_REINSTALL = (
    'CMAKE_ARGS="{flags} -DLLAVA_BUILD=OFF" pip install --no-cache-dir --force-reinstall '
    "--no-deps llama-cpp-python=={version}"
)


def rebuild_hint(cpu: dict[str, str] | None = None) -> str:
    """The reinstall that fixes a crashing build on this CPU.

    Portable kernels assume AVX2 on x86-64 (every CPU since 2013); an older x86-64 CPU needs
    a build for itself instead.
    """
    cpu = cpu or cpu_identity()
    flags = cpu["flags"].split()
    if cpu["machine"] in ("x86_64", "AMD64") and flags and "avx2" not in flags:
        how, cmake = "reinstall llama.cpp built for this CPU (it lacks AVX2)", "-DGGML_NATIVE=ON"
    else:
        how, cmake = "reinstall llama.cpp without native CPU detection", "-DGGML_NATIVE=OFF"
    return f"{how}: " + _REINSTALL.format(flags=cmake, version=llama_cpp_version())


@dataclass(frozen=True, slots=True)
class ProbeAttempt:
    """One child's run with one setting."""

    extra_bufts: bool
    ok: bool
    returncode: int
    signal: str = ""  # the signal that killed the child, if one did
    seconds: float = 0.0
    prompt_tokens: int = 0
    prompt_tok_per_s: float = 0.0
    generation_tok_per_s: float = 0.0
    detail: str = ""  # the end of the child's stderr when it failed


@dataclass(frozen=True, slots=True)
class RuntimeChoice:
    """The settings to load the weights with in this process, and why."""

    extra_bufts: bool
    source: str  # "probe" (just now), "record" (an earlier probe), "override", "inconclusive"
    attempts: tuple[ProbeAttempt, ...] = ()
    system_info: str = ""  # llama.cpp's own list of the CPU features it was built with
    key: str = ""

    @property
    def crashed(self) -> tuple[ProbeAttempt, ...]:
        return tuple(a for a in self.attempts if a.signal)


# ---- identity: what a record is valid for --------------------------------------------------------
def _llama_cpp_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")  # finds the package without loading native code
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_identity(package_dir: Path | None = None) -> dict[str, Any]:
    """The installed llama.cpp build: version and each native library's size and mtime."""
    package_dir = package_dir or _llama_cpp_dir()
    libs: dict[str, list[int]] = {}
    override = os.environ.get("LLAMA_CPP_LIB_PATH")  # llama-cpp-python's own switch
    lib_dir = Path(override) if override else (package_dir / "lib" if package_dir else None)
    if lib_dir is not None and lib_dir.is_dir():
        for f in sorted(lib_dir.iterdir()):
            if ".so" in f.name or f.suffix in (".dylib", ".dll"):
                st = f.stat()
                libs[f.name] = [st.st_size, st.st_mtime_ns]
    return {"version": llama_cpp_version(), "lib_dir": str(lib_dir or ""), "libs": libs}


def cpu_identity() -> dict[str, str]:
    """This CPU as the kernel describes it (model name and feature flags)."""
    info = {"machine": platform.machine(), "model": platform.processor(), "flags": ""}
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name in ("model name", "CPU part") and not info.get("_model"):
                info["model"], info["_model"] = value.strip(), "1"
            elif name in ("flags", "Features") and not info["flags"]:
                info["flags"] = " ".join(sorted(value.split()))
            if info["flags"] and info.get("_model"):
                break
    info.pop("_model", None)
    return info


def probe_key(weights: Path, build: dict[str, Any], cpu: dict[str, str]) -> str:
    st = weights.stat()
    blob = json.dumps(
        {
            "v": RECORD_VERSION,
            "build": build,
            "cpu": cpu,
            "weights": [weights.name, st.st_size],
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# ---- records -------------------------------------------------------------------------------------
def read_records(path: Path) -> dict[str, Any]:
    """Every stored probe outcome (an unreadable file is treated as empty: it is re-creatable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(path: Path, key: str, record: dict[str, Any]) -> None:
    records = read_records(path)
    records[key] = record
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".probe-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(records, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    except OSError as exc:  # a read-only cache costs the next process one more probe
        log.info("could not store the llama.cpp probe result in %s: %s", path, exc)


def _choice_from_record(record: dict[str, Any], key: str) -> RuntimeChoice | None:
    try:
        attempts = tuple(ProbeAttempt(**a) for a in record["attempts"])
        return RuntimeChoice(
            extra_bufts=bool(record["extra_bufts"]),
            source="record",
            attempts=attempts,
            system_info=str(record.get("system_info", "")),
            key=key,
        )
    except (KeyError, TypeError):
        return None


# ---- the probe -----------------------------------------------------------------------------------
_SEEN: dict[str, RuntimeChoice] = {}  # outcomes known to this process, by key


def _signal_name(returncode: int) -> str:
    if returncode >= 0:
        return ""
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _run_child(
    command: Sequence[str], weights: Path, extra_bufts: bool, threads: int, timeout_s: float
) -> tuple[ProbeAttempt, str]:
    argv = [
        *command,
        str(weights),
        "--extra-bufts",
        "1" if extra_bufts else "0",
        "--threads",
        str(threads),
        "--tokens",
        str(PROBE_TOKENS),
    ]
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        took = time.perf_counter() - started
        return ProbeAttempt(extra_bufts, False, -1, "", took, detail="timed out"), ""
    took = round(time.perf_counter() - started, 2)
    out: dict[str, Any] = {}
    for line in reversed(proc.stdout.splitlines()):
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                out = parsed
                break
    ok = proc.returncode == 0 and bool(out.get("ok"))
    attempt = ProbeAttempt(
        extra_bufts=extra_bufts,
        ok=ok,
        returncode=proc.returncode,
        signal=_signal_name(proc.returncode),
        seconds=took,
        prompt_tokens=int(out.get("prompt_tokens", 0)),
        prompt_tok_per_s=float(out.get("prompt_tok_per_s", 0.0)),
        generation_tok_per_s=float(out.get("generation_tok_per_s", 0.0)),
        detail="" if ok else proc.stderr.strip()[-600:],
    )
    return attempt, str(out.get("system_info", ""))


def stored_choice(weights: Path, records: Path) -> RuntimeChoice | None:
    """The outcome stored for this build, CPU and weights file, if it was probed already."""
    return _stored(records, probe_key(weights, build_identity(), cpu_identity()))


def _stored(records: Path, key: str) -> RuntimeChoice | None:
    stored = read_records(records).get(key)
    return _choice_from_record(stored, key) if isinstance(stored, dict) else None


def cpu_features(flags: str) -> list[str]:
    """The flags that decide which llama.cpp kernels can run (AVX2, AVX-512, AMX, NEON...)."""
    wanted = ("avx2", "avx512", "amx", "avx_vnni", "f16c", "fma", "neon", "asimd", "sve")
    return [f for f in flags.split() if f.startswith(wanted)]


def _faster(survivors: list[ProbeAttempt]) -> bool:
    """``extra_bufts`` of the setting to use among those that did not crash."""
    plain = next((a for a in survivors if not a.extra_bufts), None)
    repacked = next((a for a in survivors if a.extra_bufts), None)
    if plain is None or repacked is None:
        return survivors[0].extra_bufts
    return repacked.prompt_tok_per_s >= REPACK_MARGIN * plain.prompt_tok_per_s


def safe_settings(
    weights: Path,
    records: Path | None,
    *,
    threads: int = 2,
    force: bool = False,
    command: Sequence[str] | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> RuntimeChoice:
    """The settings that load ``weights`` without crashing this process.

    Reads the outcome stored in ``records`` for this build, CPU and weights file, or probes in
    child processes (``force`` probes again; ``records=None`` neither reads nor stores).
    ``command`` replaces ``python -m recursa.embedded.probe`` (tests).
    Raises :class:`LocalModelUnsafeError` when every candidate crashes.
    """
    key = probe_key(weights, build_identity(), cpu_identity())
    if not force and key in _SEEN:  # this process probed (or read) it already
        return _SEEN[key]
    if not force and records is not None:
        choice = _stored(records, key)
        if choice is not None:
            _SEEN[key] = choice
            return choice
    command = list(command or [sys.executable, "-m", "recursa.embedded.probe"])
    attempts: list[ProbeAttempt] = []
    system_info = ""
    log.info("checking once which llama.cpp settings run %s safely here", weights.name)
    for extra in CANDIDATES:
        attempt, info = _run_child(command, weights, extra, threads, timeout_s)
        attempts.append(attempt)
        system_info = system_info or info
        if not attempt.ok and not attempt.signal and attempt.detail != "timed out":
            # It failed without crashing (a Python error: a broken install, unreadable weights).
            # That is not about CPU kernels: let the real load report it in this process.
            return RuntimeChoice(False, "inconclusive", tuple(attempts), system_info, key)
    survivors = [a for a in attempts if a.ok]
    if survivors:
        extra = _faster(survivors)
        record = {
            "extra_bufts": extra,
            "attempts": [asdict(a) for a in attempts],
            "system_info": system_info,
            "weights": str(weights),
            "llama_cpp_python": llama_cpp_version(),
            "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if records is not None:
            _write_record(records, key, record)
        choice = _SEEN[key] = RuntimeChoice(extra, "probe", tuple(attempts), system_info, key)
        return choice
    if all(a.detail == "timed out" for a in attempts):
        return RuntimeChoice(False, "inconclusive", tuple(attempts), system_info, key)
    crashes = ", ".join(
        f"{'with' if a.extra_bufts else 'without'} repacked weights: {a.signal or a.detail}"
        for a in attempts
    )
    raise LocalModelUnsafeError(
        f"llama.cpp crashes on this CPU ({crashes}), so the embedded model cannot run here: "
        + rebuild_hint()
        + ", or use a model behind an API (--model openai:..., --base-url ...)",
        model=weights.name,
        attempts=tuple(attempts),
    )


# ---- the child -----------------------------------------------------------------------------------
def _child(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recursa.embedded.probe")
    parser.add_argument("weights")
    parser.add_argument("--extra-bufts", type=int, choices=(0, 1), default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=PROBE_TOKENS)
    args = parser.parse_args(argv)

    from recursa.embedded.runtime import import_llama_cpp, load_llama

    lib = import_llama_cpp()
    n_ctx = max(2_048, args.tokens + 256)
    llama = load_llama(
        lib,
        args.weights,
        n_ctx=n_ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        extra_bufts=bool(args.extra_bufts),
    )
    filler = "The quick brown fox jumps over the lazy dog near river bank number {}. "
    text = "".join(filler.format(i) for i in range(args.tokens // 8 + 8))
    tokens = llama.tokenize(text.encode(), add_bos=False)[: args.tokens]
    started = time.perf_counter()
    llama.eval(tokens)
    prompt_s = time.perf_counter() - started
    started = time.perf_counter()
    out = llama.create_completion(tokens, max_tokens=PROBE_GENERATE, temperature=0.0)
    gen_s = time.perf_counter() - started
    generated = out["usage"]["completion_tokens"]
    result = {
        "ok": True,
        "prompt_tokens": len(tokens),
        "prompt_tok_per_s": round(len(tokens) / prompt_s, 1),
        "generation_tok_per_s": round(generated / gen_s, 1) if gen_s > 0 else 0.0,
        "system_info": lib.llama_print_system_info().decode("utf-8", "replace").strip(),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    llama.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
