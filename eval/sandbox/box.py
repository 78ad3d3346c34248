"""Run untrusted programs (model-written code) in a bubblewrap sandbox, one sandbox per sample.

A `Sandbox` holds one program: it starts bubblewrap once, compiles the program inside
(C/C++) or byte-compiles it (Python), then runs one test per request, each in a process
forked from the in-sandbox runner (eval/sandbox/runner.py), so a sample's tests share
one interpreter start. The host sends a test's stdin, gets back its stdout, exit status,
times and signal, compares outside and decides whether to send the next one: expected
outputs never enter the sandbox.

Threat model. The program is hostile: it was written by a model that may have learnt,
or been prompted, to attack its grader; the popular `reliability_guard` approach
(monkeypatching `os` in-process) is undone in a few lines, so nothing here relies on
the program's cooperation.

Covered (each has a test in tests/eval/test_sandbox_containment.py):
- fork bombs: RLIMIT_NPROC on the slot's uid, a pid namespace, kill(-1) after each test;
- unbounded memory: RLIMIT_AS per test (a MemoryError / bad_alloc is a memory verdict);
- spinning: RLIMIT_CPU per test, a wall-clock limit in the runner, and a host deadline
  that SIGKILLs bubblewrap (the runner, init of the pid namespace, dies with it, and
  the namespace with the runner);
- filling the disk: the only writable places are size-limited tmpfs mounts (/work, /tmp,
  /dev/shm), RLIMIT_FSIZE caps one file; the root and /dev are read-only;
- flooding stdout/stderr: the runner reads incrementally, stops at a cap and kills;
- network: a fresh network namespace (loopback only, not the host's) and a seccomp rule
  refusing every socket family but AF_UNIX;
- secrets in the environment: bubblewrap gets an environment of PATH only and clears it
  again (--clearenv); the host's /proc is not mounted, only the sandbox's own;
- reading host files: only /usr and a few /etc files (loader cache, alternatives,
  localtime) are mounted, read-only; the program runs under a uid of its own with no
  capabilities, so root-only files under them stay closed; the source, the runner and
  the seccomp filter arrive over pipes, not bind mounts;
- signalling or killing the parent and other samples: a pid namespace (the host and
  other sandboxes are invisible), the runner is that namespace's pid 1 (the kernel drops
  signals sent to it from inside), a uid per worker slot (kill(2) across uids fails),
  and PR_SET_DUMPABLE 0 on the runner so the program cannot reach its pipes via /proc;
- outliving the timeout (setsid, double fork, daemons): bubblewrap --new-session and
  --die-with-parent, kill(-1) and reaping after each test, and at the end the kernel's
  rule that a pid namespace's init is reaped only after everything else in it is gone
  (waited for through bubblewrap's exit or the runner's pidfd; the slot's uid is swept
  when neither proof is available);
- kernel attack surface: a seccomp deny-list (eval/sandbox/seccomp.py): ptrace,
  process_vm_*, mount, unshare/setns, CLONE_NEW*, bpf, perf_event_open, io_uring,
  keyrings, kexec, module loading, foreign syscall ABIs; no new user namespaces.

Not covered:
- kernel or bubblewrap vulnerabilities (a real exploit escapes any namespace sandbox;
  use a VM or gVisor for adversarial settings beyond grading);
- side channels (timing, cache, /proc/cpuinfo and other host facts visible in /proc);
- a memory bound for the sample as a whole: RLIMIT_AS is per process, so a program
  that forks can hold up to `processes x memory_mb` (plus 3 tmpfs of `file_mb`) until
  the wall-clock limit ends it; there is no cgroup (run graders in a memory-limited
  container or cgroup to bound that). RLIMIT_AS also counts address space, not RSS
  (threads' malloc arenas count);
- the runner's integrity is protected (pid 1, non-dumpable), but the host does not
  depend on it: a program that subverted it could only forge its own CPU-time and
  memory figures within the host's wall-clock deadline, never a pass, because outputs
  are judged outside against expected outputs the sandbox never sees;
- the weaker, opt-in unsandboxed mode (`allow_unsandboxed=True`): rlimits and, as root,
  a separate uid only; no namespaces, no seccomp, no read-only filesystem, and as a
  non-root user a `kill -9 -1` in the program reaches the caller's own processes.

Uid choice: as root, each worker slot runs bubblewrap as uid/gid `uid_base + slot`
(default 60000+) with no supplementary groups, and bubblewrap builds an unprivileged
user namespace mapping that uid to itself. Mapping root into the namespace instead
(bwrap --uid as root) would leave the program with kernel uid 0 on every file check.
A slot is held with an flock on /run/omniopd-sandbox/slot-N.lock, so two grading
processes on one host never share a uid. As a non-root user the sandbox runs under the
caller's uid (it cannot switch), still in its own namespaces.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from eval.sandbox import runner as proto
from eval.sandbox.channel import Channel
from eval.sandbox.launch import (
    INSTALL_HINT,
    RUNNER_SOURCE,
    SandboxError,
    SandboxUnavailable,
    bwrap_argv,
    compiler_path,
    explain_bwrap_failure,
    find_bwrap,
    pipe_with,
    runner_bytecode,
    sandbox_python,
    seccomp_filter,
)
from eval.sandbox.slots import Slot, acquire_slot, kill_uid_processes

__all__ = [
    "LANGUAGES", "CompileResult", "Limits", "RunResult", "Sandbox", "SandboxError",
    "SandboxUnavailable", "find_bwrap", "run_program", "sandbox_python",
]  # fmt: skip
_MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Per-test limits (time, memory, output) and per-sandbox limits (processes, files).

    Invariant: every size is positive; `wall_time_s` is None or >= `time_s`.
    """

    time_s: float = 4.0
    """CPU seconds per test (RLIMIT_CPU at the next whole second; judged exactly)."""
    memory_mb: int = 1024
    """Address space per test, MiB (RLIMIT_AS)."""
    wall_time_s: float | None = None
    """Wall-clock seconds per test; None = max(2 * time_s, time_s + 1)."""
    output_bytes: int = 16 * _MIB
    """Stdout kept per test; more is an output-limit failure (and kills the test)."""
    stderr_bytes: int = 8192
    """Tail of stderr kept per test (for messages)."""
    processes: int = 32
    """Processes and threads of the slot's uid at once (RLIMIT_NPROC); with memory_mb it
    bounds a sample's memory (processes x memory_mb: RLIMIT_AS is per process)."""
    file_mb: int = 64
    """Largest file (RLIMIT_FSIZE) and size of each tmpfs (/work, /tmp, /dev/shm), MiB."""
    open_files: int = 256
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    compile_time_s: float = 20.0
    """CPU seconds for the compiler (C/C++)."""
    compile_memory_mb: int = 2048
    """Address space of the compiler, MiB."""
    host_grace_s: float = 5.0
    """How long the host waits beyond the runner's own limits before killing the sandbox."""

    def __post_init__(self) -> None:
        sizes = {k: v for k, v in self.__dict__.items() if k != "wall_time_s"}
        bad = [k for k, v in sizes.items() if v <= 0]
        if bad:
            raise ValueError(f"sandbox limits must be positive: {', '.join(bad)}")
        if self.wall_time_s is not None and self.wall_time_s < self.time_s:
            raise ValueError("wall_time_s must be at least time_s (CPU time cannot exceed wall time)")

    @property
    def wall_s(self) -> float:
        return self.wall_time_s if self.wall_time_s is not None else max(2 * self.time_s, self.time_s + 1)

    def for_runner(self) -> dict:
        return {
            "time_s": self.time_s,
            "wall_time_s": self.wall_s,
            "memory_bytes": self.memory_mb * _MIB,
            "output_bytes": self.output_bytes,
            "stderr_bytes": self.stderr_bytes,
            "processes": self.processes,
            "file_bytes": self.file_mb * _MIB,
            "open_files": self.open_files,
            "compile_time_s": self.compile_time_s,
            "compile_wall_s": 2 * self.compile_time_s + 5,
            "compile_memory_bytes": self.compile_memory_mb * _MIB,
        }


