"""The CI chaos run: `omniopd chaos` runs the demo task in production mode (its own
PostgreSQL database and redis-server, the learner and four workers as real processes)
under one seeded fault schedule, and every invariant holds with its counts printed.
The soak (scripts/chaos.sh) runs 200 schedules and more the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import wait_left
from tests.workers.conftest import ROOT

pytestmark = [pytest.mark.services, pytest.mark.slow]

SEED = 9  # its schedule: every kind of fault (learner, rollout, audit, maintenance killed, a Redis restart,
# killed database connections), a teacher with 5xx, timeouts, garbage bodies and 429s, a tight cap
INVARIANTS = (
    "every trajectory trained at most once", "every paid attempt is in the ledger",
    "spend never exceeded any cap at any sampled instant", "no reservation is left open",
    "the run finished or stopped naming the reason",
)


@pytest.mark.long_running(seconds=50)
@pytest.mark.timeout(900)
def test_a_seeded_fault_schedule_breaks_no_invariant(tmp_path, postgres_admin_url):
    from workers.chaos.schedule import draw_schedule

    # Window 30 s, gaps of 4 s on average: the first four faults fall in the first 14 s of
    # training, before even a fast machine finishes the run (a 60 s window once let CI's run
    # end after two faults).
    schedule = draw_schedule(SEED, window_s=30, mean_gap_s=4)
    assert len({e.kind for e in schedule.events}) == 6 and schedule.teacher_faults["error_rate"] > 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"}
    done = subprocess.run(
        [sys.executable, "-m", "omniopd", "chaos", "--workdir", str(tmp_path), "--seed", str(SEED), "--window-s", "30",
         "--mean-gap-s", "4", "--postgres", postgres_admin_url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=wait_left(880),
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    for name in INVARIANTS:
        assert f"ok {name}: " in out, out[-6000:]
    [result] = [json.loads(line) for line in (tmp_path / "chaos-results.jsonl").read_text().splitlines()]
    assert result["ok"] and sum(result["injected"].values()) >= 3
    assert sum(result["restarts"].values()) >= 1  # killed processes were started again
