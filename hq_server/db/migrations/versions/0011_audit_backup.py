"""The audit log learns where an action happened; the recycle bin (数据回收站).

Revision ID: 0011_audit_backup
Revises: 0010_operators_access
Create Date: 2026-12-03

``audit_log.store`` is the store the action's target belongs to (None for chain-level
things): a store manager reads the actions on their store's things. Older rows keep
None, and their hash is unchanged (the store enters a row's hash only when set).
Adding a column fires no UPDATE trigger: the log stays append-only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_audit_backup'
down_revision = '0010_operators_access'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_log', recreate='never') as batch:
        batch.add_column(sa.Column('store', sa.String(length=64), nullable=True))
    op.create_index('audit_log_store', 'audit_log', ['store', 'seq'], unique=False)
    op.create_index('audit_log_operator', 'audit_log', ['operator', 'seq'], unique=False)
    op.create_table('recycle_bin',
    sa.Column('entry_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('target_id', sa.String(length=128), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('store', sa.String(length=64), nullable=True),
    sa.Column('region', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('deleted_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('deleted_by', sa.String(length=64), nullable=False),
    sa.Column('closed_at_ms', sa.BigInteger(), nullable=True),
    sa.Column('closed_by', sa.String(length=64), nullable=True),
    sa.Column('snapshot_json', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('entry_id', name=op.f('pk_recycle_bin'))
    )
    op.create_index('recycle_bin_target', 'recycle_bin', ['kind', 'target_id', 'state'],
                    unique=False)
    op.create_index('recycle_bin_state', 'recycle_bin', ['state', 'entry_id'], unique=False)


def downgrade() -> None:
    op.drop_index('recycle_bin_state', table_name='recycle_bin')
    op.drop_index('recycle_bin_target', table_name='recycle_bin')
    op.drop_table('recycle_bin')
    op.drop_index('audit_log_operator', table_name='audit_log')
    op.drop_index('audit_log_store', table_name='audit_log')
    with op.batch_alter_table('audit_log', recreate='never') as batch:
        batch.drop_column('store')
