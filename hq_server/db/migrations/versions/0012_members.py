"""Members (会员资料) with their search columns, custom field definitions, and the
ledger's transactions indexed by card (a member's visits, spend and last transactions).

Revision ID: 0012_members
Revises: 0011_audit_backup
Create Date: 2026-12-03

Search columns on PostgreSQL use varchar_pattern_ops so that a prefix search
(``LIKE '138%'``) uses its index whatever the database's collation.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_members'
down_revision = '0011_audit_backup'
branch_labels = None
depends_on = None

_PATTERN_INDEXES = ("mobile_search", "name_norm", "name_pinyin", "name_initials")


def upgrade() -> None:
    op.create_table('members',
    sa.Column('member_id', sa.String(length=32), nullable=False),
    sa.Column('store_id', sa.String(length=64), nullable=True),
    sa.Column('category', sa.String(length=32), nullable=True),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('name_on_card', sa.String(length=50), nullable=True),
    sa.Column('gender', sa.String(length=8), nullable=True),
    sa.Column('nationality', sa.String(length=64), nullable=True),
    sa.Column('birthday', sa.String(length=10), nullable=True),
    sa.Column('id_number', sa.String(length=32), nullable=True),
    sa.Column('mobile', sa.String(length=16), nullable=True),
    sa.Column('home_phone', sa.String(length=32), nullable=True),
    sa.Column('home_address', sa.String(length=300), nullable=True),
    sa.Column('home_postcode', sa.String(length=16), nullable=True),
    sa.Column('billing_address', sa.String(length=300), nullable=True),
    sa.Column('billing_postcode', sa.String(length=16), nullable=True),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('company', sa.String(length=200), nullable=True),
    sa.Column('title', sa.String(length=100), nullable=True),
    sa.Column('company_phone', sa.String(length=32), nullable=True),
    sa.Column('company_address', sa.String(length=300), nullable=True),
    sa.Column('join_date', sa.String(length=10), nullable=True),
    sa.Column('referrer_id', sa.String(length=32), nullable=True),
    sa.Column('vip_name', sa.String(length=100), nullable=True),
    sa.Column('vip_birthday', sa.String(length=10), nullable=True),
    sa.Column('vip_address', sa.String(length=300), nullable=True),
    sa.Column('wedding_anniversary', sa.String(length=10), nullable=True),
    sa.Column('habits', sa.Text(), nullable=True),
    sa.Column('remark1', sa.Text(), nullable=True),
    sa.Column('remark2', sa.Text(), nullable=True),
    sa.Column('remark3', sa.Text(), nullable=True),
    sa.Column('custom_json', sa.Text(), server_default='{}', nullable=False),
    sa.Column('name_norm', sa.String(length=100), nullable=False),
    sa.Column('name_pinyin', sa.String(length=200), nullable=False),
    sa.Column('name_initials', sa.String(length=100), nullable=False),
    sa.Column('mobile_search', sa.String(length=16), nullable=True),
    sa.Column('id_number_norm', sa.String(length=32), nullable=True),
    sa.Column('birth_month', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('merged_into', sa.String(length=32), nullable=True),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('updated_at_ms', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("status IN ('active', 'deleted', 'merged')",
                       name=op.f('ck_members_status')),
    sa.ForeignKeyConstraint(['store_id'], ['stores.store_id'],
                            name=op.f('fk_members_store_id_stores')),
    sa.ForeignKeyConstraint(['referrer_id'], ['members.member_id'],
                            name=op.f('fk_members_referrer_id_members')),
    sa.ForeignKeyConstraint(['merged_into'], ['members.member_id'],
                            name=op.f('fk_members_merged_into_members')),
    sa.PrimaryKeyConstraint('member_id', name=op.f('pk_members')),
    sa.UniqueConstraint('mobile', name='uq_members_mobile')
    )
    def where(column: str) -> dict[str, sa.TextClause]:
        # mostly-empty columns: indexed where they hold a value (see tables.py)
        condition = sa.text(f"{column} IS NOT NULL")
        return {"sqlite_where": condition, "postgresql_where": condition}

    for column in _PATTERN_INDEXES:
        op.create_index(f'ix_members_{column}', 'members', [column], unique=False,
                        postgresql_ops={column: 'varchar_pattern_ops'},
                        **(where(column) if column == "mobile_search" else {}))
    op.create_index('ix_members_id_number', 'members', ['id_number_norm'], unique=False,
                    **where('id_number_norm'))
    op.create_index('ix_members_store', 'members', ['store_id', 'member_id'], unique=False)
    op.create_index('ix_members_join_date', 'members', ['join_date'], unique=False)
    op.create_index('ix_members_birth_month', 'members', ['birth_month'], unique=False)
    op.create_index('ix_members_referrer', 'members', ['referrer_id'], unique=False,
                    **where('referrer_id'))
    op.create_table('member_fields',
    sa.Column('key', sa.String(length=40), nullable=False),
    sa.Column('label', sa.String(length=100), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('max_length', sa.Integer(), nullable=False),
    sa.Column('choices_json', sa.Text(), server_default='[]', nullable=False),
    sa.Column('default_json', sa.Text(), nullable=True),
    sa.Column('required', sa.Boolean(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_member_fields'))
    )
    op.create_index('ix_ledger_transactions_card', 'ledger_transactions',
                    ['card_id', 'posted_at_ms'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_ledger_transactions_card', table_name='ledger_transactions')
    op.drop_table('member_fields')
    for name in ('referrer', 'birth_month', 'join_date', 'store', 'id_number',
                 *_PATTERN_INDEXES):
        op.drop_index(f'ix_members_{name}', table_name='members')
    op.drop_table('members')