@dataclass(frozen=True)
class Language:
    """How to build a program in the sandbox; `compiler` None means byte-compiled Python."""

    name: str
    source_name: str
    compiler: str | None = None
    flags: tuple[str, ...] = ()
    link_flags: tuple[str, ...] = ()


LANGUAGES = {
    "python": Language("python", "solution.py"),
    "cpp": Language("cpp", "solution.cpp", "g++", ("-O2", "-std=gnu++17", "-pipe")),
    "c": Language("c", "solution.c", "gcc", ("-O2", "-std=gnu17", "-pipe"), ("-lm",)),
}


@dataclass(frozen=True)
class CompileResult:
    """The outcome of building the program (Python: byte-compiling it)."""

    ok: bool
    messages: str
    """Compiler output (or the Python SyntaxError), possibly truncated."""
    time_s: float


STATUSES = ("ok", "time_limit", "memory_limit", "output_limit", "runtime_error")


@dataclass(frozen=True)
class RunResult:
    """One test's run. `status` is one of STATUSES; stdout is capped at Limits.output_bytes."""

    status: str
    stdout: bytes
    stderr: bytes
    exit_code: int | None
    signal: int | None
    cpu_s: float
    wall_s: float
    max_rss_kb: int = 0
    note: str = ""
    """What the host saw beyond the runner's report (e.g. the runner died)."""


