"""Operators with roles and scopes; sign-in throttling, sessions, API tokens, staff cards.

Revision ID: 0010_operators_access
Revises: 0009_chain_cards
Create Date: 2026-12-12

Operators created before roles existed (role ``admin``) become HQ administrators
(``hq_admin``, 总部管理员) scoped to the whole chain. The new tables hold only hashes of
secrets (session ids, API tokens, PINs).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010_operators_access'
down_revision = '0009_chain_cards'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('operators') as batch:
        batch.alter_column('role', existing_type=sa.String(length=16),
                           server_default='hq_admin', existing_nullable=False)
        batch.add_column(sa.Column('scope', sa.String(length=80), server_default='chain',
                                   nullable=False))
        batch.add_column(sa.Column('display_name', sa.String(length=200), server_default='',
                                   nullable=False))
        batch.add_column(sa.Column('version', sa.Integer(), server_default='1',
                                   nullable=False))
        batch.add_column(sa.Column('updated_at_ms', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('last_login_at_ms', sa.BigInteger(), nullable=True))
    op.execute("UPDATE operators SET role = 'hq_admin', scope = 'chain' WHERE role = 'admin'")
    op.create_table('login_throttle',
    sa.Column('subject', sa.String(length=160), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('first_failure_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('last_failure_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('blocked_until_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('subject', name=op.f('pk_login_throttle'))
    )
    op.create_table('operator_sessions',
    sa.Column('session_hash', sa.String(length=64), nullable=False),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=True),
    sa.Column('origin', sa.String(length=128), nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('issued_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('last_seen_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('expires_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('idle_ms', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['operator'], ['operators.username'],
                            name=op.f('fk_operator_sessions_operator_operators')),
    sa.PrimaryKeyConstraint('session_hash', name=op.f('pk_operator_sessions'))
    )
    op.create_index('operator_sessions_operator', 'operator_sessions', ['operator'])
    op.create_table('api_tokens',
    sa.Column('token_id', sa.String(length=32), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('scope', sa.String(length=80), nullable=False),
    sa.Column('permissions', sa.Text(), nullable=True),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('expires_at_ms', sa.BigInteger(), nullable=True),
    sa.Column('last_used_at_ms', sa.BigInteger(), nullable=True),
    sa.Column('revoked_at_ms', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['operator'], ['operators.username'],
                            name=op.f('fk_api_tokens_operator_operators')),
    sa.PrimaryKeyConstraint('token_id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_index('api_tokens_operator', 'api_tokens', ['operator'])
    op.create_table('staff_cards',
    sa.Column('card_id', sa.String(length=64), nullable=False),
    sa.Column('operator', sa.String(length=64), nullable=False),
    sa.Column('pin_hash', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['operator'], ['operators.username'],
                            name=op.f('fk_staff_cards_operator_operators')),
    sa.PrimaryKeyConstraint('card_id', name=op.f('pk_staff_cards'))
    )
    op.create_table('security_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
              autoincrement=True, nullable=False),
    sa.Column('at_ms', sa.BigInteger(), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('subject', sa.String(length=160), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.String(length=200), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_security_events'))
    )
    op.create_index('security_events_at', 'security_events', ['at_ms'])


def downgrade() -> None:
    op.drop_index('security_events_at', table_name='security_events')
    op.drop_table('security_events')
    op.drop_table('staff_cards')
    op.drop_index('api_tokens_operator', table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_index('operator_sessions_operator', table_name='operator_sessions')
    op.drop_table('operator_sessions')
    op.drop_table('login_throttle')
    op.execute("UPDATE operators SET role = 'admin' WHERE role = 'hq_admin'")
    with op.batch_alter_table('operators') as batch:
        for column in ('last_login_at_ms', 'updated_at_ms', 'version', 'display_name',
                       'scope'):
            batch.drop_column(column)
        batch.alter_column('role', existing_type=sa.String(length=16),
                           server_default='admin', existing_nullable=False)
