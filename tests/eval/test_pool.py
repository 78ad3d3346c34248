"""The timeout pool: a stuck job is killed from outside, the pool carries on."""

from __future__ import annotations

import os
import time

import pytest

from eval.pool import PoolBroken, TimeoutPool


def slow_square(job: tuple[int, float]) -> int:
    """Test-only job: sleep, then square (a stand-in for a grading that hangs)."""
    value, sleep_s = job
    time.sleep(sleep_s)
    return value * value


def fails_on_three(value: int) -> int:
    if value == 3:
        raise ValueError("three is not allowed")
    if value == 4:
        os._exit(1)  # the worker dies mid-job
    return value


def always_dies(value: int) -> int:
    os._exit(1)


def test_stuck_job_is_killed_at_its_deadline_and_others_complete() -> None:
    jobs = [(1, 0.0), (2, 60.0), (3, 0.0), (4, 0.0)]
    with TimeoutPool(slow_square, workers=2, timeout_s=1.5) as pool:
        start = time.perf_counter()
        outcomes = pool.map(jobs)
        elapsed = time.perf_counter() - start
        killed = list(pool.killed_pids)
    assert [o.status for o in outcomes] == ["ok", "timeout", "ok", "ok"]
    assert [o.value for o in outcomes] == [1, None, 9, 16]
    assert elapsed < 30  # nowhere near the 60 s the stuck job wanted
    assert len(killed) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)


def test_job_errors_and_worker_deaths_are_reported_in_order_not_raised() -> None:
    with TimeoutPool(fails_on_three, workers=2, timeout_s=30) as pool:
        outcomes = pool.map([1, 2, 3, 4, 5])
        again = pool.map([6, 7])  # the pool stays usable
    assert [o.status for o in outcomes] == ["ok", "ok", "error", "error", "ok"]
    assert "three is not allowed" in outcomes[2].error
    assert outcomes[3].error == "worker died"
    assert [o.value for o in again] == [6, 7]


def test_a_job_function_that_always_kills_its_worker_breaks_the_pool_loudly() -> None:
    with TimeoutPool(always_dies, workers=1, timeout_s=30) as pool, pytest.raises(PoolBroken, match="died 3 times"):
        pool.map(list(range(5)))


def test_close_stops_every_worker() -> None:
    pool = TimeoutPool(slow_square, workers=2, timeout_s=30)
    pool.map([(1, 0.0), (2, 0.0)])
    procs = [w.proc for w in pool._workers]
    pool.close()
    assert all(not p.is_alive() for p in procs)
    pool.close()  # idempotent


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


ORPHAN_SCRIPT = """
import os, sys, threading, time
from eval.math import MathGrader
g = MathGrader(workers=1, timeout_s=600, check=False)
threading.Thread(target=lambda: g.grade_answers(["5"], ["Answer: 99999999!"]), daemon=True).start()
while not g.pool._workers or g.pool._workers[0].job is None:
    time.sleep(0.05)
time.sleep(0.5)
open(sys.argv[1], "w").write(str(g.pool._workers[0].proc.pid))
os._exit(0)  # the main process dies while the worker is deep in a pathological job
"""


def test_a_worker_stuck_in_a_job_dies_with_the_main_process(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[2]
    pid_file = tmp_path / "worker.pid"
    # no pipes: an orphaned worker would hold them open and stall this test
    proc = subprocess.run([sys.executable, "-c", ORPHAN_SCRIPT, str(pid_file)], cwd=root, timeout=120,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, 9)  # leave nothing running, then fail
        pytest.fail(f"grading worker {pid} outlived the main process")


def test_an_interrupted_map_leaves_no_stale_answers_for_the_next_one() -> None:
    import signal

    class Interrupted(Exception):
        pass

    def interrupt(*_: object) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with TimeoutPool(slow_square, workers=2, timeout_s=30) as pool:
            pool.map([(0, 0.0), (1, 0.0)])  # both workers up
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            with pytest.raises(Interrupted):
                pool.map([(5, 1.5), (6, 1.5)])  # like Ctrl-C while workers are busy
            outcomes = pool.map([(2, 0.0), (3, 0.0)])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert [o.value for o in outcomes] == [4, 9]
