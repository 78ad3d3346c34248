"""The production rehearsal in CI: `scripts/rehearse.sh` runs the demo task on PostgreSQL
with the machine's Redis as broker — the learner from scripts/start_learner.sh, two rollout
workers (one on vLLM) and two audit workers from scripts/start_workers.sh, an emulated
teacher whose rate limit binds — and checks the run: it finished, every trajectory was
trained exactly once, the ledger is the teacher's bill, no cap was passed, 429s <= 1% while
the accepted rate held >= 90% of the limit, Pass@1 improved, and scripts/eval_math.sh and
eval_code.sh graded the final checkpoint. The same on RabbitMQ is a shorter run (both
rollout workers on HF, no evaluation, to keep CI within its time) with a cap low enough to
be reached: the run stops on it, and no attempt passes it.

Both runs have outages (--outage, workers/rehearsal/outage.py), every process staying up:
the Redis run loses its store for 15 s after step 2, then its broker (a redis-server of its
own) for 15 s; the RabbitMQ run its broker (through a TCP gate of its own) for 15 s after
step 1, before the cap is reached. Every check above must still hold, every process must
have lived through the outages, and each must have logged what it waited for."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import RABBITMQ_URL, wait_left
from tests.workers.conftest import ROOT

pytestmark = [pytest.mark.services, pytest.mark.slow]

CHECKS = ("the run finished or stopped naming the reason", "every trajectory trained exactly once",
          "the ledger is the sum of the billed attempts", "spend never exceeded any cap at any sampled instant",
          "the limiter held the rate limit", "every rollout worker generated on its backend")
OUTAGE_CHECKS = ("the planned outages happened", "every process lived through the outages",
                 "the processes logged what they waited for")


def rehearse(workdir, postgres_admin_url: str, redis_url: str, *args: str, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "OMP_NUM_THREADS": "1",
           "OMNIOPD_REHEARSAL_POSTGRES_URL": postgres_admin_url}
    done = subprocess.run(
        ["bash", "scripts/rehearse.sh", "configs/demo.yaml", "--workdir", str(workdir), "--redis", redis_url,
         "--rabbitmq", RABBITMQ_URL, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-8000:]
    *_, result = [json.loads(line) for line in (workdir / "rehearsal-results.jsonl").read_text().splitlines()]
    checks = {c["name"]: c for c in result["checks"]}
    for name in CHECKS + (OUTAGE_CHECKS if "--outage" in args else ()):
        assert checks[name]["ok"], (name, checks[name]["counts"])
    return result


@pytest.mark.long_running(seconds=470)
@pytest.mark.timeout(1800)  # measured: 14-20 minutes under a load average of 20 on two cores
def test_production_rehearsal_on_redis_and_rabbitmq(tmp_path, postgres_admin_url, redis_url, rabbitmq_url):
    del rabbitmq_url  # the fixture proves RabbitMQ and rabbitmqctl answer; the rehearsal makes its own vhost
    full = rehearse(tmp_path, postgres_admin_url, redis_url, "--broker", "redis", "--outage", timeout=wait_left(1300))
    checks = {c["name"]: c for c in full["checks"]}
    assert checks["Pass@1 improved"]["ok"], checks["Pass@1 improved"]["counts"]
    assert checks["scripts/eval_math.sh and eval_code.sh graded the final checkpoint"]["ok"]
    numbers = full["numbers"]
    assert numbers["rate_limited"] <= 0.01 * numbers["requests"]
    assert numbers["steady_per_min"] >= 0.9 * numbers["limit_per_min"]
    assert "rollout-0: " in checks["every rollout worker generated on its backend"]["counts"]
    assert "batches on vllm" in checks["every rollout worker generated on its backend"]["counts"]
    assert set(numbers["outages"]) == {"store", "broker"}
    # RabbitMQ: 8 steps on two HF workers, no evaluation, and a cap of $0.012 that the run
    # reaches after about 3 steps (measured: 188 attempts, 11,968 micro-USD): it stops on it;
    # its broker goes away for 15 s after step 1.
    short = rehearse(tmp_path, postgres_admin_url, redis_url, "--broker", "rabbitmq", "--max-steps", "8", "--no-vllm",
                     "--no-evaluate", "--requests-per-min", "600", "--cap-usd", "0.012", "--outage",
                     "--outage-services", "broker", "--outage-after-step", "1", timeout=wait_left(480))
    capped = {c["name"]: c for c in short["checks"]}["no attempt after the cap"]
    assert short["broker"] == "rabbitmq" and capped["ok"], capped["counts"]
