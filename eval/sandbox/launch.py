"""How a sandbox is launched: bubblewrap's command line, the interpreter and compilers it
may use, and the small payloads (seccomp filter, runner bytecode) it reads from pipes.
The threat model these choices answer is in the package docstring (eval/sandbox/__init__.py)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading

from eval.sandbox import runner as proto
from eval.sandbox.seccomp import build_filter

INSTALL_HINT = "apt-get install bubblewrap"
RUNNER_SOURCE = open(proto.__file__, encoding="utf-8").read()  # noqa: SIM115 (read once)


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here (no bubblewrap, no interpreter or compiler)."""


class SandboxError(RuntimeError):
    """The sandbox machinery failed before the program ran (not the program's fault)."""


def find_bwrap() -> str | None:
    found = shutil.which("bwrap")
    return found or ("/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None)


def sandbox_python() -> str:
    """The interpreter the sandbox runs: a system Python under /usr (mounted read-only).

    The caller's own interpreter often lives in a home directory or a virtualenv that
    the sandbox does not (and should not) mount. Override with OMNIOPD_SANDBOX_PYTHON.
    """
    override = os.environ.get("OMNIOPD_SANDBOX_PYTHON")
    for candidate in ([override] if override else ["/usr/bin/python3", "/usr/local/bin/python3"]):
        if os.path.isfile(os.path.realpath(candidate)):
            return candidate
    raise SandboxUnavailable(
        "the sandbox needs a system Python 3 under /usr (apt-get install python3), "
        "or OMNIOPD_SANDBOX_PYTHON pointing at one"
    )


def compiler_path(compiler: str) -> str:
    """A compiler under /usr (the only tree the sandbox mounts)."""
    path = shutil.which(compiler, path="/usr/bin:/bin")
    if path is None or not os.path.realpath(path).startswith("/usr/"):
        raise SandboxUnavailable(
            f"{compiler} is not installed under /usr/bin; C and C++ programs need it "
            f"(apt-get install {'g++' if compiler == 'g++' else 'gcc'})"
        )
    return path


def bwrap_argv(bwrap: str, tmpfs_bytes: int, seccomp_fd: int, runner_fd: int, info_fd: int) -> list[str]:
    """bubblewrap's command line: fresh namespaces, read-only /usr, small writable tmpfs.

    --as-pid-1 makes the runner the namespace's init: the program cannot signal it, and
    when it exits the kernel kills and reaps everything else before outer bubblewrap can
    reap it, so outer bubblewrap's exit proves the namespace is empty.
    """
    tmpfs = str(tmpfs_bytes)
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--as-pid-1", "--die-with-parent"]
    argv += ["--new-session", "--clearenv", "--info-fd", str(info_fd)]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):  # merged /usr: recreate the symlink
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime"):
        argv += ["--ro-bind-try", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", tmpfs, "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    argv += ["--size", tmpfs, "--tmpfs", "/tmp", "--size", tmpfs, "--tmpfs", "/work", "--chdir", "/work"]
    argv += ["--file", str(runner_fd), "/runner.pyc", "--remount-ro", "/", "--hostname", "sandbox"]
    for key, value in {**proto.CHILD_ENV, "HOME": "/work", "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}.items():
        argv += ["--setenv", key, value]
    return [*argv, "--seccomp", str(seccomp_fd)]


@functools.cache
def seccomp_filter() -> bytes:
    return build_filter()


def pipe_with(data: bytes) -> int:
    """A pipe's read end with `data` already in it (must fit the 64 KiB pipe buffer)."""
    if len(data) > 65536:
        raise ValueError("data larger than a pipe buffer")
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    return read_fd


_BYTECODE: dict[str, bytes] = {}
_BYTECODE_LOCK = threading.Lock()
_COMPILE_RUNNER = (
    "import sys, marshal, importlib.util\n"
    "code = compile(sys.stdin.read(), '/runner.py', 'exec')\n"
    "sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code))\n"
)


def runner_bytecode(python: str) -> bytes:
    """The runner as a .pyc for the sandbox's interpreter (compiled by it, once per process)."""
    with _BYTECODE_LOCK:
        if python not in _BYTECODE:
            done = subprocess.run(
                [python, "-I", "-S", "-c", _COMPILE_RUNNER], input=RUNNER_SOURCE.encode(),
                capture_output=True, env={"PATH": "/usr/bin:/bin"}, timeout=60, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise SandboxUnavailable(f"{python} could not compile the sandbox runner: {done.stderr.decode()[-2000:]}")
            _BYTECODE[python] = done.stdout
        return _BYTECODE[python]


def explain_bwrap_failure(stderr: str, exc: BaseException) -> str:
    message = f"the sandbox failed to start ({type(exc).__name__}): {stderr or 'no message'}"
    if "uid map" in stderr or "user namespace" in stderr or "Operation not permitted" in stderr:
        message += (
            ". bubblewrap needs unprivileged user namespaces: check `sysctl user.max_user_namespaces` (> 0), "
            "`kernel.unprivileged_userns_clone=1` (Debian < 11) and, on Ubuntu 24.04+, "
            "`kernel.apparmor_restrict_unprivileged_userns=0`"
        )
    return message
