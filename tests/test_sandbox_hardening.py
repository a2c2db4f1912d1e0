"""The Linux hardening modules on their own: the seccomp program, Landlock rules, the host's
non-dumpable flag, and the report/warnings about what is (not) in force.

Filters and rules are irreversible, so every behavioural check runs in a child interpreter.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import sys
import textwrap
import warnings

import pytest

from recursa.sandbox import ProcessSandbox, SandboxConfig, SandboxWarning, harden, seccomp
from recursa.sandbox import landlock as ll
from recursa.sandbox.isolation import describe, missing_protections

LINUX = sys.platform.startswith("linux")
HAS_SECCOMP = LINUX and seccomp.supported()
LANDLOCK_ABI = ll.abi_version() if LINUX else 0
SANDBOX_DIR = os.path.dirname(harden.__file__)


def run_child(code: str) -> str:
    """Run ``code`` in a fresh interpreter that can import the hardening modules by path."""
    prelude = (
        "import importlib.util, os, sys\n"
        "def load(name):\n"
        f"    spec = importlib.util.spec_from_file_location(name, os.path.join({SANDBOX_DIR!r},"
        " name + '.py'))\n"
        "    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); return mod\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_filter_program_is_well_formed_for_each_architecture(arch):
    prog = seccomp.build_filter(arch, pid=4242)
    assert len(prog) % 8 == 0 and 0 < len(prog) // 8 < 4096  # the kernel's BPF_MAXINSNS
    first = struct.unpack("=HBBI", prog[:8])
    assert first == (seccomp.LD_W_ABS, 0, 0, seccomp.OFF_ARCH)  # checks the arch before anything
    col = 0 if arch == "x86_64" else 1
    tables = [seccomp.DENIED, seccomp.ALLOWED, seccomp.SELF_ONLY, seccomp.PRIORITY]
    numbers = [pair[col] for table in tables for pair in table.values() if pair[col] is not None]
    assert len(numbers) == len(set(numbers))  # no call in two tables, none twice
    specials = {seccomp.NR_CLONE[col], seccomp.NR_CLONE3[col], seccomp.NR_PRCTL[col]}
    assert not specials & set(numbers)
    last = struct.unpack("=HBBI", prog[-8:])
    assert last == (seccomp.RET_K, 0, 0, seccomp.RET_ENOSYS)  # default deny


def run_bpf(prog: bytes, arch: str, nr: int, *args: int) -> int:
    """The verdict of a classic BPF seccomp program for one call (an emulator of the few
    instructions the filter uses), so both architectures' programs can be checked here."""
    audit = seccomp.AUDIT_ARCH.get(arch, 0x40000003)  # else i386
    data = struct.pack("=iIQ6Q", nr, audit, 0, *(list(args) + [0] * (6 - len(args))))
    insns = [struct.unpack("=HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == seccomp.LD_W_ABS:
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == seccomp.RET_K:
            return k
        elif code == seccomp.JA:
            pc += k
        else:
            hit = {
                seccomp.JEQ_K: acc == k,
                seccomp.JGE_K: acc >= k,
                seccomp.JSET_K: bool(acc & k),
            }[code]
            pc += jt if hit else jf


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_filter_verdicts_for_each_architecture(arch):
    me, host = 4242, 77
    prog = seccomp.build_filter(arch, pid=me)
    col = 0 if arch == "x86_64" else 1
    eperm = seccomp.RET_ERRNO | 1

    def nr(table, name):
        return table[name][col]

    def verdict(call, *args):
        return run_bpf(prog, arch, call, *args)

    for name, pair in seccomp.ALLOWED.items():
        if pair[col] is not None:
            assert verdict(pair[col]) == seccomp.RET_ALLOW, name
    for name, pair in seccomp.DENIED.items():
        if pair[col] is not None:
            assert verdict(pair[col]) == eperm, name
    assert verdict(9999) == seccomp.RET_ENOSYS
    assert verdict(seccomp.NR_CLONE3[col]) == seccomp.RET_ENOSYS
    for name in seccomp.SELF_ONLY:  # prlimit64, kill, sched_*: the worker itself only
        call = nr(seccomp.SELF_ONLY, name)
        assert verdict(call, 0) == seccomp.RET_ALLOW, name
        assert verdict(call, me) == seccomp.RET_ALLOW, name
        assert verdict(call, host) == eperm, name
        assert verdict(call, 2**32 - 1) == eperm, name  # -1: every process
    for name in ("getpriority", "setpriority"):
        call = nr(seccomp.PRIORITY, name)
        assert verdict(call, 0, 0) == seccomp.RET_ALLOW
        assert verdict(call, 0, me) == seccomp.RET_ALLOW
        assert verdict(call, 0, host) == eperm
        assert verdict(call, 2, 0) == eperm  # PRIO_USER: every process of the user
    prctl = seccomp.NR_PRCTL[col]
    assert verdict(prctl, 15) == seccomp.RET_ALLOW  # PR_SET_NAME
    for option in (1, 4, 22, 38, 0x59616D61, 35, 36, 47, 62):  # undo protections, others
        assert verdict(prctl, option) == eperm, option
    clone = seccomp.NR_CLONE[col]
    assert verdict(clone, seccomp.CLONE_THREAD | 0x00000100) == seccomp.RET_ALLOW
    assert verdict(clone, 0x11) == eperm  # fork-style clone (SIGCHLD)
    assert verdict(clone, seccomp.CLONE_THREAD | 0x10000000) == eperm  # CLONE_NEWUSER
    assert run_bpf(prog, "i386", 0) == seccomp.RET_KILL_PROCESS  # a foreign ABI
    if arch == "x86_64":
        assert verdict(seccomp.X32_SYSCALL_BIT | 0) == eperm  # x32 read()


@pytest.mark.skipif(not HAS_SECCOMP, reason="this kernel has no seccomp filters")
def test_the_filter_blocks_sockets_processes_and_signals_but_not_threads():
    out = run_child(f"""
        import ctypes, errno, os, socket, threading
        load('seccomp').install()
        def outcome(fn):
            try:
                fn(); return 'ok'
            except OSError as e:
                return errno.errorcode[e.errno]
        print('socket', outcome(lambda: socket.socket()))
        print('unix', outcome(lambda: socket.socket(socket.AF_UNIX)))
        print('socketpair', outcome(socket.socketpair))
        print('fork', outcome(os.fork))
        print('exec', outcome(lambda: os.execv('/bin/true', ['true'])))
        print('kill host', outcome(lambda: os.kill({os.getpid()}, 0)))
        print('kill self', outcome(lambda: os.kill(os.getpid(), 0)))
        libc = ctypes.CDLL(None, use_errno=True)
        print('clone3', libc.syscall(435, None, 0), errno.errorcode[ctypes.get_errno()])
        print('io_uring', libc.syscall(425, 1, None), errno.errorcode[ctypes.get_errno()])
        box = []
        t = threading.Thread(target=lambda: box.append('thread ran')); t.start(); t.join()
        print(box[0])
    """)
    assert out.splitlines() == [
        "socket EPERM",
        "unix EPERM",
        "socketpair EPERM",
        "fork EPERM",
        "exec EPERM",
        "kill host EPERM",
        "kill self ok",
        "clone3 -1 ENOSYS",
        "io_uring -1 EPERM",
        "thread ran",
    ]


@pytest.mark.skipif(LANDLOCK_ABI < 1, reason="this kernel has no Landlock")
def test_landlock_alone_confines_files_and_tcp(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server = socket.create_server(("127.0.0.1", 0))
    try:
        out = run_child(f"""
            import socket
            h = load('harden')
            ll = load('landlock')
            done = ll.restrict(h.python_paths(), [{str(allowed)!r}])
            print('abi', done['abi'])
            for path in ({str(secret)!r}, '/etc/hostname'):
                try:
                    open(path).read(); print('read')
                except PermissionError:
                    print('denied')
            open({str(allowed / "w.txt")!r}, 'w').write('ok'); print('wrote')
            try:
                socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=2)
                print('connected')
            except OSError as e:
                print('tcp', type(e).__name__)
            import decimal, json, ctypes  # lazy imports still work
            print('imports ok')
        """)
    finally:
        server.close()
    lines = out.splitlines()
    assert lines[:4] == [f"abi {LANDLOCK_ABI}", "denied", "denied", "wrote"]
    if LANDLOCK_ABI >= 4:
        assert lines[4] == "tcp PermissionError"
    assert lines[-1] == "imports ok"


def test_python_paths_leave_out_project_folders_and_protected_ancestors(tmp_path):
    paths = harden.python_paths()
    assert os.path.realpath(sys.base_prefix) in paths
    project = os.path.realpath(os.getcwd())
    assert project not in paths  # an editable checkout is not part of "the Python install"
    kept = harden._safe(["/", "/usr", str(tmp_path)], [str(tmp_path / "home")])
    assert kept == ["/usr"]  # "/" and tmp_path would expose the protected home


def test_hardening_refuses_a_multithreaded_worker():
    out = run_child("""
        import threading, time
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        try:
            load('harden').apply({})
        except RuntimeError as e:
            print('refused', 'single-threaded' in str(e))
    """)
    assert out.strip() == ("refused True" if LINUX else "")


@pytest.mark.skipif(not LINUX, reason="PR_SET_DUMPABLE is Linux-only")
async def test_starting_a_sandbox_makes_the_host_non_dumpable():
    box = ProcessSandbox()
    await box.start()
    try:
        pr_get_dumpable = 3
        assert ctypes.CDLL(None).prctl(pr_get_dumpable, 0, 0, 0, 0) == 0
        assert box.isolation()["host_non_dumpable"] is True
    finally:
        await box.shutdown()


@pytest.mark.skipif(not (HAS_SECCOMP and LANDLOCK_ABI >= 6), reason="needs seccomp, Landlock 6")
async def test_the_process_tier_reports_every_protection_here():
    box = ProcessSandbox()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SandboxWarning)  # nothing is missing on this machine
        await box.start()
    try:
        iso = box.isolation()
        assert {"seccomp", "landlock-fs", "landlock-net", "landlock-scope", "no-new-privs"} <= set(
            iso["protections"]
        )
        assert iso["landlock_abi"] == LANDLOCK_ABI and iso["warnings"] == []
    finally:
        await box.shutdown()


async def test_turning_hardening_off_is_reported_and_warned_about():
    box = ProcessSandbox(SandboxConfig(hardening=False))
    with pytest.warns(SandboxWarning, match="hardening is turned off"):
        await box.start()
    try:
        iso = box.isolation()
        assert not iso["seccomp"] and not iso["filesystem_confined"]
        r = await box.execute("import socket; socket.socket().close(); print('open')")
        assert r.stdout == "open\n"  # the warning is true: without hardening sockets work
    finally:
        await box.shutdown()


def test_missing_protections_are_named(monkeypatch):
    full = ["seccomp", "landlock:6", "landlock-fs"]
    assert missing_protections(full, hardening=True) == [] or not LINUX
    monkeypatch.setattr(sys, "platform", "linux")
    msgs = missing_protections(["landlock:3", "landlock-fs"], hardening=True)
    assert any("seccomp is not available" in m for m in msgs)
    assert any("cannot block TCP" in m for m in msgs)
    assert any("Landlock is not available" in m for m in missing_protections([], hardening=True))
    monkeypatch.setattr(sys, "platform", "darwin")
    (msg,) = missing_protections([], hardening=True)
    assert "only resource limits" in msg
    report = describe("process", ["core"], hardening=True, host_non_dumpable=False)
    assert report["network_blocked"] is False and report["warnings"] == [msg]
