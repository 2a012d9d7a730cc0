"""Business rules on records: HQ's catalogue, rule breaks, per-card spend.

Revision ID: 0005_record_rules
Revises: 0003_uid_credentials
Create Date: 2026-11-30

Ingest judges every record against the device's role and store, the card's history and
the catalogue in force (``hq_server/ingest/record_rules.py``); a record that breaks a rule posts
to suspense and is listed in ``rule_breaks``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_record_rules'
down_revision = '0004_quarantine_caps'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('catalogues',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('effective_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_catalogues'))
    )
    op.create_table('rule_breaks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('card_id', sa.String(length=64), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('detected_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('reviewed_at_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rule_breaks')),
    sa.UniqueConstraint('device_id', 'seq', 'rule', name='uq_rule_breaks_record_rule')
    )
    op.create_index('ix_rule_breaks_card', 'rule_breaks', ['card_id'], unique=False)
    op.create_table('card_spend',
    sa.Column('card_id', sa.String(length=64), nullable=False),
    sa.Column('debited_fen', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('refunded_fen', sa.BigInteger(), server_default='0', nullable=False),
    sa.CheckConstraint('refunded_fen <= debited_fen',
                       name=op.f('ck_card_spend_refunds_within_debits')),
    sa.PrimaryKeyConstraint('card_id', name=op.f('pk_card_spend'))
    )


def downgrade() -> None:
    op.drop_table('card_spend')
    op.drop_index('ix_rule_breaks_card', table_name='rule_breaks')
    op.drop_table('rule_breaks')
    op.drop_table('catalogues')
