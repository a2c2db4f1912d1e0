"""The adversarial suite: hostile cells against every sandbox tier this machine offers.

Each attack runs in a long-lived sandbox per tier (as in a real run, where one worker serves
many cells) and asserts its outcome: the secret is not found, the file is not read or written,
the listener hears nothing, the process is not started, the runaway cell is stopped. After
every attack the host is checked to be fine and the next cell to work (on a fresh worker
where the attack killed the old one). Secrets, files and listeners are planted by the test
and checked from the host side too, so a leak cannot hide behind the sandbox's own report.

Tiers: ``process`` always; ``wasm`` wherever Deno and Pyodide install (they do here);
``docker`` only where a Docker engine answers. The full-RLM attacks (prompt injection, budget
flood) and the protocol fuzz test live in ``test_sandbox_attacks_rlm.py``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import pytest_asyncio

from recursa.errors import SandboxStartError
from recursa.sandbox import CallRefused, SandboxConfig, harden, sandbox_factory
from recursa.sandbox.docker import docker_status
from recursa.sandbox.pyodide import ensure_pyodide, find_deno, pyodide_dir

from .waiting import wait_until_async

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = f"sk-recursa-planted-{secrets.token_hex(12)}"
CONFIG = SandboxConfig(memory_limit_mb=1024, file_size_limit_mb=64, max_captured_chars=100_000)
PYODIDE = pyodide_dir()  # resolved before conftest points the cache at a temp folder
HAS_DOCKER = docker_status(timeout_s=10)["available"]
TIERS = [
    "process",
    "wasm",
    pytest.param("docker", marks=pytest.mark.skipif(not HAS_DOCKER, reason="no Docker engine")),
]


KERNEL = harden.probe()  # what this machine offers, independent of what a worker reports
_OFFERED = {
    "landlock": KERNEL["landlock_abi"] >= 1,
    "seccomp": KERNEL["seccomp"],
    "seccomp-or-landlock-net": KERNEL["seccomp"] or KERNEL["landlock_abi"] >= 4,
}


def requires(tier: str, *features: str) -> None:
    """Skip a process-tier attack whose defence this kernel does not offer at all (macOS, old
    kernels). Where the kernel offers it, the worker must use it: a worker that failed to apply
    a defence fails the attack instead of skipping it. Other tiers need nothing of the kernel."""
    missing = [f for f in features if not _OFFERED[f]]
    if tier == "process" and missing:
        pytest.skip(f"this kernel lacks {', '.join(missing)}")


def wasm_ready() -> str | None:
    """None when the wasm tier can run here, else why not (Deno or Pyodide not installable)."""
    if find_deno() is None:
        return "Deno is not installed (pip install 'recursa[wasm]')"
    os.environ["RECURSA_PYODIDE_DIR"] = str(PYODIDE)
    try:
        ensure_pyodide()
    except SandboxStartError as exc:
        return f"Pyodide could not be fetched: {exc}"
    return None


class Traps:
    """Listeners the attacks aim at: TCP, UDP, unix pathname and abstract sockets on this host.
    Every connection or datagram they see is recorded in ``hits``."""

    def __init__(self, folder: Path) -> None:
        self.hits: list[str] = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix_path = str(folder / "trap.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        self.unix.listen()
        self.abstract_name = f"\0recursa-trap-{secrets.token_hex(6)}"
        self.abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.abstract.bind(self.abstract_name)
        self.abstract.listen()
        self.tcp_port = self.tcp.getsockname()[1]
        self.udp_port = self.udp.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        names = {self.tcp: "tcp", self.udp: "udp", self.unix: "unix", self.abstract: "abstract"}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(names), [], [], 0.05)
            for s in ready:
                if s is self.udp:
                    data, _ = s.recvfrom(65536)
                    self.hits.append(f"udp:{data[:80]!r}")
                else:
                    conn, _ = s.accept()
                    self.hits.append(names[s])
                    conn.close()

    def settle(self) -> list[str]:
        time.sleep(0.2)  # let anything in flight land before looking
        return list(self.hits)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in (self.tcp, self.udp, self.unix, self.abstract):
            s.close()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Secrets where an attacker would look: the host's environment, a decoy process's
    environment, ``~/.ssh``, ``~/.aws``, a project's ``.env``; plus the listeners."""
    root = tmp_path_factory.mktemp("planted")
    home, project = root / "home", root / "project"
    files = {
        home / ".ssh" / "id_ed25519": f"-----BEGIN OPENSSH PRIVATE KEY----- {SECRET}",
        home / ".aws" / "credentials": f"[default]\naws_secret_access_key = {SECRET}",
        project / ".env": f"OPENAI_API_KEY={SECRET}",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    saved = {k: os.environ.get(k) for k in ("PLANTED_API_KEY", "HOME")}
    os.environ["PLANTED_API_KEY"] = SECRET
    os.environ["HOME"] = str(home)
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"],
        env={"PATH": os.defpath, "PLANTED_API_KEY": SECRET},
    )
    traps = Traps(root)
    # Controls: without a sandbox each of these leaks, so a clean result below means something.
    assert SECRET.encode() in Path(f"/proc/{decoy.pid}/environ").read_bytes()
    with socket.create_connection(("127.0.0.1", traps.tcp_port)):
        pass
    assert "tcp" in traps.settle()
    traps.hits.clear()
    yield {
        "root": root,
        "home": home,
        "project": project,
        "files": files,
        "traps": traps,
        "decoy": decoy,
    }
    traps.close()
    decoy.kill()
    decoy.wait()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class Box:
    """A tier's sandbox plus the sub-calls it served (to see that refused ones never ran)."""

    def __init__(self, tier: str) -> None:
        self.tier = tier
        self.calls: list[str] = []
        self.sb = sandbox_factory(tier)(CONFIG, self._on_call)

    async def _on_call(self, fn: str, args: dict):
        if args.get("prompt") == "refuse-and-kill":
            raise CallRefused("budget exhausted", kind="budget", kill=True)
        self.calls.append(args.get("prompt", ""))
        return "ok"

    async def run(self, code: str, timeout_s: float = 20.0):
        if not self.sb.alive:
            await self.sb.restart()
        return await self.sb.execute(code, timeout_s=timeout_s)

    async def healthy(self) -> None:
        """The host is fine and the next cell works (on a fresh worker if the attack killed
        the last one); the context survived the restart."""
        r = await self.run("print(40 + 2, len(context))")
        assert r.ok, r.error
        assert r.stdout == "42 11\n"


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=TIERS)
async def box(request, planted):
    tier = request.param
    if tier == "wasm" and (why := wasm_ready()):
        pytest.skip(why)
    b = Box(tier)
    await b.sb.start()
    await b.sb.load_context("the context")
    yield b
    await b.sb.shutdown()


