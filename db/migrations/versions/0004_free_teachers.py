"""free teachers: a reservation may hold 0 micro-USD (a self-hosted teacher with zero prices)

Revision ID: free_teachers
Revises: rewards
Create Date: 2026-12-05 22:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = 'free_teachers'
down_revision: str | Sequence[str] | None = 'rewards'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter a CHECK constraint in place, so the table is copied.
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_reservations_amount_pos'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_reservations_amount_nonneg'), 'amount_micros >= 0')


def downgrade() -> None:
    op.execute("DELETE FROM reservations WHERE amount_micros = 0")
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_reservations_amount_nonneg'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_reservations_amount_pos'), 'amount_micros > 0')
