"""The program that runs inside the sandbox: loads one solution once, forks once per test.

The host (box.py, via launch.py) has the sandbox's system Python compile this file's
source, hands the bytecode to bubblewrap over a pipe and runs it as `/runner.pyc`
(`python3 -I -S`; the weaker unsandboxed mode passes the source with `-c`). Nothing of
OmniOPD is mounted in the sandbox, so this file is self-contained and may import nothing
but the standard library (not even its siblings); it is also imported on the host for
the frame codec. It is trusted code running next to untrusted code: the solution only
ever runs in forked children, never in this process.

Protocol (the host drives, one request then one reply, over the runner's stdin/stdout):
- a frame is a 4-byte big-endian length and a payload;
- host -> runner payloads are `marshal`-encoded dicts built by the host (trusted):
  `{"op": "setup", ...}` once, then `{"op": "test", "stdin": bytes, "file_io": bool}` or
  `{"op": "test", "args": [...]}` per test, and `{"op": "exit"}`;
- runner -> host payloads are fixed `struct` layouts plus raw bytes (the host never
  unmarshals anything that came out of the sandbox): `C` + ok, seconds, compiler output
  after setup; `T` + exit code, signal, CPU and wall seconds, max RSS, flags, stdout,
  stderr tail after each test.
Expected outputs never enter: the host compares each reply and decides whether to send
the next test, so grading stops at the first failure without the sandbox learning why.
"""

from __future__ import annotations

import _signal as signal  # the `signal` module imports enum: ~20 ms per sandbox
import atexit
import builtins
import marshal
import os
import resource
import select
import struct
import sys
import time

_LEN = struct.Struct(">I")
_COMPILED = struct.Struct("<?d")
_RESULT = struct.Struct("<iiddqII")  # exit, signal, cpu_s, wall_s, max_rss_kb, flags, len(stdout)
MSG_COMPILED, MSG_RESULT = b"C", b"T"
FLAG_TIMED_OUT, FLAG_OUTPUT_LIMIT, FLAG_STDERR_FLOOD = 1, 2, 4

WORK = "/work"  # main() takes another from argv in the weaker (unsandboxed) mode
# Imported before the first fork when the solution names them, so each test's child
# does not pay for them again. Only this fixed list: importing an arbitrary name here
# would run code chosen by the solution inside the runner.
PREIMPORTABLE = frozenset((
    "array", "bisect", "calendar", "cmath", "collections", "copy", "dataclasses", "datetime",
    "decimal", "enum", "fractions", "functools", "heapq", "itertools", "json", "math",
    "numbers", "operator", "queue", "random", "re", "statistics", "string", "textwrap",
    "threading", "types", "typing", "unicodedata",
))  # fmt: skip
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": WORK, "TMPDIR": "/tmp"}


# -- framing (also used by the host) ------------------------------------------------------


