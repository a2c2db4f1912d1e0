"""A seccomp-bpf deny-list for the sandbox worker, built and installed with ``ctypes`` alone.

Standard library only, loadable from a file path: the worker imports it after starting (see
``harden.py``) and installs the filter on itself before any model code runs. The filter is a
classic BPF program the kernel runs on every system call the worker makes; it sees the call
number, the architecture and the raw arguments (``struct seccomp_data``).

Why a deny-list and not an allow-list: CPython and the C libraries that extension modules load
use a long and changing set of system calls (``mmap`` variants, ``futex``, ``getrandom``,
``statx``, ``rseq`` ...); an allow-list breaks ordinary code on the next glibc. The calls that
matter for escaping are few and stable, and Landlock (see ``landlock.py``) fences the file
system independently.

What the filter does, in order:

1. The architecture must be the one the filter was built for (``AUDIT_ARCH_*``); any other
   (for example 32-bit ``int 0x80`` calls from a 64-bit process) kills the process, because
   syscall numbers differ between ABIs and the rest of the filter would check the wrong calls.
2. On x86_64, x32-ABI numbers (bit 30 set) are refused: they alias the same kernel functions
   under different numbers.
3. ``clone3`` returns ENOSYS: its flags live in a struct in memory, which BPF cannot read, so it
   cannot be told apart from a fork. glibc (2.34+) then falls back to ``clone`` for threads.
4. ``clone`` is allowed only with ``CLONE_THREAD`` set and no ``CLONE_NEW*`` namespace flag:
   new threads of the worker, never a new process.
5. ``kill`` is allowed only for the worker's own pid (or 0, its own process group, which holds
   nothing else); ``tgkill`` only inside its own thread group. Python's ``os.kill(os.getpid())``,
   ``signal.raise_signal`` and ``abort()`` keep working; signalling the host does not.
6. A fixed list (below) returns EPERM: sockets of every family, fork/vfork/exec, ptrace and
   cross-process memory access, io_uring (it performs I/O the filter never sees), namespaces
   and mounts, and a handful of root-only calls that matter when the worker runs as root
   (module loading, reboot, clock setting, ``open_by_handle_at``...).
7. Everything else is allowed.

Syscall numbers were checked against ``asm/unistd_64.h`` (x86_64) and ``asm-generic/unistd.h``
(aarch64 uses the generic table); ``fork``, ``vfork``, ``iopl`` and ``ioperm`` do not exist on
aarch64.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

__all__ = ["DENIED", "build_filter", "install", "supported"]

# <linux/audit.h>: AUDIT_ARCH_X86_64 = EM_X86_64 | 64BIT | LE; AUDIT_ARCH_AARCH64 likewise.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000

# Return actions (<linux/seccomp.h>); the low 16 bits of ERRNO carry the errno value.
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# Classic BPF opcodes (<linux/bpf_common.h>).
LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = 32-bit word of seccomp_data at offset k
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K: jump if A & k
RET_K = 0x06  # BPF_RET | BPF_K

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16

CLONE_THREAD = 0x00010000
# CLONE_NEWTIME | NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NEW_MASK = 0x00000080 | 0x00020000 | 0x7E000000

PR_SET_NO_NEW_PRIVS = 38
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

# name: (x86_64 number, aarch64 number); None where the architecture has no such call.
DENIED: dict[str, tuple[int | None, int | None]] = {
    # Network: no socket of any family (inet, inet6, unix, netlink, packet...). The worker
    # talks to the host over inherited pipes, which need none of these.
    "socket": (41, 198),
    "socketpair": (53, 199),
    "connect": (42, 203),
    "bind": (49, 200),
    "listen": (50, 201),
    "accept": (43, 202),
    "accept4": (288, 242),
    # New processes and programs. (clone/clone3 are handled apart, see the module docstring.)
    "fork": (57, None),
    "vfork": (58, None),
    "execve": (59, 221),
    "execveat": (322, 281),
    # Reading or steering other processes.
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "process_madvise": (440, 440),
    "kcmp": (312, 272),
    "pidfd_open": (434, 434),
    "pidfd_getfd": (438, 438),
    "pidfd_send_signal": (424, 424),
    "tkill": (200, 130),  # obsolete; takes a bare tid that BPF cannot check
    "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240),
    "migrate_pages": (256, 238),
    "move_pages": (279, 239),
    # io_uring runs reads, writes, connects and opens in the kernel without these filters.
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    # Namespaces, mounts and changing root (escape routes when the worker is root).
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "mount_setattr": (442, 442),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    # File handles bypass path-based checks (Landlock) for a root worker.
    "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265),
    # Kernel attack surface and machine-wide state a root worker could change.
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "syslog": (103, 116),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "clock_adjtime": (305, 266),
    "adjtimex": (159, 171),
    "sethostname": (170, 161),
    "setdomainname": (171, 162),
    "iopl": (172, None),
    "ioperm": (173, None),
}
# Handled apart: (x86_64, aarch64).
NR_CLONE = (56, 220)
NR_CLONE3 = (435, 435)
NR_KILL = (62, 129)
NR_TGKILL = (234, 131)


def _arch() -> str | None:
    machine = os.uname().machine.lower()  # not the platform module: it costs ms to import
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return arch if arch in AUDIT_ARCH else None


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    # struct sock_filter { __u16 code; __u8 jt; __u8 jf; __u32 k; }
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _arg_lo(i: int) -> int:
    """Offset of the low 32 bits of argument ``i`` (the kernel truncates pids and these flags
    to 32 bits, so the high word cannot smuggle anything past the check)."""
    return OFF_ARGS + 8 * i + (0 if sys.byteorder == "little" else 4)


def build_filter(arch: str, pid: int) -> bytes:
    """The filter program for ``arch`` and a worker whose pid is ``pid``, as raw sock_filters."""
    col = 0 if arch == "x86_64" else 1
    deny = _insn(RET_K, RET_ERRNO | errno.EPERM)
    allow = _insn(RET_K, RET_ALLOW)
    prog = [
        _insn(LD_W_ABS, OFF_ARCH),
        _insn(JEQ_K, AUDIT_ARCH[arch], jt=1),
        _insn(RET_K, RET_KILL_PROCESS),
        _insn(LD_W_ABS, OFF_NR),
    ]
    if arch == "x86_64":
        prog += [_insn(JGE_K, X32_SYSCALL_BIT, jf=1), deny]
    prog += [_insn(JEQ_K, NR_CLONE3[col], jf=1), _insn(RET_K, RET_ERRNO | errno.ENOSYS)]
    for nr in (pair[col] for pair in DENIED.values()):
        if nr is not None:
            prog += [_insn(JEQ_K, nr, jf=1), deny]
    # clone: a thread (CLONE_THREAD) in no new namespace; anything else is a new process.
    prog += [
        _insn(JEQ_K, NR_CLONE[col], jf=5),
        _insn(LD_W_ABS, _arg_lo(0)),
        _insn(JSET_K, CLONE_NEW_MASK, jt=2),
        _insn(JSET_K, CLONE_THREAD, jf=1),
        allow,
        deny,
    ]
    # kill(pid, sig): only ourselves (pid) or our own process group (0).
    prog += [
        _insn(JEQ_K, NR_KILL[col], jf=5),
        _insn(LD_W_ABS, _arg_lo(0)),
        _insn(JEQ_K, pid, jt=2),
        _insn(JEQ_K, 0, jt=1),
        deny,
        allow,
    ]
    # tgkill(tgid, tid, sig): only threads of our own thread group.
    prog += [
        _insn(JEQ_K, NR_TGKILL[col], jf=4),
        _insn(LD_W_ABS, _arg_lo(0)),
        _insn(JEQ_K, pid, jt=1),
        deny,
        allow,
    ]
    prog.append(allow)
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def supported() -> bool:
    """Whether this kernel and architecture can take the filter (without installing it)."""
    if not sys.platform.startswith("linux") or _arch() is None:
        return False
    libc = _libc()
    # PR_GET_SECCOMP fails with EINVAL on kernels built without CONFIG_SECCOMP.
    return libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0


def install() -> None:
    """Install the filter on the calling process. Irreversible; children would inherit it.

    Sets ``PR_SET_NO_NEW_PRIVS`` first: the kernel requires it of callers without
    CAP_SYS_ADMIN, and it stops setuid binaries from regaining privileges. The worker must be
    single-threaded here: without ``SECCOMP_FILTER_FLAG_TSYNC`` only the calling thread is
    filtered, so ``harden.py`` checks the thread count before calling.
    """
    arch = _arch()
    if arch is None:
        raise OSError(errno.ENOSYS, f"no seccomp filter for {os.uname().machine}")
    code = build_filter(arch, os.getpid())
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = _libc()
    c_ulong = ctypes.c_ulong
    if libc.prctl(PR_SET_NO_NEW_PRIVS, c_ulong(1), c_ulong(0), c_ulong(0), c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"PR_SET_NO_NEW_PRIVS failed: {os.strerror(err)}")
    rc = libc.prctl(
        PR_SET_SECCOMP,
        c_ulong(SECCOMP_MODE_FILTER),
        ctypes.byref(prog),
        c_ulong(0),
        c_ulong(0),
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"installing the seccomp filter failed: {os.strerror(err)}")
