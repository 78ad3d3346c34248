"""The host side of one sandbox: start bubblewrap around the runner, send it the program
and then one test per request, read back each result, and at close prove that nothing
the program started is still alive (or sweep its uid when no proof is possible).

One sandbox serves all of a sample's tests so the interpreter starts and the program
compiles once; each test still runs in a fresh process forked by the runner. What this
must withstand, and what it does not cover, is the threat model in the package docstring
(eval/sandbox/__init__.py); docs/sandbox.md is the user guide.
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
from eval.sandbox.limits import LANGUAGES, MIB, CompileResult, Limits, RunResult, classify
from eval.sandbox.slots import Slot, acquire_slot, kill_uid_processes


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
        status = classify(self.limits, exit_code, sig, cpu, rss, flags, err)
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
                argv = [*drop, *bwrap_argv(bwrap, self.limits.file_mb * MIB, *fds), "--", python, "-I", "-S", "/runner.pyc"]
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
