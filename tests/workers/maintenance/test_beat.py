"""The beat embedded in the maintenance worker dies with it: a worker killed with SIGKILL
(as the chaos run and the OOM killer do) leaves no orphaned beat behind that would go on
scheduling sweeps beside the restarted worker's own."""

from __future__ import annotations

import os
import signal

import psutil

from db.migrate import upgrade
from db.session import make_engine
from omniopd.config import dump_config, load_config
from tests.workers.conftest import wait_for


def test_killing_the_maintenance_worker_ends_its_embedded_beat(tmp_path, processes):
    cfg = load_config("configs/demo.yaml", [f"run.output_dir={tmp_path / 'run'}"])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(dump_config(cfg))
    engine = make_engine(cfg.store_url)
    upgrade(engine)
    engine.dispose()
    worker = processes(["-m", "omniopd", "worker", "maintenance", "-c", str(config_file)], tmp_path / "maintenance.log")

    def beat() -> psutil.Process | None:
        try:
            children = psutil.Process(worker.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        return next((c for c in children if "beat" in " ".join(c.cmdline()) or "beat" in c.name()), None)

    found = wait_for(beat, 120, "the maintenance worker's embedded beat to start")
    os.kill(worker.pid, signal.SIGKILL)  # the worker only, as a crash would
    wait_for(lambda: not found.is_running() or found.status() == psutil.STATUS_ZOMBIE, 15,
             "the orphaned beat to exit with its worker")