async def attack(box: Box, code: str, timeout_s: float = 20.0):
    r = await box.run(code, timeout_s=timeout_s)
    shown = (r.stdout or "") + (r.error or "")
    assert SECRET not in shown
    return r


def tried(r) -> str:
    return (r.stdout or "") + (r.error or "")


# ---- secrets ------------------------------------------------------------------------------------


async def test_environment_holds_no_secret(box):
    r = await attack(box, "import os\nprint(dict(os.environ))")
    assert r.ok and "PLANTED_API_KEY" not in r.stdout
    await box.healthy()


async def test_proc_environ_and_host_memory_scans_find_nothing(box, planted):
    requires(box.tier, "landlock")
    code = f"""
import glob, os
found = []
for p in glob.glob('/proc/*/environ') + ['/proc/{planted["decoy"].pid}/environ']:
    try:
        if {SECRET!r}.encode() in open(p, 'rb').read():
            found.append(p)
    except Exception:
        pass
try:
    mem = open('/proc/{os.getpid()}/mem', 'rb')
    for line in open('/proc/{os.getpid()}/maps'):
        lo, hi = (int(x, 16) for x in line.split()[0].split('-'))
        try:
            mem.seek(lo)
            if {SECRET!r}.encode() in mem.read(min(hi - lo, 1 << 26)):
                found.append('host memory')
        except Exception:
            pass
except Exception as e:
    print('mem:', type(e).__name__)
print('FOUND' if found else 'NOTHING', len(found))
"""
    r = await attack(box, code, timeout_s=60)
    assert "NOTHING 0" in r.stdout, tried(r)
    await box.healthy()


