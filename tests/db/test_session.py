"""The session helpers shared by the repositories."""

from __future__ import annotations

from sqlalchemy import select

from db.models import Budget, utcnow
from db.session import insert_ignoring_conflicts


def test_insert_ignoring_conflicts_stores_new_rows_and_leaves_existing_ones_alone(sessions, run_id):
    """The idempotent insert of add_teacher_samples, record_eval_results and
    record_trajectories, on each backend: a row whose unique key exists is skipped (not
    updated, no error), and RETURNING lists only the rows that were new."""
    table = Budget.__table__

    def row(provider: str, spent: int) -> dict:
        return {"run_id": run_id, "provider": provider, "cap_micros": None, "spent_micros": spent,
                "reserved_micros": 0, "updated_at": utcnow()}

    with sessions.begin() as s:
        stmt = insert_ignoring_conflicts(s, table, unique=["run_id", "provider"]).returning(table.c.provider)
        first = s.execute(stmt, [row("x", 1), row("y", 2)]).scalars().all()
    with sessions.begin() as s:
        again = s.execute(stmt, [row("y", 99), row("z", 3), row("claude", 99)]).scalars().all()
    assert sorted(first) == ["x", "y"]
    assert again == ["z"]  # "y" and the fixture's "claude" already exist
    with sessions.begin() as s:
        spent = dict(s.execute(select(Budget.provider, Budget.spent_micros).where(Budget.run_id == run_id)).all())
    assert spent["y"] == 2 and spent["claude"] == 0 and spent["z"] == 3