class Sandbox:
    """One program in one sandbox: start, run its tests, close.

    Use as a context manager (entering starts it, leaving kills everything in it).
    `run_many`/`call_many` keep the runner one test ahead of the caller (the next input
    is sent before the current result is judged), and the first test travels with the
    program, so compiling, running and judging overlap; a caller that stops at a failure
    leaves at most one extra test running, which `close` kills. Not thread-safe.
    """

    def __init__(
        self,
        source: str,
        language: str = "python",
        *,
        limits: Limits | None = None,
        fn_name: str | None = None,
        slot: Slot | int | None = None,
        allow_unsandboxed: bool = False,
    ) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"unknown language {language!r}; supported: {', '.join(LANGUAGES)}")
        if fn_name is not None and language != "python":
            raise ValueError("call-based (fn_name) problems are supported for Python only")
        self.source, self.language, self.fn_name = source, LANGUAGES[language], fn_name
        self.limits = limits or Limits()
        self.allow_unsandboxed = allow_unsandboxed
        self._slot_arg = slot
        self.slot: Slot | None = None
        self.proc: subprocess.Popen | None = None
        self.channel: Channel | None = None
        self.sandboxed = True
        self._compiled: CompileResult | None = None
        self._started = 0.0
        self._compile_budget = 0.0
        self._inflight = 0  # requests sent whose results have not been received
        self._dead = False  # killed, or the runner is gone: no more requests
        self._workdir: str | None = None
        self._info_fd: int | None = None  # pipe bubblewrap writes {"child-pid": N} into
        self._runner_pidfd: int | None = None  # pidfd of the runner (the namespace's init)

    def __enter__(self) -> Sandbox:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and not self._dead

    def start(self) -> None:
        """Start the sandbox and send it the program (compiling overlaps the first test)."""
        compiler = compiler_path(self.language.compiler) if self.language.compiler else None
        python = sandbox_python()
        bwrap = find_bwrap()
        if bwrap is None and not self.allow_unsandboxed:
            raise SandboxUnavailable(
                f"bubblewrap (bwrap) is not installed, so model-written code cannot be run safely. "
                f"Install it with `{INSTALL_HINT}`, or opt into the weaker unsandboxed mode "
                "(allow_unsandboxed=True, config eval.allow_unsandboxed: true, CLI --allow-unsandboxed) "
                "only on a machine you can afford to lose."
            )
        self.sandboxed = bwrap is not None
        self.slot = self._slot_arg if isinstance(self._slot_arg, Slot) else acquire_slot(self._slot_arg)
        work = "/work" if self.sandboxed else self._make_workdir()
        compile_argv = None
        if compiler is not None:
            compile_argv = [compiler, *self.language.flags, "-o", f"{work}/solution", f"{work}/{self.language.source_name}", *self.language.link_flags]
        self._spawn(bwrap, python, work)
        self._started = time.monotonic()
        self._compile_budget = (2 * self.limits.compile_time_s + 5 if compiler else 10.0) + 2 * self.limits.host_grace_s
        self.channel.send(marshal.dumps({
            "op": "setup",
            "language": self.language.name,
            "source": self.source,
            "source_name": self.language.source_name,
            "compile_argv": compile_argv,
            "mode": "call" if self.fn_name else "stdin",
            "fn_name": self.fn_name,
            "limits": self.limits.for_runner(),
            # How the runner may clean up after a test (see Runner._kill_rest).
            "cleanup": "pidns" if self.sandboxed else ("uid" if self.slot.uid is not None else "pgroup"),
        }))  # fmt: skip

    @property
    def compiled(self) -> CompileResult:
        """The build's outcome (waits for it). Raises SandboxError if bubblewrap failed."""
        if self._compiled is None:
            if self.channel is None:
                raise SandboxError("start() the sandbox first")
            self._compiled = self._await_compile()
        return self._compiled

    def _await_compile(self) -> CompileResult:
        try:
            frame = self.channel.receive(self._started + self._compile_budget)
            ok, seconds, messages = proto.decode_compiled(frame)
            self._open_runner_pidfd()
        except (TimeoutError, EOFError, ValueError) as exc:
            self._kill()
            failure = self._failure_text()
            if "bwrap:" in failure or not failure:
                raise SandboxError(explain_bwrap_failure(failure, exc)) from exc
            ok, seconds, messages = False, time.monotonic() - self._started, failure.encode()
        if not ok:
            self._dead = True  # the runner exits after a failed build
        return CompileResult(ok, messages.decode("utf-8", "replace"), seconds)

    def run(self, stdin: bytes | str = b"", *, file_io: bool = False) -> RunResult:
        """Run the program on one input (or input.txt/output.txt when `file_io`)."""
        return self._one(self.run_many([stdin], file_io=file_io))

    def call(self, args: list) -> RunResult:
        """Call-based problems: call `fn_name(*args)`; stdout is the JSON of its return value."""
        return self._one(self.call_many([args]))

    def run_many(self, inputs: Iterable[bytes | str], *, file_io: bool = False) -> Iterator[RunResult]:
        """Results of running the program on each input, in order, one sandbox for all.

        Yields nothing if the program did not compile (see `compiled`); stops after a
        result that ended the sandbox (the runner died or stopped answering).
        """
        return self._pipeline({"op": "test", "stdin": x.encode() if isinstance(x, str) else x, "file_io": file_io} for x in inputs)

    def call_many(self, arg_lists: Iterable[list]) -> Iterator[RunResult]:
        """Like run_many for call-based problems: one `fn_name(*args)` per argument list."""
        if self.fn_name is None:
            raise ValueError("call_many() needs a Sandbox created with fn_name")
        return self._pipeline({"op": "test", "args": list(args)} for args in arg_lists)

    def _one(self, results: Iterator[RunResult]) -> RunResult:
        result = next(results, None)
        if result is None:
            raise SandboxError(f"the program did not compile:\n{self.compiled.messages}")
        results.close()
        return result

    def _pipeline(self, requests: Iterable[dict]) -> Iterator[RunResult]:
        if self.channel is None:
            raise SandboxError("start() the sandbox first")
        requests = iter(requests)
        upcoming = next(requests, None)
        if upcoming is None or self._dead:
            return
        self._send(upcoming)  # travels with the program: compiling overlaps sending
        if not self.compiled.ok:
            return
        while upcoming is not None and not self._dead:
            upcoming = next(requests, None)
            if upcoming is not None:
                self._send(upcoming)  # one ahead: runs while the host judges this result
            yield self._receive_result()

    def _send(self, request: dict) -> None:
        self.channel.send(marshal.dumps(request))
        self._inflight += 1

    def _receive_result(self) -> RunResult:
        start = time.monotonic()
        try:
            frame = self.channel.receive(start + self.limits.wall_s + self.limits.host_grace_s)
            self._inflight -= 1
            exit_code, sig, cpu, wall, rss, flags, out, err = proto.decode_result(frame)
        except TimeoutError:
            self._kill()
            return RunResult("time_limit", b"", b"", None, None, 0.0, time.monotonic() - start,
                             note="the sandbox stopped answering; killed at the host deadline")  # fmt: skip
        except (EOFError, ValueError) as exc:
            self._kill()
            return RunResult("runtime_error", b"", self._failure_text().encode(), None, None, 0.0,
                             time.monotonic() - start, note="the sandbox runner died (the program probably killed it)"
                             + (f": {exc}" if str(exc) else ""))  # fmt: skip
        status = _classify(self.limits, exit_code, sig, cpu, rss, flags, err)
        return RunResult(status, out, err, exit_code if not sig else None, sig or None, cpu, wall, rss)

    def _make_workdir(self) -> str:
        warnings.warn(
            "UNSANDBOXED: bubblewrap is missing and allow_unsandboxed=True, so model-written code "
            "runs with rlimits only (no namespaces, no seccomp, full filesystem and network). "
            f"Install bubblewrap (`{INSTALL_HINT}`) before grading anything you do not trust.",
            RuntimeWarning,
            stacklevel=3,
        )
        self._workdir = tempfile.mkdtemp(prefix="omniopd-unsandboxed-")
        if self.slot.uid is not None:
            os.chown(self._workdir, self.slot.uid, self.slot.uid)
        return self._workdir

    def _spawn(self, bwrap: str | None, python: str, work: str) -> None:
        kwargs: dict = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        drop: list[str] = []
        if self.slot.uid is not None:
            # setpriv (util-linux) drops to the slot's uid in the child; Popen(user=...)
            # would do the same but then cannot vfork, and forking a grader holding GiBs
            # (torch) costs milliseconds per sample.
            setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
            if setpriv:
                uid = str(self.slot.uid)
                drop = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
            else:
                kwargs.update(user=self.slot.uid, group=self.slot.uid, extra_groups=[])
        if bwrap is None:
            argv = [*drop, python, "-I", "-S", "-c", RUNNER_SOURCE, work]
            env = {"PATH": "/usr/bin:/bin", "TMPDIR": work, "PYTHONDONTWRITEBYTECODE": "1"}
            self.proc = subprocess.Popen(argv, env=env, cwd=work, start_new_session=True, **kwargs)
        else:
            # Two small pipes bubblewrap reads during setup: the seccomp filter and the
            # runner's bytecode (compiling its source cost every sandbox ~5-15 ms).
            fds = [pipe_with(seccomp_filter()), pipe_with(runner_bytecode(python))]
            self._info_fd, info_w = os.pipe()  # bubblewrap reports the runner's host pid here
            fds.append(info_w)
            try:
                argv = [*drop, *bwrap_argv(bwrap, self.limits.file_mb * _MIB, *fds), "--", python, "-I", "-S", "/runner.pyc"]
                # bubblewrap itself gets PATH only: our environment (API keys) never reaches it.
                self.proc = subprocess.Popen(
                    argv, env={"PATH": "/usr/bin:/bin"}, cwd="/", start_new_session=True, pass_fds=fds, **kwargs
                )
            finally:
                for fd in fds:
                    os.close(fd)
        max_frame = self.limits.output_bytes + self.limits.stderr_bytes + (1 << 17)
        self.channel = Channel(self.proc, max_frame)

    def _failure_text(self) -> str:
        if self.channel is None:
            return ""
        self.channel.drain_stderr()
        return bytes(self.channel.stderr).decode("utf-8", "replace").strip() if self.channel else ""

    def _kill(self) -> None:
        """SIGKILL bubblewrap's process group: the pid namespace dies with its init."""
        self._dead = True
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # uninterruptible sleep: the sweep retries
            self.proc.wait(timeout=10)

    def close(self) -> None:
        """Stop the sandbox, make sure nothing it started survives, release the slot."""
        clean = self._shutdown()
        if self.channel is not None:
            self.channel.close()
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                with contextlib.suppress(OSError):
                    stream.close()
        if self.slot is not None and self.slot.uid is not None and not clean:
            kill_uid_processes(self.slot.uid)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        if self.slot is not None and not isinstance(self._slot_arg, Slot):
            self.slot.release()
        self.slot = None

    def _open_runner_pidfd(self) -> None:
        """Hold a pidfd on the runner while it is surely alive (its pid cannot be reused)."""
        if self._info_fd is None:
            return
        info, pid = b"", None
        while pid is None and select.select([self._info_fd], [], [], 1.0)[0]:
            chunk = os.read(self._info_fd, 4096)
            if not chunk:
                break
            info += chunk
            with contextlib.suppress(ValueError, KeyError, TypeError):
                pid = int(json.loads(info)["child-pid"])
        os.close(self._info_fd)
        self._info_fd = None
        if pid is not None:
            with contextlib.suppress(OSError):
                self._runner_pidfd = os.pidfd_open(pid)

    def _shutdown(self) -> bool:
        """True if the sandbox ended in a way that proves every process in it is gone.

        Closing the runner's stdin makes it exit; it is the namespace's init, and the
        kernel kills and reaps everything in the namespace before init can be reaped,
        so outer bubblewrap (which reaps it) exiting means the namespace is empty. Without
        that proof (the weaker mode has no namespace) the slot's uid is swept instead.
        """
        try:
            if self.proc is None:
                return False
            idle = self._compiled is not None and self._inflight == 0
            if self.proc.poll() is None and self.sandboxed and idle:  # else a test may still run
                self.channel.close_input()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=2.0)
                    return True
            self._kill()
            # Killed: the runner (init) got SIGKILL from --die-with-parent; its pidfd turns
            # readable once it has exited, which the kernel allows only after the rest of
            # the namespace is gone.
            fd = self._runner_pidfd
            return fd is not None and bool(select.select([fd], [], [], 5.0)[0])
        finally:
            for fd in (self._info_fd, self._runner_pidfd):
                if fd is not None:
                    os.close(fd)
            self._info_fd = self._runner_pidfd = None


