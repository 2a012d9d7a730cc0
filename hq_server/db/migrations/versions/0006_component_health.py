"""Health rows of HQ's supervised components, for `onecard hq status` and GET /health.

Revision ID: 0006_component_health
Revises: 0005_record_rules
Create Date: 2026-12-10

Each HQ process's supervisor (``hq_server/process/supervision.py``) overwrites one row per
component at every beat; other processes read them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_component_health'
down_revision = '0005_record_rules'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('component_health',
    sa.Column('process', sa.String(length=64), nullable=False),
    sa.Column('component', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('host', sa.String(length=128), nullable=True),
    sa.Column('started_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('last_beat_ms', sa.BigInteger(), nullable=False),
    sa.Column('beat_every_ms', sa.Integer(), nullable=False),
    sa.Column('restarts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('detail', sa.Text(), server_default='{}', nullable=False),
    sa.PrimaryKeyConstraint('process', 'component', name=op.f('pk_component_health'))
    )


def downgrade() -> None:
    op.drop_table('component_health')
