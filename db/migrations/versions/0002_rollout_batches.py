"""rollout batches: what the driver issued (db/models/rollouts.py)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 13:54:50.460262
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Generated from db/models by alembic autogenerate, then reviewed.
    op.create_table('rollout_batches',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target_version', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('sends', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(), nullable=True),
    sa.Column('reloaded_version', sa.Integer(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.CheckConstraint("(state = 'recorded') = (recorded_at IS NOT NULL)", name=op.f('ck_rollout_batches_recorded_at')),
    sa.CheckConstraint("state IN ('issued', 'recorded')", name=op.f('ck_rollout_batches_state')),
    sa.CheckConstraint('target_version >= 0 AND sends >= 1', name=op.f('ck_rollout_batches_counts')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_rollout_batches_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollout_batches'))
    )
    with op.batch_alter_table('rollout_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rollout_batches_run_id_reloaded_version'), ['run_id', 'reloaded_version'], unique=False)
        batch_op.create_index(batch_op.f('ix_rollout_batches_run_id_state'), ['run_id', 'state'], unique=False)

    op.create_table('rollout_slots',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('problem_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('sample_index', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.CheckConstraint('epoch >= 0 AND sample_index >= 0 AND attempt >= 0', name=op.f('ck_rollout_slots_counts_nonneg')),
    sa.ForeignKeyConstraint(['batch_id'], ['rollout_batches.id'], name=op.f('fk_rollout_slots_batch_id_rollout_batches'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['problem_id'], ['problems.id'], name=op.f('fk_rollout_slots_problem_id_problems')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_rollout_slots_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rollout_slots')),
    sa.UniqueConstraint('run_id', 'problem_id', 'epoch', 'sample_index', 'attempt', name=op.f('uq_rollout_slots_run_id_problem_id_epoch_sample_index_attempt'))
    )
    with op.batch_alter_table('rollout_slots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rollout_slots_batch_id'), ['batch_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('rollout_slots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rollout_slots_batch_id'))

    op.drop_table('rollout_slots')
    with op.batch_alter_table('rollout_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rollout_batches_run_id_state'))
        batch_op.drop_index(batch_op.f('ix_rollout_batches_run_id_reloaded_version'))

    op.drop_table('rollout_batches')
