"""The hand-compiled seccomp filter: well-formed, and its syscall numbers are libseccomp's."""

from __future__ import annotations

import ctypes
import ctypes.util
import struct

import pytest

from eval.sandbox.seccomp import _ARCHES, DENIED_SYSCALLS, build_filter, syscall_numbers


@pytest.mark.parametrize("arch", sorted(_ARCHES))
def test_filter_is_a_well_formed_bpf_program(arch):
    program = build_filter(arch)
    assert len(program) % 8 == 0 and len(program) // 8 < 4096  # BPF_MAXINSNS
    code, _jt, _jf, k = struct.unpack_from("<HBBI", program, 0)
    assert (code, k) == (0x20, 4)  # first: load the audit arch
    last_code, _, _, last_k = struct.unpack_from("<HBBI", program, len(program) - 8)
    assert (last_code, last_k) == (0x06, 0x7FFF0000)  # default: allow
    for offset in range(0, len(program), 8):  # every jump lands inside the program
        code, jt, jf, _ = struct.unpack_from("<HBBI", program, offset)
        if code & 0x07 == 0x05:
            assert offset // 8 + 1 + max(jt, jf) < len(program) // 8


@pytest.mark.parametrize("arch", sorted(_ARCHES))
def test_every_denied_syscall_has_a_number(arch):
    assert set(DENIED_SYSCALLS) <= set(syscall_numbers(arch))


@pytest.mark.parametrize(("arch", "audit_arch"), [("x86_64", 0xC000003E), ("aarch64", 0xC00000B7)])
def test_syscall_numbers_agree_with_libseccomp(arch, audit_arch):
    name = ctypes.util.find_library("seccomp")
    if name is None:
        pytest.skip("libseccomp is not installed; nothing to cross-check against")
    lib = ctypes.CDLL(name)
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    ours = syscall_numbers(arch)
    theirs = {n: lib.seccomp_syscall_resolve_name_arch(audit_arch, n.encode()) for n in ours}
    assert ours == theirs


def test_unknown_architecture_is_refused_with_a_message():
    with pytest.raises(RuntimeError, match="no syscall table"):
        build_filter("mips")
