"""A seccomp deny-list for the code sandbox, compiled to classic BPF by hand.

bubblewrap's `--seccomp FD` reads a compiled filter (an array of `struct sock_filter`)
and installs it, with `no_new_privs`, on the sandboxed command; every process the
model's program starts inherits it. We build the program here with `struct` instead of
depending on libseccomp's Python bindings (not on PyPI for every platform, not in the
shared venv). The numbers below were checked against libseccomp's own tables
(`tests/eval/test_sandbox_seccomp.py` re-checks them wherever libseccomp is installed).

What the filter does, in order:
- a syscall from a foreign ABI (e.g. 32-bit `int 0x80` on x86-64, whose numbers differ)
  kills the process: a deny-list keyed on native numbers says nothing about them;
- x32 syscalls (bit 30 set on x86-64) fail with ENOSYS, for the same reason;
- the listed syscalls fail with EPERM (namespaces, mounts, tracing, kernel keyrings,
  eBPF, perf, io_uring, module loading, clock setting, ...);
- `clone3` fails with ENOSYS (its flags sit in memory a filter cannot read; glibc then
  falls back to `clone`), and `clone` with any CLONE_NEW* flag fails with EPERM;
- `socket` with a family other than AF_UNIX fails with EAFNOSUPPORT (the network
  namespace has no route anyway; this is a second wall);
- `ioctl(TIOCSTI)` (pushing keystrokes into a terminal) fails with EPERM;
- everything else is allowed.
"""

from __future__ import annotations

import errno
import platform
import struct

# Classic BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

# Offsets into struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6].
# Only little-endian targets are supported, so the low word of args[i] is at 16 + 8 i.
_OFF_NR, _OFF_ARCH, _OFF_ARG0, _OFF_ARG1 = 0, 4, 16, 24

_AF_UNIX = 1
_TIOCSTI = 0x5412
_X32_SYSCALL_BIT = 0x40000000
_CLONE_NEW_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "open_by_handle_at",
    "name_to_handle_at", "swapon", "swapoff", "reboot", "acct", "settimeofday",
    "clock_settime", "adjtimex", "clock_adjtime", "syslog", "lookup_dcookie",
    "quotactl", "vhangup",
)  # fmt: skip
"""Syscalls that fail with EPERM inside the sandbox (no program a grader runs needs them)."""

# Per-architecture: AUDIT_ARCH value, whether x32 numbers must be refused, and numbers.
_ARCHES: dict[str, tuple[int, bool, dict[str, int]]] = {
    "x86_64": (0xC000003E, True, {
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
        "pidfd_getfd": 438, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
        "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "unshare": 272, "setns": 308, "kexec_load": 246,
        "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
        "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "keyctl": 250, "add_key": 248,
        "request_key": 249, "open_by_handle_at": 304, "name_to_handle_at": 303, "swapon": 167,
        "swapoff": 168, "reboot": 169, "acct": 163, "settimeofday": 164, "clock_settime": 227,
        "adjtimex": 159, "clock_adjtime": 305, "syslog": 103, "lookup_dcookie": 212,
        "quotactl": 179, "vhangup": 153,
        "socket": 41, "clone": 56, "clone3": 435, "ioctl": 16,
    }),
    "aarch64": (0xC00000B7, False, {
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
        "pidfd_getfd": 438, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
        "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "unshare": 97, "setns": 268, "kexec_load": 104,
        "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106,
        "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "keyctl": 219, "add_key": 217,
        "request_key": 218, "open_by_handle_at": 265, "name_to_handle_at": 264, "swapon": 224,
        "swapoff": 225, "reboot": 142, "acct": 89, "settimeofday": 170, "clock_settime": 112,
        "adjtimex": 171, "clock_adjtime": 266, "syslog": 116, "lookup_dcookie": 18,
        "quotactl": 60, "vhangup": 58,
        "socket": 198, "clone": 220, "clone3": 435, "ioctl": 29,
    }),
}  # fmt: skip


def syscall_numbers(arch: str | None = None) -> dict[str, int]:
    """Syscall numbers the filter uses on `arch` (default: this machine's)."""
    return dict(_ARCHES[_arch_name(arch)][2])


def _arch_name(arch: str | None) -> str:
    name = arch or platform.machine()
    name = {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)
    if name not in _ARCHES:
        raise RuntimeError(
            f"the sandbox's seccomp filter has no syscall table for {name!r} "
            f"(supported: {', '.join(_ARCHES)}); add one to eval/sandbox/seccomp.py"
        )
    return name


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _ret(action: int) -> bytes:
    return _ins(_RET_K, action)


def _errno(err: int) -> int:
    return _RET_ERRNO | err


def build_filter(arch: str | None = None) -> bytes:
    """The compiled filter for `arch` (default: this machine), ready for `bwrap --seccomp`."""
    audit_arch, refuse_x32, nr = _ARCHES[_arch_name(arch)]
    prog = [
        _ins(_LD_W_ABS, _OFF_ARCH),
        _ins(_JEQ_K, audit_arch, jt=1, jf=0),
        _ret(_RET_KILL_PROCESS),
        _ins(_LD_W_ABS, _OFF_NR),
    ]
    if refuse_x32:
        prog += [_ins(_JGE_K, _X32_SYSCALL_BIT, jt=0, jf=1), _ret(_errno(errno.ENOSYS))]
    for name in DENIED_SYSCALLS:  # two instructions each, so every jump is short
        prog += [_ins(_JEQ_K, nr[name], jt=0, jf=1), _ret(_errno(errno.EPERM))]
    prog += [_ins(_JEQ_K, nr["clone3"], jt=0, jf=1), _ret(_errno(errno.ENOSYS))]
    # Argument checks reload the accumulator, so each block ends in a return.
    prog += [
        _ins(_JEQ_K, nr["socket"], jt=0, jf=4),
        _ins(_LD_W_ABS, _OFF_ARG0),
        _ins(_JEQ_K, _AF_UNIX, jt=0, jf=1),
        _ret(_RET_ALLOW),
        _ret(_errno(errno.EAFNOSUPPORT)),
        _ins(_JEQ_K, nr["clone"], jt=0, jf=4),
        _ins(_LD_W_ABS, _OFF_ARG0),
        _ins(_JSET_K, _CLONE_NEW_FLAGS, jt=0, jf=1),
        _ret(_errno(errno.EPERM)),
        _ret(_RET_ALLOW),
        _ins(_JEQ_K, nr["ioctl"], jt=0, jf=4),
        _ins(_LD_W_ABS, _OFF_ARG1),
        _ins(_JEQ_K, _TIOCSTI, jt=0, jf=1),
        _ret(_errno(errno.EPERM)),
        _ret(_RET_ALLOW),
        _ret(_RET_ALLOW),
    ]
    return b"".join(prog)
