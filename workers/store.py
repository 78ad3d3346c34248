"""The run row as the processes of a run create it from their config (db/store.py opens
the store itself)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.repo_runs import RunRecord, open_run
from omniopd.config import OmniConfig, public_dict
from omniopd.money import usd_to_micros


def ensure_run(session: Session, config: OmniConfig) -> RunRecord:
    """Get or create the config's run, with one budget per configured teacher
    (teachers.<name>.budget_usd) and the run-wide cap (audit.budget_usd): the config's USD
    caps become integer micro-USD here, once, rounded up."""
    return open_run(
        session,
        name=config.run.name,
        config=public_dict(config),  # no secret reaches the store
        base_model_path=config.student.path,
        provider_caps={
            name: None if t.budget_usd is None else usd_to_micros(t.budget_usd) for name, t in config.teachers.items()
        },
        run_cap=None if config.audit.budget_usd is None else usd_to_micros(config.audit.budget_usd),
    )