async def test_planted_key_files_are_unreadable(box, planted):
    requires(box.tier, "landlock")
    paths = [str(p) for p in planted["files"]]
    code = f"""
import os
for p in {paths!r} + [os.path.expanduser('~/.ssh/id_ed25519')]:
    try:
        print('READ', p, open(p).read())
    except Exception as e:
        print('DENIED', type(e).__name__)
"""
    r = await attack(box, code)
    assert "READ" not in r.stdout and r.stdout.count("DENIED") == 4, tried(r)
    await box.healthy()


async def test_writes_outside_the_scratch_folder_are_denied(box, planted):
    requires(box.tier, "landlock")
    targets = [planted["home"] / "evil", planted["project"] / "evil", Path("/tmp") / SECRET[-12:]]
    code = f"""
for p in {[str(t) for t in targets]!r}:
    try:
        open(p, 'w').write('pwned'); print('WROTE', p)
    except Exception as e:
        print('DENIED', type(e).__name__)
open('inside.txt', 'w').write('fine')
print(open('inside.txt').read())
"""
    r = await attack(box, code)
    assert r.stdout.endswith("fine\n"), tried(r)
    assert not any(t.exists() for t in targets)  # nothing reached the host's disk
    if box.tier == "process":  # the others write to a private (in-memory or tmpfs) file system
        assert "WROTE" not in r.stdout, tried(r)
    await box.healthy()


# ---- network --------------------------------------------------------------------------------


async def test_tcp_connect_fails_and_the_listener_hears_nothing(box, planted):
    requires(box.tier, "seccomp-or-landlock-net")
    traps = planted["traps"]
    code = f"""
import socket
try:
    s = socket.create_connection(('127.0.0.1', {traps.tcp_port}), timeout=3)
    s.sendall(b'stolen'); print('CONNECTED')
except Exception as e:
    print('DENIED', type(e).__name__)
try:
    import ctypes, struct
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM, straight to the C library
    addr = struct.pack('<HH4s8x', 2, socket.htons({traps.tcp_port}), bytes([127, 0, 0, 1]))
    rc = libc.connect(fd, addr, len(addr))
    print('RAW', fd, rc, ctypes.get_errno())
except Exception as e:
    print('RAW DENIED', type(e).__name__)
"""
    r = await attack(box, code)
    assert "CONNECTED" not in r.stdout, tried(r)
    assert "RAW 3 0" not in r.stdout
    assert traps.settle() == []
    await box.healthy()


async def test_udp_datagrams_and_dns_lookups_go_nowhere(box, planted):
    requires(box.tier, "seccomp")
    traps = planted["traps"]
    code = f"""
import socket
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b'stolen', ('127.0.0.1', {traps.udp_port})); print('SENT')
except Exception as e:
    print('DENIED', type(e).__name__)
for host in ('example.com', 'localhost'):
    try:
        print('RESOLVED', socket.getaddrinfo(host, 80)[:1])
    except Exception as e:
        print('NO DNS', type(e).__name__)
"""
    r = await attack(box, code)
    for line in r.stdout.splitlines():
        # Pyodide answers getaddrinfo in-process with made-up 172.29.x.x addresses (Emscripten's
        # DNS emulation): no query leaves. Every other tier must fail the lookup.
        assert not line.startswith("RESOLVED") or (box.tier == "wasm" and "'172.29." in line)
    assert traps.settle() == []
    await box.healthy()


async def test_unix_sockets_pathname_and_abstract_cannot_be_reached(box, planted):
    requires(box.tier, "seccomp")
    traps = planted["traps"]
    code = f"""
import socket
for addr in ({traps.unix_path!r}, {traps.abstract_name!r}):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(addr); print('CONNECTED')
    except Exception as e:
        print('DENIED', type(e).__name__)
"""
    r = await attack(box, code)
    assert "CONNECTED" not in r.stdout, tried(r)
    assert traps.settle() == []
    await box.healthy()