def _classify(limits: Limits, exit_code: int, sig: int, cpu: float, rss_kb: int, flags: int, err: bytes) -> str:
    if flags & proto.FLAG_TIMED_OUT or sig == signal.SIGXCPU or cpu > limits.time_s:
        return "time_limit"
    if flags & (proto.FLAG_OUTPUT_LIMIT | proto.FLAG_STDERR_FLOOD):
        return "output_limit"
    out_of_memory = b"MemoryError" in err or b"std::bad_alloc" in err or rss_kb * 1024 >= 0.95 * limits.memory_mb * _MIB
    if (exit_code != 0 or sig) and (out_of_memory or sig == signal.SIGKILL):
        return "memory_limit"  # nothing but the kernel's OOM killer sends SIGKILL here
    if exit_code != 0 or sig:
        return "runtime_error"
    return "ok"


def run_program(
    source: str,
    language: str = "python",
    stdin: bytes | str = b"",
    *,
    limits: Limits | None = None,
    file_io: bool = False,
    allow_unsandboxed: bool = False,
) -> tuple[CompileResult, RunResult | None]:
    """Compile and run one program on one input, as grading does; RunResult None if it did not compile."""
    with Sandbox(source, language, limits=limits, allow_unsandboxed=allow_unsandboxed) as box:
        result = next(box.run_many([stdin], file_io=file_io), None)
        return box.compiled, result
