"""Test tasks: a fake audit implementing the real interface, and a worker entry point.

`fake_audit` is registered under the production name AUDIT_TASK and does what the real
audit does to the store (begin_audit -> one sample at a time -> complete_chunk ->
promote_if_complete), sleeping OMNIOPD_PROBE_DELAY seconds before each sample so tests
can kill it mid-task. Every delivery and every stored sample is appended to
<output_dir>/probe.log with the pid, so a test can see redeliveries and prove that each
sample's effect happened exactly once.

    python -m tests.workers.probe_tasks CONFIG POOL CONCURRENCY   # run a worker on the audit queue
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from celery import Celery

from db.repo_audit import (
    TeacherSampleIn,
    add_teacher_samples,
    begin_audit,
    complete_chunk,
    promote_if_complete,
)
from workers.app import AUDIT_TASK, runtime


def probe_log(app: Celery, line: str) -> None:
    path = Path(app.omniopd_config.run.output_dir) / "probe.log"
    with open(path, "a") as handle:
        handle.write(line + "\n")


def register(app: Celery) -> None:
    @app.task(name=AUDIT_TASK, bind=True, shared=False)
    def fake_audit(self, trajectory_id: int) -> None:
        rt = runtime(self.app)
        delay = float(os.environ.get("OMNIOPD_PROBE_DELAY", "0"))
        probe_log(self.app, f"deliver {trajectory_id} {os.getpid()}")
        with rt.sessions.begin() as session:
            work = begin_audit(session, trajectory_id=trajectory_id)
        if work.done:
            return
        for chunk in work.chunks:
            for i in chunk.missing:
                time.sleep(delay)
                with rt.sessions.begin() as session:
                    new = add_teacher_samples(session, chunk_id=chunk.id, samples=[TeacherSampleIn(i, f"t{i}", f"t{i}", 0.5)])
                probe_log(self.app, f"sample {chunk.id} {i} {os.getpid()} new={new}")
            with rt.sessions.begin() as session:
                complete_chunk(session, chunk_id=chunk.id, k_sem=0.5 * chunk.n_target)
        with rt.sessions.begin() as session:
            promote_if_complete(session, trajectory_id=trajectory_id)
        probe_log(self.app, f"done {trajectory_id} {os.getpid()}")


if __name__ == "__main__":
    from omniopd.config import load_config
    from workers.app import audit_queue
    from workers.launch import run_worker

    config = load_config(sys.argv[1])
    sys.exit(
        run_worker(
            config, queues=[audit_queue(config.audit.teacher)], pool=sys.argv[2], concurrency=int(sys.argv[3]),
            role="probe", config_path=sys.argv[1], extra_task_modules=["tests.workers.probe_tasks"],
        )
    )
