"""UID-only credentials (EM4100 ID cards, QR codes) that HQ authorises online.

Revision ID: 0003_uid_credentials
Revises: 0002_enrolment
Create Date: 2026-11-22

A terminal asks HQ about a card that carries no state of its own; HQ answers from this
registry (see ``hq_server/devices/uid_credentials.py``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003_uid_credentials'
down_revision = '0002_enrolment'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('uid_credentials',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('credential', sa.String(length=128), nullable=False),
    sa.Column('holder', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('valid_from_ms', sa.BigInteger(), nullable=True),
    sa.Column('valid_to_ms', sa.BigInteger(), nullable=True),
    sa.Column('purposes', sa.String(length=200), server_default='visit', nullable=False),
    sa.Column('max_amount_fen', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('updated_at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'credential', name=op.f('pk_uid_credentials'))
    )


def downgrade() -> None:
    op.drop_table('uid_credentials')
