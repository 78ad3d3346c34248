"""Hostile programs stay contained: each attack the threat model covers (the docstring of
eval/sandbox/__init__.py; docs/sandbox.md) is its own test.

Every test holds a slot (tests/eval/conftest.py) whose teardown fails if any process of
the slot's uid, or any child of this test process, survived `Sandbox.close()`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from eval.sandbox import Limits, Sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(60)]

FAST = Limits(time_s=0.5, memory_mb=256, output_bytes=1 << 20, file_mb=8, processes=32)


def run(source: str, slot, *, stdin: bytes = b"", limits: Limits = FAST, tests: int = 1):
    """Run `source` on `tests` inputs in one sandbox; results of the tests that ran."""
    results = []
    with Sandbox(textwrap.dedent(source), limits=limits, slot=slot) as box:
        assert box.compiled.ok, box.compiled.messages
        for _ in range(tests):
            if not box.alive:
                break
            results.append(box.run(stdin))
    return results


def test_fork_bomb_is_stopped_and_reaped(slot):
    (result,) = run(
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        slot,
    )
    assert result.status in ("time_limit", "runtime_error")
    assert result.status != "ok"


def test_memory_hog_gets_memory_limit(slot):
    (result,) = run("hog = []\nwhile True:\n    hog.append(bytearray(10**7))\n", slot)
    assert result.status == "memory_limit"


def test_infinite_loop_gets_time_limit(slot):
    (result,) = run("while True:\n    pass\n", slot)
    assert result.status == "time_limit"


def test_sleeping_forever_gets_time_limit_from_the_wall_clock(slot):
    (result,) = run("import time\ntime.sleep(3600)\n", slot)
    assert result.status == "time_limit"


def test_one_huge_file_stops_at_the_file_size_limit(slot):
    (result,) = run(
        """
        written = 0
        try:
            with open('/tmp/huge', 'wb') as f:
                while True:
                    f.write(b'x' * (1 << 20))
                    f.flush()
                    written += 1 << 20
        except OSError as exc:
            print(written, exc.errno)
        """,
        slot,
    )
    written, _errno = map(int, result.stdout.split())
    assert written <= FAST.file_mb << 20


@pytest.mark.parametrize("directory", ["/work", "/tmp", "/dev/shm"])
def test_many_medium_files_stop_at_the_tmpfs_size(slot, directory):
    (result,) = run(
        f"""
        import os
        total = 0
        try:
            for i in range(10_000):
                with open(f'{directory}/f{{i}}', 'wb') as f:
                    f.write(b'x' * (1 << 19))
                total += 1 << 19
        except OSError as exc:
            print(total, exc.errno)
        """,
        slot,
    )
    total, _errno = map(int, result.stdout.split())
    assert total <= FAST.file_mb << 20


def test_nothing_outside_the_tmpfs_mounts_is_writable(slot):
    (result,) = run(
        """
        import os
        ok = []
        for d in ['/', '/dev', '/usr', '/usr/lib', '/etc', '/proc', '/proc/sys/kernel']:
            try:
                with open(os.path.join(d, 'probe'), 'w') as f:
                    f.write('x')
                ok.append(d)
            except OSError:
                pass
        print(ok)
        """,
        slot,
    )
    assert result.stdout.strip() == b"[]"


def test_stdout_flood_is_capped_and_killed(slot):
    (result,) = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", slot)
    assert result.status == "output_limit"
    assert len(result.stdout) <= FAST.output_bytes


def test_stderr_flood_is_capped_and_killed(slot):
    (result,) = run("import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n", slot)
    assert result.status == "output_limit"
    assert len(result.stderr) <= FAST.stderr_bytes


def test_network_connect_to_a_host_listener_fails(slot):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        (result,) = run(
            f"""
            import socket
            for family, addr in [(socket.AF_INET, ('127.0.0.1', {port})), (socket.AF_INET6, ('::1', {port}))]:
                try:
                    s = socket.socket(family)
                    s.settimeout(1)
                    s.connect(addr)
                    print('CONNECTED')
                except OSError as exc:
                    print('refused', exc.errno)
            """,
            slot,
        )
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever reached it
    finally:
        listener.close()
    assert b"CONNECTED" not in result.stdout
    assert result.stdout.count(b"refused") == 2


def test_environment_secrets_are_invisible(slot, monkeypatch):
    secret = "sk-omniopd-sentinel-7f3a9c"
    monkeypatch.setenv("OMNIOPD_TEST_API_KEY", secret)
    (result,) = run(
        """
        import os
        print(dict(os.environ))
        for path in ['/proc/self/environ', f'/proc/{os.getppid()}/environ', '/proc/1/environ']:
            try:
                print(path, open(path, 'rb').read())
            except OSError as exc:
                print(path, exc)
        """,
        slot,
    )
    assert result.status == "ok", result.stderr
    assert b"/proc/1/environ" in result.stdout
    assert secret.encode() not in result.stdout + result.stderr
    assert b"OMNIOPD_TEST_API_KEY" not in result.stdout + result.stderr


def test_files_outside_the_sandbox_are_unreadable(slot, tmp_path):
    secret = "expected-output-sentinel-4b1d"
    hidden = secret[::-1]  # the program must not contain the secret itself (it is a file too)
    expected = tmp_path / "expected_outputs.json"
    expected.write_text(secret)
    root_only = tmp_path / "root_only.txt"
    root_only.write_text(secret)
    root_only.chmod(0o600)
    repo_file = os.path.abspath(__file__)
    (result,) = run(
        f"""
        import os
        for path in [{str(expected)!r}, {str(root_only)!r}, {repo_file!r}, '/etc/shadow', '/etc/passwd', '/root']:
            try:
                print(path, open(path).read()[:50])
            except OSError as exc:
                print(path, 'unreadable', exc.errno)
        hits = []
        for top in ['/', '/tmp', '/work']:
            for d, dirs, files in os.walk(top):
                if d.startswith('/proc') or d.startswith('/usr'):
                    dirs[:] = []
                    continue
                for f in files:
                    path = os.path.realpath(os.path.join(d, f))
                    if path.startswith(('/usr/', '/proc/')) or not os.path.isfile(path):
                        continue  # system files (and /etc/alternatives links into /usr)
                    try:
                        if {hidden!r}[::-1] in open(path, errors='ignore').read():
                            hits.append(path)
                    except OSError:
                        pass
        print('hits', hits)
        """,
        slot,
    )
    assert result.status == "ok", result.stderr
    assert secret.encode() not in result.stdout
    assert result.stdout.count(b"unreadable") == 6
    assert b"hits []" in result.stdout


def test_sandboxed_processes_hold_the_slot_uid_and_no_capabilities(slot):
    if slot.uid is None:
        pytest.skip("not root: the sandbox keeps the caller's uid (nothing to check)")
    from eval.sandbox.slots import uid_processes

    seen: list[str] = []
    with Sandbox("import time\ntime.sleep(2)\n", limits=Limits(time_s=5), slot=slot) as box:
        worker = threading.Thread(target=box.run, args=(b"",))
        worker.start()
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:  # outer bwrap, init, runner, program
            seen = []
            for pid in uid_processes(slot.uid):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
                    seen.append(f.read())
            time.sleep(0.05)
        worker.join()
    assert len(seen) >= 3
    for status in seen:
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert fields["Uid"].split() == [str(slot.uid)] * 4
        assert fields["Gid"].split() == [str(slot.uid)] * 4
        assert fields["Groups"].split() == []
        assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0


def test_program_cannot_signal_its_parent_the_host_or_other_slots(slot):
    from eval.sandbox.slots import acquire_slot

    host_pid = os.getpid()
    # A process of another worker slot's uid, as another sample's program would be. That slot
    # is held for the test: another test process's sandbox may not sweep its uid meanwhile.
    neighbour = other = None
    if slot.uid is not None:
        other = acquire_slot()
        neighbour = subprocess.Popen(["setpriv", f"--reuid={other.uid}", f"--regid={other.uid}", "--clear-groups",
                                      "sleep", "60"])
    targets = [host_pid] + ([neighbour.pid] if neighbour else [])
    try:
        results = run(
            f"""
            import os, signal
            for pid in {targets} + [os.getppid()]:
                for sig in [signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL]:
                    try:
                        os.kill(pid, sig)
                        print(pid, 'sent')
                    except OSError as exc:
                        print(pid, exc.errno)
            """,
            slot,
            tests=2,
        )
        assert neighbour is None or neighbour.poll() is None, "the other slot's process was killed"
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
        if other is not None:
            other.release()
    # Host pids do not exist in the sandbox's pid namespace (ESRCH = 3); the parent is the
    # runner, pid 1 of the namespace, which the kernel shields from signals sent from inside.
    assert [r.status for r in results] == ["ok", "ok"]
    expected = [f"{pid} 3" for pid in targets for _ in range(3)] + ["1 sent"] * 3
    assert results[0].stdout.decode().splitlines() == expected
    assert os.getpid() == host_pid


def test_kill_minus_one_reaches_nothing_outside(slot):
    (result,) = run("import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('survived')\n", slot)
    assert result.status in ("ok", "runtime_error")  # the runner dies with it: a failed sample
    (again,) = run("print('next sample fine')\n", slot)  # the same slot works afterwards
    assert again.stdout == b"next sample fine\n"


def test_setsid_double_fork_does_not_outlive_the_test(slot):
    results = run(
        """
        import os, time
        if os.path.exists('/tmp/started'):  # second test: is the grandchild still there?
            others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid(), os.getppid())]
            print('others', others)
        else:
            open('/tmp/started', 'w').close()
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(3600)
                os._exit(0)
            print('forked')
        """,
        slot,
        tests=2,
    )
    assert results[0].stdout == b"forked\n"
    assert results[1].stdout == b"others []\n"


def test_background_processes_are_killed_after_each_test(slot):
    results = run(
        """
        import os, subprocess
        others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid(), os.getppid())]
        print('others', others)
        subprocess.Popen(['sleep', '3600'])
        subprocess.Popen(['/bin/sh', '-c', 'while true; do sleep 1; done'], start_new_session=True)
        """,
        slot,
        tests=2,
    )
    assert [r.stdout for r in results] == [b"others []\n", b"others []\n"]


def test_stopping_the_runner_has_no_effect(slot):
    (result,) = run("import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nprint('still here')\n", slot)
    assert result.status == "ok" and result.stdout == b"still here\n"


def test_seccomp_refuses_ptrace_namespaces_and_mounts(slot):
    (result,) = run(
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        calls = {
            'ptrace': lambda: libc.ptrace(16, 1, 0, 0),              # PTRACE_ATTACH to init
            'unshare': lambda: libc.unshare(0x10000000),             # CLONE_NEWUSER
            'mount': lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None),
            'keyctl': lambda: libc.syscall(250, 0, 0, 0, 0),
        }
        for name, call in calls.items():
            print(name, call(), ctypes.get_errno())
        for path in [f'/proc/{os.getppid()}/mem', f'/proc/{os.getppid()}/fd']:
            try:
                os.listdir(path) if path.endswith('fd') else open(path, 'rb')
                print(path, 'OPEN')
            except OSError as exc:
                print(path, exc.errno)
        """,
        slot,
    )
    assert result.status == "ok", result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[:4] == ["ptrace -1 1", "unshare -1 1", "mount -1 1", "keyctl -1 1"]
    assert not any(line.endswith("OPEN") for line in lines)


def test_killing_the_grader_takes_the_sandbox_down(slot, tmp_path):
    if slot.uid is None:
        pytest.skip("not root: no slot uid to look for leftovers under")
    from eval.sandbox.slots import uid_processes

    ready = tmp_path / "ready"
    grader = textwrap.dedent(f"""
        from eval.sandbox import Limits, Sandbox, Slot
        with Sandbox("import time\\nopen('/tmp/x', 'w').close()\\ntime.sleep(3600)\\n",
                     limits=Limits(time_s=3600), slot=Slot({slot.index}, {slot.uid})) as box:
            results = box.run_many([b""])
            open({str(ready)!r}, "w").close()
            next(results)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", grader], env=env)
    try:
        deadline = time.monotonic() + 30
        while not (ready.exists() and len(uid_processes(slot.uid)) >= 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(uid_processes(slot.uid)) >= 3, "the sandbox never started"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10  # --die-with-parent: SIGKILL follows the grader's death
    while uid_processes(slot.uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uid_processes(slot.uid) == []