# ---- processes ------------------------------------------------------------------------------


SPAWNS = {
    "subprocess": "import subprocess\nprint('RAN', subprocess.run(['touch', 'spawned']).returncode)",
    "os.system": "import os\nprint('RAN', os.system('touch spawned'))",
    "os.fork": (
        "import os\npid = os.fork()\nif pid == 0:\n    open('spawned', 'w').close()\n"
        "    os._exit(0)\nos.waitpid(pid, 0)\nprint('RAN', 0)"
    ),
}


@pytest.mark.parametrize("how", list(SPAWNS))
async def test_no_subprocess_shell_or_fork(box, how):
    requires(box.tier, "seccomp")
    r = await attack(box, SPAWNS[how])
    # Refused with an exception, a failing status, or (os.system under Pyodide, where Deno
    # refuses the spawn from deep inside the runtime) a crash of the worker.
    assert "RAN 0" not in r.stdout, tried(r)
    r = await box.run("import os\nprint(os.path.exists('spawned'))")
    assert r.stdout == "False\n"
    await box.healthy()


async def test_a_bounded_fork_bomb_is_contained(box):
    requires(box.tier, "seccomp")
    code = """
import os
n = 0
for _ in range(30):
    try:
        if os.fork() == 0:
            while True:
                pass
        n += 1
    except Exception as e:
        break
print('FORKED', n)
"""
    r = await attack(box, code)
    assert "FORKED 0" in r.stdout, tried(r)
    await box.healthy()


async def test_a_setsid_daemon_cannot_outlive_its_cell(box):
    requires(box.tier, "seccomp")
    code = """
import os, time
try:
    if os.fork() == 0:
        os.setsid()
        while True:
            with open('heartbeat', 'a') as f:
                f.write('x')
            time.sleep(0.02)
    print('DAEMON')
except Exception as e:
    print('DENIED', type(e).__name__)
"""
    await attack(box, code)
    size = "import os\nprint(os.path.getsize('heartbeat') if os.path.exists('heartbeat') else 0)"
    first = (await box.run(size)).stdout
    await asyncio.sleep(0.5)
    assert (await box.run(size)).stdout == first  # no heartbeat after the cell ended
    await box.healthy()


# ---- runaway code ---------------------------------------------------------------------------


async def test_an_endless_loop_is_killed_at_the_timeout(box):
    r = await box.run("while True: pass", timeout_s=1.0)
    assert r.fatal and r.fatal_reason == "cell_timeout"
    await box.healthy()


async def test_deep_recursion_is_an_error_or_a_reported_crash(box):
    r = await box.run("def f(n):\n    return f(n + 1)\nf(0)")
    assert "RecursionError" in (r.error or "") or r.fatal
    # With the guard lifted, recursion eats memory (or the C stack) until something gives.
    r = await box.run(
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
        timeout_s=3.0,
    )
    assert r.fatal or "Error" in (r.error or "")
    await box.healthy()


async def test_os_exit_is_reported_as_a_crash(box):
    r = await box.run("import os; os._exit(3)")
    assert r.fatal and r.fatal_reason == "crash" and "status 3" in r.error
    await box.healthy()


async def test_a_null_pointer_read_crashes_only_the_worker(box):
    r = await box.run("import ctypes; ctypes.string_at(0)")
    # A segfault in a native worker; WebAssembly has no unmapped page 0, so it reads b''.
    assert (r.fatal and "SIGSEGV" in r.error) or r.ok or "Error" in (r.error or "")
    await box.healthy()


async def test_huge_allocations_fail_inside_the_worker(box):
    r = await box.run("x = bytearray(8 * 1024**3)")
    assert r.fatal or "MemoryError" in r.error or "OverflowError" in r.error
    r = await box.run("grow = []\nwhile True:\n    grow.append('y' * 10_000_000)", timeout_s=60)
    assert r.fatal or "MemoryError" in (r.error or "")
    await box.run("grow = x = None")  # give the memory back for the next attacks
    await box.healthy()


