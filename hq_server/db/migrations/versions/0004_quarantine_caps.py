"""Quarantine capped per device: an index by device, and each device's budget.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A stolen terminal could fill HQ's disk with refused messages; ingest now keeps at most a
count, a number of bytes and a rate of quarantine rows per device, drops the oldest, and
counts what it dropped (see ``hq_server/ingest/batch.py``, ``QuarantineLimits``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_quarantine_caps'
down_revision = '0003_uid_credentials'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_quarantine_device', 'quarantine', ['device_id', 'id'], unique=False)
    op.create_table('quarantine_budget',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('window_start_ms', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('window_rows', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('dropped_rows', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('dropped_bytes', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('last_dropped_at_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_quarantine_budget'))
    )


def downgrade() -> None:
    op.drop_table('quarantine_budget')
    op.drop_index('ix_quarantine_device', table_name='quarantine')
