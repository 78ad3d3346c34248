"""A Celery task whose store transaction loses its connection (db/outage.py): it waits for
the store and runs again in-process, instead of being acked as failed and left for later.
The maintenance sweep is the example: a stale reservation is expired exactly once, whether
the lost COMMIT went through or not."""

from __future__ import annotations

from datetime import timedelta

import pytest

from db.models import utcnow
from db.repo_budget import reserve
from tests.db.outage_helpers import CutCommit
from tests.workers.audit_helpers import budget_rows
from tests.workers.conftest import Store, write_config
from workers.app import MAINTENANCE_TASK, make_celery, runtime

pytestmark = pytest.mark.services


@pytest.mark.parametrize("when", ["after", "before"])
def test_a_sweep_cut_by_a_store_outage_runs_again_instead_of_failing(tmp_path, redis_url, redis_prefix, when):
    config_path = write_config(
        tmp_path / "run.yaml",
        broker={"mode": "redis", "url": redis_url, "key_prefix": redis_prefix},
        teachers={"emu": {"kind": "anthropic", "model": "m", "budget_usd": 1.0}},
        audit={"reservation_ttl_s": 300},
    )
    store = Store(config_path)
    app = make_celery(store.config, broker_url=redis_url, config_path=config_path)
    with store.sessions.begin() as s:  # a dead worker's reservation, long stale
        reserve(s, run_id=store.run_id, provider="emu", amount=40_000, now=utcnow() - timedelta(hours=1))
    rt = runtime(app)
    flaky = CutCommit(rt.sessions, when)
    rt.sessions, flaky.armed = flaky, True  # the sweep's transaction loses its connection
    try:
        result = app.tasks[MAINTENANCE_TASK].apply()
        assert result.successful(), result.traceback
        assert flaky.cut == 1
        # "before": the first sweep rolled back and the second expired it; "after": the
        # first one's commit stood and the second found nothing left to do
        assert result.get()["expired_reservations"] == (1 if when == "before" else 0)
        rows = budget_rows(store)
        assert (rows["emu"].spent_micros, rows["emu"].reserved_micros) == (40_000, 0)  # charged once
    finally:
        rt.engine.dispose()
        store.engine.dispose()
