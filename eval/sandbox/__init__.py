"""Run untrusted programs (model-written code) in a bubblewrap sandbox, one sandbox per sample.

A `Sandbox` holds one program: it starts bubblewrap once, compiles the program inside
(C/C++) or byte-compiles it (Python), then runs one test per request, each in a process
forked from the in-sandbox runner (runner.py), so a sample's tests share
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
- kernel attack surface: a seccomp deny-list (seccomp.py): ptrace,
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

Modules: box.py (`Sandbox`, `run_program`: the host side of one sandbox), limits.py
(`Limits`, `LANGUAGES`, the results and how a test's status is decided), launch.py
(bubblewrap's command line, the interpreter and compilers), runner.py (the program inside,
standard library only), channel.py (the host's non-blocking frame pipe), seccomp.py (the
syscall filter), slots.py (worker slots and their uids). docs/sandbox.md is the user guide.
"""

from eval.sandbox.box import Sandbox, run_program
from eval.sandbox.launch import (
    INSTALL_HINT,
    SandboxError,
    SandboxUnavailable,
    find_bwrap,
    sandbox_python,
)
from eval.sandbox.limits import LANGUAGES, CompileResult, Limits, RunResult
from eval.sandbox.slots import DEFAULT_UID_BASE, Slot, acquire_slot

__all__ = [
    "DEFAULT_UID_BASE", "INSTALL_HINT", "LANGUAGES", "CompileResult", "Limits", "RunResult",
    "Sandbox", "SandboxError", "SandboxUnavailable", "Slot", "acquire_slot", "find_bwrap",
    "run_program", "sandbox_python",
]  # fmt: skip
