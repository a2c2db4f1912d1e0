"""A seccomp-bpf allow-list for the sandbox worker, built and installed with ``ctypes`` alone.

Standard library only, loadable from a file path: the worker imports it after starting (see
``harden.py``) and installs the filter on itself before any model code runs. The filter is a
classic BPF program the kernel runs on every system call the worker makes; it sees the call
number, the architecture and the raw arguments (``struct seccomp_data``).

Default deny: every system call not named here fails with ENOSYS (as in Docker's default
profile). An allow-list was chosen over the earlier deny-list after a review showed that
"everything not known to be dangerous" kept admitting calls that act on *other* processes
(``prlimit64`` on the host, ``setpriority``, ``sched_setaffinity``, ``ioprio_set``...) and
calls that undo the worker's own protections (``prctl(PR_SET_PDEATHSIG, 0)``). What made a
deny-list attractive, that CPython and glibc use a long and changing set of calls, is handled
by the choice of ENOSYS for unknown calls: it is the answer an old kernel gives, and glibc and
CPython fall back from new calls (``clone3``, ``statx``, ``fchmodat2``, ``rseq``...) when they
get it. The allowed set was taken from traces of the worker running ordinary standard-library
code (files, ``re``, ``json``, threads, ``sqlite3``, compression, ``mmap``, ``ctypes``) and is
kept wide for calls that only touch the worker itself. Landlock (see ``landlock.py``) fences the
file system independently.

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
5. Calls that name a process (``kill``, ``tgkill``, ``prlimit64``, ``sched_{get,set}*``) are
   allowed only for the worker itself: pid 0 or its own pid. ``getpriority``/``setpriority``
   only for ``PRIO_PROCESS`` and the worker. Python's ``os.kill(os.getpid())``,
   ``resource.setrlimit``, ``os.sched_setaffinity(0, ...)`` and ``os.nice`` keep working;
   aiming any of them at the host or another process fails with EPERM.
6. ``prctl`` is allowed only for options that read state or touch nothing but the calling
   thread (``PR_SET_NAME``, ``PR_GET_*``...). Options that would undo a protection after
   hardening (``PR_SET_PDEATHSIG``, ``PR_SET_DUMPABLE``, ``PR_SET_PTRACER``, ``PR_SET_SECCOMP``,
   ``PR_SET_NO_NEW_PRIVS``, capabilities, ``PR_SET_MM``, ``PR_SCHED_CORE``...) fail with EPERM.
7. The calls of :data:`ALLOWED` (file, memory, thread, signal, time and poll calls on the
   worker's own descriptors and memory) are allowed.
8. A fixed list (:data:`DENIED`) returns EPERM: sockets of every family, fork/vfork/exec, ptrace
   and cross-process memory access, pidfds, ``ioprio_set``, io_uring (it performs I/O the filter
   never sees), namespaces and mounts, identity and capability changes, System V IPC, and the
   root-only calls (module loading, reboot, clock setting, ``open_by_handle_at``...).
9. Everything else returns ENOSYS.

``harden.py`` also drops every capability of a worker that runs as root before the filter goes
in, so ``setpriority``/``setrlimit`` on itself cannot raise its priority or limits either.

The kernel (5.11+) caches the verdict of calls whose outcome does not depend on their
arguments, so the allowed calls cost nothing per call after the first; only the calls of steps
3-6 run the program.

Syscall numbers were checked against ``asm/unistd_64.h`` (x86_64) and ``asm-generic/unistd.h``
(aarch64 uses the generic table); calls numbered 424 and up are the same on both. ``None``
marks a call the architecture does not have (aarch64 has no ``open``, ``fork``, ``poll``...).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from collections.abc import Mapping

__all__ = [
    "ALLOWED",
    "DENIED",
    "PRCTL_ALLOWED",
    "SELF_ONLY",
    "build_filter",
    "install",
    "supported",
]

# <linux/audit.h>: AUDIT_ARCH_X86_64 = EM_X86_64 | 64BIT | LE; AUDIT_ARCH_AARCH64 likewise.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000

# Return actions (<linux/seccomp.h>); the low 16 bits of ERRNO carry the errno value.
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ENOSYS = RET_ERRNO | errno.ENOSYS
RET_ALLOW = 0x7FFF0000

# Classic BPF opcodes (<linux/bpf_common.h>).
LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = 32-bit word of seccomp_data at offset k
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K: jump if A & k
JA = 0x05  # BPF_JMP | BPF_JA: jump k instructions forward
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
    "modify_ldt": (154, None),
    "vhangup": (153, 58),
    "lookup_dcookie": (212, 18),
    # Acting on other processes, or undoing the worker's own protections.
    "ioprio_set": (251, 30),
    "ioprio_get": (252, 31),
    "get_robust_list": (274, 100),
    "process_mrelease": (448, 448),
    "seccomp": (317, 277),
    "setuid": (105, 146),  # a credential change also clears PR_SET_PDEATHSIG
    "setgid": (106, 144),
    "setreuid": (113, 145),
    "setregid": (114, 143),
    "setresuid": (117, 147),
    "setresgid": (119, 149),
    "setfsuid": (122, 151),
    "setfsgid": (123, 152),
    "setgroups": (116, 159),
    "capset": (126, 91),
    "setpgid": (109, 154),  # leaving the process group would escape the host's killpg
    "setsid": (112, 157),
    "fanotify_init": (300, 262),
    "fanotify_mark": (301, 263),
    # System V IPC and POSIX message queues: channels to other processes of the same user.
    "msgget": (68, 186),
    "msgsnd": (69, 189),
    "msgrcv": (70, 188),
    "msgctl": (71, 187),
    "semget": (64, 190),
    "semop": (65, 193),
    "semctl": (66, 191),
    "semtimedop": (220, 192),
    "shmget": (29, 194),
    "shmat": (30, 196),
    "shmdt": (67, 197),
    "shmctl": (31, 195),
    "mq_open": (240, 180),
    "mq_unlink": (241, 181),
    "mq_timedsend": (242, 182),
    "mq_timedreceive": (243, 183),
    "mq_notify": (244, 184),
    "mq_getsetattr": (245, 185),
}

# Allowed whatever their arguments: they act only on the worker's own descriptors, memory,
# threads, signals and files (which Landlock fences). name: (x86_64, aarch64).
ALLOWED: dict[str, tuple[int | None, int | None]] = {
    # Reading and writing descriptors the worker holds.
    "read": (0, 63),
    "write": (1, 64),
    "readv": (19, 65),
    "writev": (20, 66),
    "pread64": (17, 67),
    "pwrite64": (18, 68),
    "preadv": (295, 69),
    "pwritev": (296, 70),
    "preadv2": (327, 286),
    "pwritev2": (328, 287),
    "lseek": (8, 62),
    "close": (3, 57),
    "close_range": (436, 436),
    "dup": (32, 23),
    "dup2": (33, None),
    "dup3": (292, 24),
    "fcntl": (72, 25),
    "flock": (73, 32),
    "fsync": (74, 82),
    "fdatasync": (75, 83),
    "sync_file_range": (277, 84),
    "ftruncate": (77, 46),
    "truncate": (76, 45),
    "fallocate": (285, 47),
    "fadvise64": (221, 223),
    "readahead": (187, 213),
    "sendfile": (40, 71),
    "copy_file_range": (326, 285),
    "splice": (275, 76),
    "tee": (276, 77),
    "ioctl": (16, 29),
    "pipe": (22, None),
    "pipe2": (293, 59),
    # Files and folders (what may be opened is Landlock's business).
    "open": (2, None),
    "openat": (257, 56),
    "openat2": (437, 437),
    "creat": (85, None),
    "stat": (4, None),
    "fstat": (5, 80),
    "lstat": (6, None),
    "newfstatat": (262, 79),
    "statx": (332, 291),
    "statfs": (137, 43),
    "fstatfs": (138, 44),
    "access": (21, None),
    "faccessat": (269, 48),
    "faccessat2": (439, 439),
    "readlink": (89, None),
    "readlinkat": (267, 78),
    "getdents": (78, None),
    "getdents64": (217, 61),
    "getcwd": (79, 17),
    "chdir": (80, 49),
    "fchdir": (81, 50),
    "mkdir": (83, None),
    "mkdirat": (258, 34),
    "rmdir": (84, None),
    "unlink": (87, None),
    "unlinkat": (263, 35),
    "rename": (82, None),
    "renameat": (264, 38),
    "renameat2": (316, 276),
    "link": (86, None),
    "linkat": (265, 37),
    "symlink": (88, None),
    "symlinkat": (266, 36),
    "chmod": (90, None),
    "fchmod": (91, 52),
    "fchmodat": (268, 53),
    "fchmodat2": (452, 452),
    "chown": (92, None),
    "fchown": (93, 55),
    "lchown": (94, None),
    "fchownat": (260, 54),
    "utime": (132, None),
    "utimes": (235, None),
    "utimensat": (280, 88),
    "futimesat": (261, None),
    "umask": (95, 166),
    "mknod": (133, None),  # FIFOs; device nodes need CAP_MKNOD, which the worker lacks
    "mknodat": (259, 33),
    "getxattr": (191, 8),
    "lgetxattr": (192, 9),
    "fgetxattr": (193, 10),
    "listxattr": (194, 11),
    "llistxattr": (195, 12),
    "flistxattr": (196, 13),
    "setxattr": (188, 5),
    "lsetxattr": (189, 6),
    "fsetxattr": (190, 7),
    "removexattr": (197, 14),
    "lremovexattr": (198, 15),
    "fremovexattr": (199, 16),
    "inotify_init": (253, None),
    "inotify_init1": (294, 26),
    "inotify_add_watch": (254, 27),
    "inotify_rm_watch": (255, 28),
    # Memory.
    "brk": (12, 214),
    "mmap": (9, 222),
    "munmap": (11, 215),
    "mremap": (25, 216),
    "mprotect": (10, 226),
    "madvise": (28, 233),
    "mincore": (27, 232),
    "msync": (26, 227),
    "mlock": (149, 228),
    "munlock": (150, 229),
    "mlock2": (325, 284),
    "munlockall": (152, 231),
    "membarrier": (324, 283),
    "memfd_create": (319, 279),
    "pkey_mprotect": (329, 288),
    "pkey_alloc": (330, 289),
    "pkey_free": (331, 290),
    "get_mempolicy": (239, 236),
    "set_mempolicy": (238, 237),
    "mbind": (237, 235),
    "map_shadow_stack": (453, None),
    "mseal": (462, 462),
    # Threads, exit, time.
    "futex": (202, 98),
    "futex_waitv": (449, 449),
    "set_robust_list": (273, 99),
    "set_tid_address": (218, 96),
    "rseq": (334, 293),
    "sched_yield": (24, 124),
    "sched_get_priority_max": (146, 125),
    "sched_get_priority_min": (147, 126),
    "gettid": (186, 178),
    "exit": (60, 93),
    "exit_group": (231, 94),
    "restart_syscall": (219, 128),
    "arch_prctl": (158, None),  # the calling thread's FS/GS base and CET state
    "nanosleep": (35, 101),
    "clock_nanosleep": (230, 115),
    "clock_gettime": (228, 113),
    "clock_getres": (229, 114),
    "gettimeofday": (96, 169),
    "time": (201, None),
    "times": (100, 153),
    "getrusage": (98, 165),
    "sysinfo": (99, 179),
    "uname": (63, 160),
    "getrandom": (318, 278),
    "getcpu": (309, 168),
    # Signals to and timers of the worker itself (kill/tgkill are checked apart).
    "rt_sigaction": (13, 134),
    "rt_sigprocmask": (14, 135),
    "rt_sigreturn": (15, 139),
    "rt_sigpending": (127, 136),
    "rt_sigtimedwait": (128, 137),
    "rt_sigsuspend": (130, 133),
    "sigaltstack": (131, 132),
    "pause": (34, None),
    "alarm": (37, None),
    "getitimer": (36, 102),
    "setitimer": (38, 103),
    "timer_create": (222, 107),
    "timer_settime": (223, 110),
    "timer_gettime": (224, 108),
    "timer_getoverrun": (225, 109),
    "timer_delete": (226, 111),
    "signalfd": (282, None),
    "signalfd4": (289, 74),
    "eventfd": (284, None),
    "eventfd2": (290, 19),
    "timerfd_create": (283, 85),
    "timerfd_settime": (286, 86),
    "timerfd_gettime": (287, 87),
    "select": (23, None),
    "pselect6": (270, 72),
    "poll": (7, None),
    "ppoll": (271, 73),
    "epoll_create": (213, None),
    "epoll_create1": (291, 20),
    "epoll_ctl": (233, 21),
    "epoll_wait": (232, None),
    "epoll_pwait": (281, 22),
    "epoll_pwait2": (441, 441),
    # Who am I (reading only; changing identity is denied).
    "getpid": (39, 172),
    "getppid": (110, 173),
    "getuid": (102, 174),
    "geteuid": (107, 175),
    "getgid": (104, 176),
    "getegid": (108, 177),
    "getresuid": (118, 148),
    "getresgid": (120, 150),
    "getgroups": (115, 158),
    "getpgid": (121, 155),
    "getpgrp": (111, None),
    "getsid": (124, 156),
    "capget": (125, 90),
    "wait4": (61, 260),  # the worker has no children to wait for
    "waitid": (247, 95),
    "getrlimit": (97, 163),  # the worker's own limits; raising a hard one needs a capability
    "setrlimit": (160, 164),
}

# Allowed only when their first argument (a pid) is 0 or the worker's own pid.
SELF_ONLY: dict[str, tuple[int | None, int | None]] = {
    "kill": (62, 129),  # 0 is the worker's own process group, which holds nothing else
    "tgkill": (234, 131),
    "prlimit64": (302, 261),
    "sched_setaffinity": (203, 122),
    "sched_getaffinity": (204, 123),
    "sched_setscheduler": (144, 119),
    "sched_getscheduler": (145, 120),
    "sched_setparam": (142, 118),
    "sched_getparam": (143, 121),
    "sched_setattr": (314, 274),
    "sched_getattr": (315, 275),
    "sched_rr_get_interval": (148, 127),
}
# getpriority/setpriority(which, who, ...): only PRIO_PROCESS (0) and the worker itself.
PRIORITY = {"getpriority": (140, 141), "setpriority": (141, 140)}
PRIO_PROCESS = 0
NR_PRCTL = (157, 167)
# prctl options that read state or change only the calling thread. Every other option fails.
PRCTL_ALLOWED = {
    "PR_GET_PDEATHSIG": 2,
    "PR_GET_DUMPABLE": 3,
    "PR_GET_UNALIGN": 5,
    "PR_GET_KEEPCAPS": 7,
    "PR_GET_FPEMU": 9,
    "PR_GET_FPEXC": 11,
    "PR_GET_TIMING": 13,
    "PR_SET_NAME": 15,  # the thread's name (Python's threading sets it)
    "PR_GET_NAME": 16,
    "PR_GET_ENDIAN": 19,
    "PR_GET_SECCOMP": 21,
    "PR_CAPBSET_READ": 23,
    "PR_GET_TSC": 25,
    "PR_GET_SECUREBITS": 27,
    "PR_SET_TIMERSLACK": 29,
    "PR_GET_TIMERSLACK": 30,
    "PR_MCE_KILL_GET": 34,
    "PR_GET_CHILD_SUBREAPER": 37,
    "PR_GET_NO_NEW_PRIVS": 39,
    "PR_GET_TID_ADDRESS": 40,
    "PR_SET_THP_DISABLE": 41,
    "PR_GET_THP_DISABLE": 42,
    "PR_GET_FP_MODE": 46,
    "PR_SVE_SET_VL": 50,
    "PR_SVE_GET_VL": 51,
    "PR_GET_SPECULATION_CTRL": 52,
    "PR_SET_TAGGED_ADDR_CTRL": 55,
    "PR_GET_TAGGED_ADDR_CTRL": 56,
    "PR_GET_IO_FLUSHER": 58,
    "PR_SME_SET_VL": 63,
    "PR_SME_GET_VL": 64,
    "PR_SET_MDWE": 65,  # can only take rights away
    "PR_GET_MDWE": 66,
    "PR_GET_MEMORY_MERGE": 68,
    "PR_SET_VMA": 0x53564D41,  # names the caller's own anonymous mappings (glibc)
}
# Handled apart: (x86_64, aarch64).
NR_CLONE = (56, 220)
NR_CLONE3 = (435, 435)
NR_KILL = SELF_ONLY["kill"]
NR_TGKILL = SELF_ONLY["tgkill"]


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


def _numbers(table: Mapping[str, tuple[int | None, int | None]], col: int) -> list[int]:
    """Column ``col`` of a table of system call numbers, leaving out the calls an
    architecture does not have (None)."""
    return [nr for pair in table.values() if (nr := pair[col]) is not None]


def _any_of(nrs: list[int], action: bytes) -> list[bytes]:
    """``if A in nrs: return action``, in blocks whose jumps fit BPF's 8-bit offsets."""
    out: list[bytes] = []
    for i in range(0, len(nrs), 200):
        block = nrs[i : i + 200]
        n = len(block)
        out += [_insn(JEQ_K, nr, jt=n - j) for j, nr in enumerate(block)]
        out += [_insn(JA, 1), action]
    return out


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
    prog += [_insn(JEQ_K, NR_CLONE3[col], jf=1), _insn(RET_K, RET_ENOSYS)]
    # clone: a thread (CLONE_THREAD) in no new namespace; anything else is a new process.
    prog += [
        _insn(JEQ_K, NR_CLONE[col], jf=5),
        _insn(LD_W_ABS, _arg_lo(0)),
        _insn(JSET_K, CLONE_NEW_MASK, jt=2),
        _insn(JSET_K, CLONE_THREAD, jf=1),
        allow,
        deny,
    ]
    # Calls naming a pid: only the worker itself (its pid, or 0 meaning "me").
    self_only = _numbers(SELF_ONLY, col)
    k = len(self_only)
    prog += [_insn(JEQ_K, nr, jt=k - j) for j, nr in enumerate(self_only)]
    prog += [
        _insn(JA, 5),
        _insn(LD_W_ABS, _arg_lo(0)),
        _insn(JEQ_K, pid, jt=2),
        _insn(JEQ_K, 0, jt=1),
        deny,
        allow,
    ]
    # getpriority/setpriority(PRIO_PROCESS, 0 or own pid, ...).
    prio = _numbers(PRIORITY, col)
    prog += [_insn(JEQ_K, nr, jt=len(prio) - j) for j, nr in enumerate(prio)]
    prog += [
        _insn(JA, 7),
        _insn(LD_W_ABS, _arg_lo(0)),
        _insn(JEQ_K, PRIO_PROCESS, jf=3),
        _insn(LD_W_ABS, _arg_lo(1)),
        _insn(JEQ_K, pid, jt=2),
        _insn(JEQ_K, 0, jt=1),
        deny,
        allow,
    ]
    # prctl: only the options of PRCTL_ALLOWED.
    options = sorted(PRCTL_ALLOWED.values())
    m = len(options)
    prog += [_insn(JEQ_K, NR_PRCTL[col], jf=m + 3), _insn(LD_W_ABS, _arg_lo(0))]
    prog += [_insn(JEQ_K, opt, jt=m - j) for j, opt in enumerate(options)]
    prog += [deny, allow]
    prog += _any_of(_numbers(ALLOWED, col), allow)
    prog += _any_of(_numbers(DENIED, col), deny)
    prog.append(_insn(RET_K, RET_ENOSYS))
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
    mode: int = libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0)
    return mode >= 0


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
