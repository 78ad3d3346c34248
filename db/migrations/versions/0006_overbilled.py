"""overbilled: budgets remember a provider that billed above a reservation (db/models/spend.py)

Revision ID: overbilled
Revises: outbox
Create Date: 2026-12-05 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'overbilled'
down_revision: str | Sequence[str] | None = 'outbox'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('budgets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('overbilled_micros', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('alarm', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('budgets', schema=None) as batch_op:
        batch_op.drop_column('alarm')
        batch_op.drop_column('overbilled_micros')
