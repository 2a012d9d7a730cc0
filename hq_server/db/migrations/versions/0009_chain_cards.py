"""The chain's stores in full (address, phone, opening hours, closing) and the card registry.

Revision ID: 0009_chain_cards
Revises: 0008_store_configs
Create Date: 2026-12-12

``cards`` is kept current by ingest (hq_server/cards/registry.py); ``card_history`` is
append-only like the ledger: the database refuses to change or delete a row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009_chain_cards'
down_revision = '0008_store_configs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('regions') as batch:
        batch.add_column(sa.Column('updated_at_ms', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('stores') as batch:
        batch.add_column(sa.Column('address', sa.Text(), server_default='', nullable=False))
        batch.add_column(sa.Column('phone', sa.String(length=40), server_default='',
                                   nullable=False))
        batch.add_column(sa.Column('opening_hours', sa.Text(), server_default='{}',
                                   nullable=False))
        batch.add_column(sa.Column('updated_at_ms', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('closed_at_ms', sa.BigInteger(), nullable=True))
    op.create_table('cards',
    sa.Column('card_id', sa.String(length=64), nullable=False),
    sa.Column('product', sa.String(length=64), server_default='', nullable=False),
    sa.Column('member_id', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('issuing_store', sa.String(length=64), nullable=True),
    sa.Column('first_seen_ms', sa.BigInteger(), nullable=False),
    sa.Column('updated_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.CheckConstraint("state IN ('blank', 'issued', 'open', 'lost', 'blocked', 'frozen', "
                       "'recalled', 'replaced')", name=op.f('ck_cards_state')),
    sa.PrimaryKeyConstraint('card_id', name=op.f('pk_cards'))
    )
    op.create_index('cards_member', 'cards', ['member_id'], unique=False)
    op.create_index('cards_issuing_store', 'cards', ['issuing_store', 'card_id'], unique=False)
    op.create_index('cards_state', 'cards', ['state', 'card_id'], unique=False)
    op.create_table('card_uids',
    sa.Column('uid', sa.String(length=32), nullable=False),
    sa.Column('card_id', sa.String(length=64), nullable=False),
    sa.Column('added_at_ms', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['card_id'], ['cards.card_id'],
                            name=op.f('fk_card_uids_card_id_cards')),
    sa.PrimaryKeyConstraint('uid', name=op.f('pk_card_uids'))
    )
    op.create_index('card_uids_card', 'card_uids', ['card_id'], unique=False)
    op.create_table('card_history',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('card_id', sa.String(length=64), nullable=False),
    sa.Column('at_ms', sa.BigInteger(), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('state_before', sa.String(length=16), nullable=True),
    sa.Column('state_after', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=128), nullable=False),
    sa.Column('store', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.Text(), server_default='{}', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_card_history'))
    )
    op.create_index('card_history_card', 'card_history', ['card_id', 'id'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION onecard_card_history_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'card_history is append-only';
            END $$ LANGUAGE plpgsql""")
        op.execute("CREATE TRIGGER card_history_append_only BEFORE UPDATE OR DELETE ON "
                   "card_history FOR EACH ROW EXECUTE FUNCTION "
                   "onecard_card_history_append_only()")
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER card_history_no_{action.lower()} BEFORE {action} ON "
                       f"card_history BEGIN SELECT RAISE(ABORT, 'card_history is "
                       f"append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS card_history_append_only ON card_history")
        op.execute("DROP FUNCTION IF EXISTS onecard_card_history_append_only()")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS card_history_no_{action}")
    op.drop_index('card_history_card', table_name='card_history')
    op.drop_table('card_history')
    op.drop_index('card_uids_card', table_name='card_uids')
    op.drop_table('card_uids')
    op.drop_index('cards_state', table_name='cards')
    op.drop_index('cards_issuing_store', table_name='cards')
    op.drop_index('cards_member', table_name='cards')
    op.drop_table('cards')
    with op.batch_alter_table('stores') as batch:
        for column in ('closed_at_ms', 'updated_at_ms', 'opening_hours', 'phone', 'address'):
            batch.drop_column(column)
    with op.batch_alter_table('regions') as batch:
        batch.drop_column('updated_at_ms')
