"""`omniopd demo ...` run to its end in a child process, for the demo tests that check what a
finished run left behind (the ones that interrupt it start their own Popen)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import wait_left
from tests.workers.conftest import ROOT


def finished_demo(*args: str, timeout: float, columns: int = 160) -> subprocess.CompletedProcess[str]:
    """Run `omniopd demo ARGS` (one thread per process, a terminal `columns` wide) within what is
    left of the test's wait budget, at most `timeout` s; assert it exited 0, showing the ends
    of its output if not."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": str(columns)}
    done = subprocess.run([sys.executable, "-m", "omniopd", "demo", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=wait_left(timeout))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done
