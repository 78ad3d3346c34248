"""The demo's bound on stale reservations: a reservation an audit worker left when it was
killed is expired (charged in full, its call `unknown`) by the maintenance worker the demo
runs, within audit.reservation_ttl_s + maintenance.interval_s of configs/demo.yaml."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from db.migrate import upgrade
from db.models import Reservation, TeacherCall, utcnow
from db.repo_ledger import open_call
from db.session import make_engine, make_session_factory
from omniopd.config import dump_config, load_config
from tests.workers.conftest import wait_for
from workers.store import ensure_run


def test_a_dead_workers_reservation_is_expired_by_the_demos_maintenance_worker(tmp_path, processes):
    cfg = load_config("configs/demo.yaml", [f"run.output_dir={tmp_path / 'run'}"])
    ttl, interval = cfg.audit.reservation_ttl_s, cfg.maintenance.interval_s
    assert ttl + interval <= 120  # the bound the demo promises (docs/workers.md)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(dump_config(cfg))
    engine = make_engine(cfg.store_url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    with sessions.begin() as s:
        run_id = ensure_run(s, cfg).id
        call = open_call(s, run_id=run_id, provider="emulated", model=cfg.teachers["emulated"].model,
                         reserve_micros=1234, idempotency_key="t1-c1-dead/0")
    with sessions.begin() as s:  # the worker holding it was SIGKILLed ttl seconds ago
        s.execute(update(Reservation).where(Reservation.id == call.reservation_id)
                  .values(created_at=utcnow() - timedelta(seconds=ttl)))
    processes(["-m", "omniopd", "worker", "maintenance", "-c", str(config_file)], tmp_path / "maintenance.log")

    def settled():
        with sessions.begin() as s:
            state = s.scalar(select(Reservation.state).where(Reservation.id == call.reservation_id))
            row = s.get(TeacherCall, call.id)
            return state == "expired" and (row.status, row.cost_micros) == ("unknown", 1234)

    try:
        wait_for(settled, interval + 60, "the maintenance worker to expire the dead worker's reservation")
    finally:
        engine.dispose()
