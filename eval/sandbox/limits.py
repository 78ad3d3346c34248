"""What a sandbox is asked for and what it reports: the limits a program runs under, the
languages it may be written in, its compile and test results, and the rule that turns
the runner's raw figures into a test's status (which limit, if any, it hit).

The status is decided here on the host from figures the runner measured (see the package
docstring: a subverted runner could forge these, never a pass, since outputs are compared
by the caller against expected outputs the sandbox never sees).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from eval.sandbox import runner as proto

MIB = 1 << 20


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
    output_bytes: int = 16 * MIB
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
            "memory_bytes": self.memory_mb * MIB,
            "output_bytes": self.output_bytes,
            "stderr_bytes": self.stderr_bytes,
            "processes": self.processes,
            "file_bytes": self.file_mb * MIB,
            "open_files": self.open_files,
            "compile_time_s": self.compile_time_s,
            "compile_wall_s": 2 * self.compile_time_s + 5,
            "compile_memory_bytes": self.compile_memory_mb * MIB,
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


def classify(limits: Limits, exit_code: int, sig: int, cpu: float, rss_kb: int, flags: int, err: bytes) -> str:
    """A test's status (one of STATUSES) from the runner's figures, the first limit hit wins.

    RLIMIT_CPU is set at the next whole second, so CPU time over `time_s` is judged here.
    """
    if flags & proto.FLAG_TIMED_OUT or sig == signal.SIGXCPU or cpu > limits.time_s:
        return "time_limit"
    if flags & (proto.FLAG_OUTPUT_LIMIT | proto.FLAG_STDERR_FLOOD):
        return "output_limit"
    out_of_memory = b"MemoryError" in err or b"std::bad_alloc" in err or rss_kb * 1024 >= 0.95 * limits.memory_mb * MIB
    if (exit_code != 0 or sig) and (out_of_memory or sig == signal.SIGKILL):
        return "memory_limit"  # nothing but the kernel's OOM killer sends SIGKILL here
    if exit_code != 0 or sig:
        return "runtime_error"
    return "ok"
