"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 13:24:18.830030
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Generated from db/models by alembic autogenerate, then reviewed.
    op.create_table('problems',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('uid', sa.String(length=300), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('answer', sa.Text(), nullable=True),
    sa.Column('tests', sa.JSON(), nullable=True),
    sa.Column('split', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=300), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('answer IS NOT NULL OR tests IS NOT NULL', name=op.f('ck_problems_has_reference')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_problems')),
    sa.UniqueConstraint('content_hash', name=op.f('uq_problems_content_hash')),
    sa.UniqueConstraint('uid', name=op.f('uq_problems_uid'))
    )
    with op.batch_alter_table('problems', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_problems_split_id'), ['split', 'id'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("status IN ('created', 'running', 'finished', 'failed', 'stopped')", name=op.f('ck_runs_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('name', name=op.f('uq_runs_name'))
    )
    op.create_table('budgets',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('provider', sa.String(length=100), nullable=False),
    sa.Column('cap_micros', sa.BigInteger(), nullable=True),
    sa.Column('spent_micros', sa.BigInteger(), nullable=False),
    sa.Column('reserved_micros', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('cap_micros IS NULL OR cap_micros >= 0', name=op.f('ck_budgets_cap_nonneg')),
    sa.CheckConstraint('reserved_micros >= 0', name=op.f('ck_budgets_reserved_nonneg')),
    sa.CheckConstraint('spent_micros >= 0', name=op.f('ck_budgets_spent_nonneg')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_budgets_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_budgets')),
    sa.UniqueConstraint('run_id', 'provider', name=op.f('uq_budgets_run_id_provider'))
    )
    op.create_table('eval_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('benchmark', sa.String(length=100), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('policy_version', sa.Integer(), nullable=True),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('pass_at_1', sa.Float(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("status IN ('running', 'finished', 'failed')", name=op.f('ck_eval_runs_status')),
    sa.CheckConstraint('samples >= 1', name=op.f('ck_eval_runs_samples_pos')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_eval_runs_run_id_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_eval_runs')),
    sa.UniqueConstraint('key', name=op.f('uq_eval_runs_key'))
    )
    with op.batch_alter_table('eval_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eval_runs_benchmark'), ['benchmark'], unique=False)
        batch_op.create_index(batch_op.f('ix_eval_runs_run_id_policy_version'), ['run_id', 'policy_version'], unique=False)

    op.create_table('learner_steps',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('learner_id', sa.String(length=200), nullable=False),
    sa.Column('policy_version', sa.Integer(), nullable=False),
    sa.Column('loss', sa.Float(), nullable=True),
    sa.Column('n_bundles', sa.Integer(), nullable=False),
    sa.Column('n_tokens', sa.Integer(), nullable=False),
    sa.Column('wall_s', sa.Float(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('step >= 1', name=op.f('ck_learner_steps_step_pos')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_learner_steps_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_learner_steps')),
    sa.UniqueConstraint('run_id', 'step', name=op.f('uq_learner_steps_run_id_step'))
    )
    op.create_table('policy_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('version >= 0', name=op.f('ck_policy_versions_version_nonneg')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_policy_versions_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_versions')),
    sa.UniqueConstraint('run_id', 'version', name=op.f('uq_policy_versions_run_id_version'))
    )
    op.create_table('reservations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('provider', sa.String(length=100), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('actual_micros', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("(state = 'reserved') = (actual_micros IS NULL)", name=op.f('ck_reservations_actual_when_closed')),
    sa.CheckConstraint("state IN ('reserved', 'settled', 'expired')", name=op.f('ck_reservations_state')),
    sa.CheckConstraint('actual_micros IS NULL OR actual_micros >= 0', name=op.f('ck_reservations_actual_nonneg')),
    sa.CheckConstraint('amount_micros > 0', name=op.f('ck_reservations_amount_pos')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_reservations_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reservations'))
    )
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reservations_run_id_provider_state'), ['run_id', 'provider', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_reservations_state_created_at'), ['state', 'created_at'], unique=False)

    op.create_table('trajectories',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('problem_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('policy_version', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('sample_index', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('prompt_token_ids', sa.LargeBinary(), nullable=False),
    sa.Column('completion_token_ids', sa.LargeBinary(), nullable=False),
    sa.Column('logprobs', sa.LargeBinary(), nullable=False),
    sa.Column('entropies', sa.LargeBinary(), nullable=False),
    sa.Column('n_prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('n_completion_tokens', sa.Integer(), nullable=False),
    sa.Column('prompt_text', sa.Text(), nullable=False),
    sa.Column('completion_text', sa.Text(), nullable=False),
    sa.Column('finish_reason', sa.String(length=32), nullable=False),
    sa.Column('truncated', sa.Boolean(), nullable=False),
    sa.Column('entropy_source', sa.String(length=8), nullable=False),
    sa.Column('drop_reason', sa.String(length=64), nullable=True),
    sa.Column('drop_detail', sa.Text(), nullable=True),
    sa.Column('claimed_by', sa.String(length=200), nullable=True),
    sa.Column('claimed_at', sa.DateTime(), nullable=True),
    sa.Column('claim_expires_at', sa.DateTime(), nullable=True),
    sa.Column('consumed_step', sa.Integer(), nullable=True),
    sa.Column('audit_requeues', sa.Integer(), nullable=False),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('ready_at', sa.DateTime(), nullable=True),
    sa.Column('consumed_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("(state = 'consumed') = (consumed_step IS NOT NULL)", name=op.f('ck_trajectories_consumed_step')),
    sa.CheckConstraint("(state = 'dropped') = (drop_reason IS NOT NULL)", name=op.f('ck_trajectories_drop_reason')),
    sa.CheckConstraint("entropy_source IN ('exact', 'topk')", name=op.f('ck_trajectories_entropy_source')),
    sa.CheckConstraint("state = 'ready' OR claimed_by IS NULL", name=op.f('ck_trajectories_claim_only_ready')),
    sa.CheckConstraint("state IN ('generated', 'auditing', 'ready', 'consumed', 'dropped')", name=op.f('ck_trajectories_state')),
    sa.CheckConstraint('n_completion_tokens >= 0 AND n_prompt_tokens >= 0 AND policy_version >= 0 AND epoch >= 0 AND sample_index >= 0 AND attempt >= 0', name=op.f('ck_trajectories_counts_nonneg')),
    sa.ForeignKeyConstraint(['problem_id'], ['problems.id'], name=op.f('fk_trajectories_problem_id_problems')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_trajectories_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trajectories')),
    sa.UniqueConstraint('run_id', 'problem_id', 'epoch', 'sample_index', 'attempt', name=op.f('uq_trajectories_run_id_problem_id_epoch_sample_index_attempt'))
    )
    with op.batch_alter_table('trajectories', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trajectories_claimed_by'), ['claimed_by'], unique=False)
        batch_op.create_index(batch_op.f('ix_trajectories_run_id_state_claimed_by_id'), ['run_id', 'state', 'claimed_by', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_trajectories_run_id_state_updated_at'), ['run_id', 'state', 'updated_at'], unique=False)

    op.create_table('chunks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('trajectory_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('start', sa.Integer(), nullable=False),
    sa.Column('end', sa.Integer(), nullable=False),
    sa.Column('char_start', sa.Integer(), nullable=False),
    sa.Column('prefix_text', sa.Text(), nullable=True),
    sa.Column('student_text', sa.Text(), nullable=False),
    sa.Column('anchor_entropy', sa.Float(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('n_target', sa.Integer(), nullable=False),
    sa.Column('k_sem', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("(state = 'audited') = (k_sem IS NOT NULL) AND (k_sem IS NULL OR (k_sem >= 0 AND k_sem <= n_target))", name=op.f('ck_chunks_k_sem')),
    sa.CheckConstraint("state IN ('pending', 'audited', 'skipped_budget', 'failed')", name=op.f('ck_chunks_state')),
    sa.CheckConstraint('n_target >= 1', name=op.f('ck_chunks_n_target_pos')),
    sa.CheckConstraint('start >= 0 AND "end" > start AND char_start >= 0', name=op.f('ck_chunks_span')),
    sa.ForeignKeyConstraint(['trajectory_id'], ['trajectories.id'], name=op.f('fk_chunks_trajectory_id_trajectories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chunks')),
    sa.UniqueConstraint('trajectory_id', 'idx', name=op.f('uq_chunks_trajectory_id_idx'))
    )
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chunks_state'), ['state'], unique=False)

    op.create_table('eval_results',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('eval_run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('item_id', sa.String(length=300), nullable=False),
    sa.Column('sample_index', sa.Integer(), nullable=False),
    sa.Column('correct', sa.Boolean(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('completion', sa.Text(), nullable=False),
    sa.Column('extracted', sa.Text(), nullable=True),
    sa.Column('seed', sa.Integer(), nullable=True),
    sa.Column('n_tokens', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('sample_index >= 0', name=op.f('ck_eval_results_sample_index_nonneg')),
    sa.ForeignKeyConstraint(['eval_run_id'], ['eval_runs.id'], name=op.f('fk_eval_results_eval_run_id_eval_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_eval_results')),
    sa.UniqueConstraint('eval_run_id', 'item_id', 'sample_index', name=op.f('uq_eval_results_eval_run_id_item_id_sample_index'))
    )
    op.create_table('teacher_calls',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('chunk_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('reservation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('provider', sa.String(length=100), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('n_requested', sa.Integer(), nullable=False),
    sa.Column('n_returned', sa.Integer(), nullable=False),
    sa.Column('input_tokens', sa.Integer(), nullable=False),
    sa.Column('cached_input_tokens', sa.Integer(), nullable=False),
    sa.Column('cache_write_tokens', sa.Integer(), nullable=False),
    sa.Column('output_tokens', sa.Integer(), nullable=False),
    sa.Column('reasoning_tokens', sa.Integer(), nullable=False),
    sa.Column('reserved_micros', sa.BigInteger(), nullable=False),
    sa.Column('cost_micros', sa.BigInteger(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('error_class', sa.String(length=200), nullable=True),
    sa.Column('error_detail', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("status IN ('reserved', 'ok', 'error', 'unknown')", name=op.f('ck_teacher_calls_status')),
    sa.CheckConstraint('input_tokens >= 0 AND cached_input_tokens >= 0 AND cache_write_tokens >= 0 AND output_tokens >= 0 AND reasoning_tokens >= 0', name=op.f('ck_teacher_calls_tokens_nonneg')),
    sa.CheckConstraint('reserved_micros >= 0 AND (cost_micros IS NULL OR cost_micros >= 0)', name=op.f('ck_teacher_calls_money_nonneg')),
    sa.ForeignKeyConstraint(['chunk_id'], ['chunks.id'], name=op.f('fk_teacher_calls_chunk_id_chunks'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['reservation_id'], ['reservations.id'], name=op.f('fk_teacher_calls_reservation_id_reservations')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_teacher_calls_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_teacher_calls'))
    )
    with op.batch_alter_table('teacher_calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_teacher_calls_chunk_id'), ['chunk_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_teacher_calls_idempotency_key'), ['idempotency_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_teacher_calls_run_id_provider_created_at'), ['run_id', 'provider', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_teacher_calls_status_created_at'), ['status', 'created_at'], unique=False)

    op.create_table('teacher_samples',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('chunk_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('i', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('cut_text', sa.Text(), nullable=False),
    sa.Column('phi', sa.Float(), nullable=False),
    sa.Column('call_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('i >= 0', name=op.f('ck_teacher_samples_i_nonneg')),
    sa.CheckConstraint('phi >= 0 AND phi <= 1', name=op.f('ck_teacher_samples_phi_unit')),
    sa.ForeignKeyConstraint(['call_id'], ['teacher_calls.id'], name=op.f('fk_teacher_samples_call_id_teacher_calls'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['chunk_id'], ['chunks.id'], name=op.f('fk_teacher_samples_chunk_id_chunks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_teacher_samples')),
    sa.UniqueConstraint('chunk_id', 'i', name=op.f('uq_teacher_samples_chunk_id_i'))
    )



def downgrade() -> None:
    # Generated from db/models by alembic autogenerate, then reviewed.
    op.drop_table('teacher_samples')
    with op.batch_alter_table('teacher_calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_teacher_calls_status_created_at'))
        batch_op.drop_index(batch_op.f('ix_teacher_calls_run_id_provider_created_at'))
        batch_op.drop_index(batch_op.f('ix_teacher_calls_idempotency_key'))
        batch_op.drop_index(batch_op.f('ix_teacher_calls_chunk_id'))

    op.drop_table('teacher_calls')
    op.drop_table('eval_results')
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chunks_state'))

    op.drop_table('chunks')
    with op.batch_alter_table('trajectories', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trajectories_run_id_state_updated_at'))
        batch_op.drop_index(batch_op.f('ix_trajectories_run_id_state_claimed_by_id'))
        batch_op.drop_index(batch_op.f('ix_trajectories_claimed_by'))

    op.drop_table('trajectories')
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reservations_state_created_at'))
        batch_op.drop_index(batch_op.f('ix_reservations_run_id_provider_state'))

    op.drop_table('reservations')
    op.drop_table('policy_versions')
    op.drop_table('learner_steps')
    with op.batch_alter_table('eval_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_eval_runs_run_id_policy_version'))
        batch_op.drop_index(batch_op.f('ix_eval_runs_benchmark'))

    op.drop_table('eval_runs')
    op.drop_table('budgets')
    op.drop_table('runs')
    with op.batch_alter_table('problems', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_problems_split_id'))

    op.drop_table('problems')