def write_frame(fd: int, payload: bytes) -> None:
    data = memoryview(_LEN.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def read_frame(fd: int) -> bytes | None:
    """One whole frame from a blocking fd, or None at end of stream."""
    head = _read_exact(fd, _LEN.size)
    return None if head is None else _read_exact(fd, _LEN.unpack(head)[0])


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def encode_result(exit_code, sig, cpu_s, wall_s, rss_kb, flags, stdout, stderr) -> bytes:
    head = _RESULT.pack(exit_code, sig, cpu_s, wall_s, rss_kb, flags, len(stdout))
    return MSG_RESULT + head + stdout + stderr


def decode_result(payload: bytes) -> tuple:
    """(exit_code, signal, cpu_s, wall_s, max_rss_kb, flags, stdout, stderr); ValueError if malformed."""
    if payload[:1] != MSG_RESULT or len(payload) < 1 + _RESULT.size:
        raise ValueError("malformed test-result frame")
    *head, n_out = _RESULT.unpack_from(payload, 1)
    body = payload[1 + _RESULT.size :]
    if n_out > len(body):
        raise ValueError("malformed test-result frame")
    return (*head, body[:n_out], body[n_out:])


def decode_compiled(payload: bytes) -> tuple[bool, float, bytes]:
    if payload[:1] != MSG_COMPILED or len(payload) < 1 + _COMPILED.size:
        raise ValueError("malformed compile frame")
    ok, seconds = _COMPILED.unpack_from(payload, 1)
    return ok, seconds, payload[1 + _COMPILED.size :]


# -- running one process ------------------------------------------------------------------


class Runner:
    def __init__(self, setup: dict) -> None:
        self.setup = setup
        self.limits = setup["limits"]
        self.cleanup = setup["cleanup"]  # "pidns", "uid" or "pgroup": see _kill_rest
        self.code = None  # compiled Python solution
        self.binary = None  # compiled C/C++ solution

    def prepare(self) -> tuple[bool, float, bytes]:
        """Set this process's limits and compile the solution: (ok, seconds, messages)."""
        lim = self.limits
        _setrlimit(resource.RLIMIT_CORE, 0)
        _setrlimit(resource.RLIMIT_NOFILE, lim["open_files"])
        _setrlimit(resource.RLIMIT_NPROC, lim["processes"])
        _setrlimit(resource.RLIMIT_FSIZE, lim["file_bytes"])
        _setrlimit(resource.RLIMIT_AS, max(lim["memory_bytes"], lim["compile_memory_bytes"]))
        start = time.monotonic()
        if self.setup["language"] == "python":
            ok, messages = self._compile_python()
        else:
            ok, messages = self._compile_native()
        return ok, time.monotonic() - start, messages

    def _compile_python(self) -> tuple[bool, bytes]:
        source = self.setup["source"]
        with open(os.path.join(WORK, "solution.py"), "w", encoding="utf-8", errors="replace") as f:
            f.write(source)  # so tracebacks can quote lines
        try:
            self.code = compile(source, os.path.join(WORK, "solution.py"), "exec")
        except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as exc:
            import traceback

            return False, "".join(traceback.format_exception_only(type(exc), exc)).encode()
        names = {"json"} if self.setup["mode"] == "call" else set()
        for line in source.splitlines():
            words = line.replace(",", " ").split()
            if words[:1] in (["import"], ["from"]):
                names.update(w.split(".")[0] for w in words[1:] if w not in ("as", "import"))
        for name in sorted(names & PREIMPORTABLE):
            __import__(name)
        return True, b""

    def _compile_native(self) -> tuple[bool, bytes]:
        with open(os.path.join(WORK, self.setup["source_name"]), "w", encoding="utf-8", errors="replace") as f:
            f.write(self.setup["source"])
        argv = self.setup["compile_argv"]  # built by the host, writes WORK/solution
        lim = self.limits
        res = self._spawn(
            lambda: os.execve(argv[0], argv, CHILD_ENV),
            b"",
            cpu_s=lim["compile_time_s"],
            wall_s=lim["compile_wall_s"],
            memory=lim["compile_memory_bytes"],
            exec_=True,
        )
        exit_code, sig, _cpu, _wall, _rss, flags, out, err = res
        if flags & FLAG_TIMED_OUT:
            return False, b"compiler ran past its wall-clock limit\n" + err
        if exit_code != 0 or sig:
            return False, (out + err) or f"compiler killed by signal {sig}\n".encode()
        self.binary = os.path.join(WORK, "solution")
        return True, out + err

    def run_test(self, req: dict) -> bytes:
        lim = self.limits
        file_io = req.get("file_io", False)
        data = req.get("stdin", b"")
        if file_io:  # Codeforces problems that read input.txt and write output.txt
            with open(os.path.join(WORK, "input.txt"), "wb") as f:
                f.write(data)
        if self.binary is not None:
            binary = self.binary
            child = lambda: os.execve(binary, [binary], CHILD_ENV)  # noqa: E731
        else:
            child = lambda: _python_child(self.code, self.setup.get("fn_name"), req.get("args"))  # noqa: E731
        res = self._spawn(
            child,
            data,
            cpu_s=lim["time_s"],
            wall_s=lim["wall_time_s"],
            memory=lim["memory_bytes"],
            exec_=self.binary is not None,
        )
        if file_io:
            res = (*res[:6], _read_capped(os.path.join(WORK, "output.txt"), lim["output_bytes"]), res[7])
            for name in ("input.txt", "output.txt"):
                _unlink(os.path.join(WORK, name))
        return encode_result(*res)

    def _spawn(self, child, data: bytes, *, cpu_s: float, wall_s: float, memory: int, exec_: bool):
        lim = self.limits
        in_fd = os.memfd_create("stdin")
        _write_all(in_fd, data)
        os.lseek(in_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                os.setpgid(0, 0)
                os.dup2(in_fd, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.closerange(3, lim["open_files"])
                cpu = int(cpu_s) + 1  # whole seconds; the host judges the exact CPU time
                _setrlimit(resource.RLIMIT_CPU, cpu, cpu + 1)
                _setrlimit(resource.RLIMIT_AS, memory)
                _setrlimit(resource.RLIMIT_STACK, memory)
                if exec_:  # Python ignores these; a C/C++ program expects the defaults
                    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
                else:  # the runner (pid 1) dropped Python's KeyboardInterrupt handler
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                child()
            except BaseException:
                os.write(2, b"sandbox runner: could not start the program\n")
            os._exit(127)
        for fd in (in_fd, out_w, err_w):
            os.close(fd)
        return self._collect(pid, out_r, err_r, start, start + wall_s)

    def _collect(self, pid: int, out_r: int, err_r: int, start: float, deadline: float):
        """Read the child's output (capped) until it exits or the deadline; reap; clean up."""
        lim = self.limits
        out, err = bytearray(), bytearray()
        err_total, flags, status, rusage, wall = 0, 0, None, None, 0.0
        poller = select.poll()
        open_fds = {out_r, err_r}
        for fd in open_fds:
            poller.register(fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(pid)
            poller.register(pidfd, select.POLLIN)
        except (AttributeError, OSError):  # old kernel: fall back to polling waitpid
            pidfd = None
        while open_fds or status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                flags |= FLAG_TIMED_OUT if status is None else 0
                break
            if pidfd is None and status is None:
                remaining = min(remaining, 0.005)
            for fd, _ev in poller.poll(remaining * 1000):
                if fd == pidfd:
                    poller.unregister(pidfd)
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                elif fd == out_r:
                    out += chunk
                else:
                    err_total += len(chunk)
                    err += chunk
                    del err[: max(0, len(err) - lim["stderr_bytes"])]  # keep the tail
            if len(out) > lim["output_bytes"]:
                flags |= FLAG_OUTPUT_LIMIT
                del out[lim["output_bytes"] :]
                break
            if err_total > lim["output_bytes"]:
                flags |= FLAG_STDERR_FLOOD
                break
            if status is None:
                waited, st, ru = os.wait4(pid, os.WNOHANG)
                if waited == pid:
                    status, rusage, wall = st, ru, time.monotonic() - start
                    # Background writers would hold the pipes open: kill them, then
                    # drain briefly (in the weaker mode an escapee may outlive the kill).
                    self._kill_rest(pid)
                    deadline = min(deadline, time.monotonic() + 0.5)
        if status is None:
            _kill(pid, pgroup=True)
            _, status, rusage = os.wait4(pid, 0)
            wall = time.monotonic() - start
        self._kill_rest(pid)
        for fd in (out_r, err_r, *(() if pidfd is None else (pidfd,))):
            os.close(fd)
        exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        cpu = rusage.ru_utime + rusage.ru_stime
        return exit_code, sig, cpu, wall, rusage.ru_maxrss, flags, bytes(out), bytes(err)

    def _kill_rest(self, pgid: int) -> None:
        """Kill whatever the test left behind (daemons, setsid escapees, fork bombs).

        "pidns": we are pid 1 of our own pid namespace (bwrap --as-pid-1), so kill(-1)
        reaches exactly the leftovers, orphans become our children (reaped here), and
        ESRCH says nothing is left. "uid": the weaker mode as root, alone on the slot's
        uid: kill(-1) reaches only that uid, but ESRCH never comes (it counts processes
        it may not signal), so once; the host sweeps the uid afterwards. "pgroup": the
        weaker mode as a normal user: only the test's process group.
        """
        if self.cleanup == "pgroup":
            _kill(pgid, pgroup=True)
            return
        for _ in range(400 if self.cleanup == "pidns" else 1):
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                return
            _reap_orphans()  # zombies still count for kill(-1)
            time.sleep(0.0025)


def _reap_orphans() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# -- the forked child ---------------------------------------------------------------------


def _python_child(code, fn_name: str | None, args: list | None) -> None:
    """Run the solution in this forked process and exit like `python3 solution.py` would."""
    sys.stdin, sys.stdout, sys.stderr, sink = _CHILD_STREAMS
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    sys.argv = [os.path.join(WORK, "solution.py")]
    namespace = {"__name__": "__main__", "__file__": sys.argv[0], "__builtins__": builtins}
    rc = 0
    real_stdout = sys.stdout
    if fn_name is not None:  # only the JSON of the return value may reach stdout
        sys.stdout = sink
    try:
        exec(code, namespace)
        if fn_name is not None:
            rc = _call(namespace, fn_name, args, real_stdout)
    except SystemExit as exc:
        rc = _exit_code(exc.code)
    except MemoryError:
        os.write(2, b"\nMemoryError\n")
        rc = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        rc = 1
    if "threading" in sys.modules:
        sys.modules["threading"]._shutdown()  # wait for non-daemon threads, as at exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            rc = rc or 120  # what CPython returns when flushing stdout fails at exit
    os._exit(rc)


def _make_child_streams() -> tuple:
    """Text streams on fds 0, 1, 2 (and a sink), built once: each forked child dup2s its
    test's files onto those fds and adopts copies of these unused objects, which costs
    far less than building new ones in every child."""
    return (
        open(0, encoding="utf-8", closefd=False),
        open(1, "w", encoding="utf-8", closefd=False),
        open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1),
        open(os.devnull, "w"),
    )


_CHILD_STREAMS: tuple = ()


def _call(namespace: dict, fn_name: str, args: list, real_stdout) -> int:
    """Call-based problems (APPS `fn_name`): print the return value as JSON, nothing else."""
    import json

    cls = namespace.get("Solution")
    if isinstance(cls, type) and hasattr(cls, fn_name):
        fn = getattr(cls(), fn_name)
    elif callable(namespace.get(fn_name)):
        fn = namespace[fn_name]
    else:
        sys.stderr.write(f"the solution defines no function or Solution method named {fn_name!r}\n")
        return 1
    result = fn(*args)
    real_stdout.write(json.dumps(result, default=repr))
    sys.stdout = real_stdout
    return 0


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


class _Quitter:
    """`exit()`/`quit()` as the site module defines them (we run with -S, which drops them)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Use {self.name}() or Ctrl-D (i.e. EOF) to exit"

    def __call__(self, code=None):
        raise SystemExit(code)


# -- small helpers ------------------------------------------------------------------------


def _setrlimit(which: int, soft: int, hard: int | None = None) -> None:
    resource.setrlimit(which, (soft, soft if hard is None else hard))


def _kill(pid: int, *, pgroup: bool) -> None:
    try:  # noqa: SIM105 (contextlib would cost every sandbox an import)
        (os.killpg if pgroup else os.kill)(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_capped(path: str, cap: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(cap)
    except OSError:
        return b""


def _unlink(path: str) -> None:
    try:  # noqa: SIM105
        os.unlink(path)
    except OSError:
        pass


def _make_undumpable() -> None:
    """PR_SET_DUMPABLE 0: a child with our uid then cannot open /proc/<runner>/{mem,fd}.

    Through _ctypes directly: `import ctypes` costs every sandbox ~7 ms more.
    """
    import _ctypes

    prctl = _ctypes.dlsym(_ctypes.dlopen(None), "prctl")
    if _ctypes.call_function(prctl, (4, 0, 0, 0, 0)) != 0:  # PR_SET_DUMPABLE = 4
        raise OSError("prctl(PR_SET_DUMPABLE, 0) failed")


def _set_import_path() -> None:
    """Standard library plus site packages, never the work dir (we run with -I -S)."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    sites = [
        os.path.join(sys.prefix, "lib", version, "site-packages"),
        f"/usr/local/lib/{version}/dist-packages",
        f"/usr/lib/python{sys.version_info[0]}/dist-packages",
    ]
    sys.path[:] = [p for p in sys.path if p and not p.startswith(WORK)]
    sys.path += [p for p in sites if os.path.isdir(p) and p not in sys.path]


def main() -> None:
    global WORK, _CHILD_STREAMS
    if len(sys.argv) > 1:
        WORK = sys.argv[1]
        CHILD_ENV.update(HOME=WORK, TMPDIR=os.environ.get("TMPDIR", WORK))
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # nothing but frames may reach the host on the protocol pipe
    os.close(null)
    _set_import_path()
    # As pid 1 the kernel drops signals from inside the namespace that we have no handler
    # for, so the program can neither kill nor stop us; Python's SIGINT handler would let
    # it raise KeyboardInterrupt in here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _CHILD_STREAMS = _make_child_streams()
    builtins.exit, builtins.quit = _Quitter("exit"), _Quitter("quit")
    _make_undumpable()
    frame = read_frame(proto_in)
    if frame is None:
        return
    runner = Runner(marshal.loads(frame))
    ok, seconds, messages = runner.prepare()
    write_frame(proto_out, MSG_COMPILED + _COMPILED.pack(ok, seconds) + messages[-65536:])
    while ok:
        frame = read_frame(proto_in)
        if frame is None:
            return
        request = marshal.loads(frame)
        if request["op"] != "test":
            return
        write_frame(proto_out, runner.run_test(request))


if __name__ == "__main__":
    main()
    os._exit(0)  # skip interpreter teardown: the host waits for this exit
