"""rewards: the rule-based reward of a trajectory (objectives that need rewards, e.g. grpo)

Revision ID: rewards
Revises: 0002
Create Date: 2026-12-05 22:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'rewards'
down_revision: str | Sequence[str] | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('trajectories') as batch:
        batch.add_column(sa.Column('reward', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('trajectories') as batch:
        batch.drop_column('reward')