async def test_a_200_mb_print_is_cut(box):
    r = await box.run("print('x' * 200_000_000)", timeout_s=60)
    assert r.ok, r.error
    assert len(r.stdout) == CONFIG.max_captured_chars
    assert r.output_cut_chars == 200_000_001 - CONFIG.max_captured_chars
    await box.healthy()


async def test_a_1_gb_file_stops_at_the_size_limit(box):
    code = (
        "chunk = b'0' * (16 << 20)\n"
        "with open('big.bin', 'wb') as f:\n"
        "    for _ in range(64):\n"
        "        f.write(chunk)\n"
    )
    r = await box.run(code, timeout_s=60)
    assert "File too large" in (r.error or ""), tried(r)
    size = await box.run("import os; print(os.path.getsize('big.bin'))")
    assert int(size.stdout) <= CONFIG.file_size_limit_mb * 1024 * 1024
    await box.run("import os; os.remove('big.bin')")
    await box.healthy()


# ---- the protocol channel -------------------------------------------------------------------

FIND_CHANNEL = (
    "import gc, struct, time\n"
    "ch = [o for o in gc.get_objects()\n"
    "      if type(o).__name__ in ('FrameChannel', 'CallbackChannel')][0]\n"
)


async def test_a_forged_oversized_frame_kills_the_worker_only(box):
    r = await box.run(FIND_CHANNEL + "ch._write_all(struct.pack('>I', 2**31))\ntime.sleep(3)")
    assert r.fatal and r.fatal_reason == "protocol"
    await box.healthy()


async def test_a_forged_call_frame_outside_a_request_kills_the_worker(box):
    calls = len(box.calls)
    code = FIND_CHANNEL + (
        "import json, threading\n"
        "def forge():\n"
        "    time.sleep(0.3)\n"
        "    body = json.dumps({'type': 'call', 'id': 99, 'fn': 'llm_query',\n"
        "                       'args': {'prompt': 'smuggled'}}).encode()\n"
        "    ch._write_all(struct.pack('>I', len(body)) + body)\n"
        "try:\n"
        "    threading.Thread(target=forge, daemon=True).start()\n"
        "except RuntimeError as e:\n"
        "    print('NO THREADS', e)\n"
    )
    r = await box.run(code)
    if "NO THREADS" not in r.stdout:  # WebAssembly has no threads to leave behind
        await wait_until_async(
            lambda: not box.sb.alive, "the forged frame to get the worker killed", timeout=3
        )
    assert len(box.calls) == calls and "smuggled" not in box.calls
    await box.healthy()


async def test_a_thread_calling_llm_query_after_its_cell_is_refused_and_killed(box):
    calls = len(box.calls)
    code = (
        "import threading, time\n"
        "def late():\n"
        "    time.sleep(0.3)\n"
        "    while True:\n"
        "        try:\n"
        "            llm_query('late call')\n"
        "        except Exception:\n"
        "            pass\n"
        "try:\n"
        "    threading.Thread(target=late, daemon=True).start()\n"
        "except RuntimeError as e:\n"
        "    print('NO THREADS', e)\n"
    )
    r = await box.run(code)
    if "NO THREADS" not in r.stdout:
        await wait_until_async(
            lambda: not box.sb.alive, "the late call to get the worker killed", timeout=3
        )
    assert box.calls[calls:] == []
    await box.healthy()


async def test_a_refusal_with_kill_stops_the_worker_mid_cell(box):
    r = await box.run("llm_query('refuse-and-kill')\nimport time\ntime.sleep(5)")
    assert r.fatal and r.fatal_reason == "budget"
    await box.healthy()


async def test_the_report_says_what_holds(box):
    requires(box.tier, "landlock", "seccomp")
    iso = box.sb.isolation()
    assert iso["tier"] == box.tier
    assert iso["network_blocked"] and iso["processes_blocked"] and iso["filesystem_confined"]
    if box.tier == "process":
        assert iso["landlock_abi"] == KERNEL["landlock_abi"]
