"""Initial HQ schema: device registry, records, ledger, reconciliation, denylist, presence.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Besides the tables, the ledger's append-only rule is put into the database itself:
triggers refuse any UPDATE or DELETE of ledger transactions, ledger entries and the
denylist log (a correction is a reversal, a delisting is a new "remove" entry).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('anomalies',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('anomaly_key', sa.String(length=255), nullable=False),
    sa.Column('card_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='open', nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('evidence', sa.Text(), nullable=False),
    sa.Column('detected_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('cleared_at_ms', sa.BigInteger(), nullable=True),
    sa.CheckConstraint("severity IN ('low', 'medium', 'high')", name=op.f('ck_anomalies_severity')),
    sa.CheckConstraint("status IN ('open', 'cleared')", name=op.f('ck_anomalies_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_anomalies')),
    sa.UniqueConstraint('anomaly_key', name=op.f('uq_anomalies_anomaly_key'))
    )
    op.create_index('ix_anomalies_card', 'anomalies', ['card_id'], unique=False)
    op.create_table('card_reconciliation',
    sa.Column('card_id', sa.String(length=64), nullable=False),
    sa.Column('touched', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('reconciled_touch', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('expected_purse', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('expected_visits', sa.Text(), server_default='{}', nullable=False),
    sa.Column('expected_points', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('card_purse', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('card_visits', sa.Text(), server_default='{}', nullable=False),
    sa.Column('card_counter', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('open_anomalies', sa.Integer(), server_default='0', nullable=False),
    sa.Column('reconciled_at_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('card_id', name=op.f('pk_card_reconciliation'))
    )
    op.create_table('counters',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_counters'))
    )
    op.create_table('denylist_entries',
    sa.Column('version', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('card_id', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('effective_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("action IN ('add', 'remove')", name=op.f('ck_denylist_entries_action')),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_denylist_entries'))
    )
    op.create_index('ix_denylist_entries_card', 'denylist_entries', ['card_id'], unique=False)
    op.create_table('devices',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('store', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), server_default='gate', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('registered_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('contiguous_through', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('highest_seen', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_devices'))
    )
    op.create_table('ledger_accounts',
    sa.Column('account', sa.String(length=160), nullable=False),
    sa.Column('asset', sa.String(length=80), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('credit_floor', sa.Boolean(), nullable=False),
    sa.Column('debits', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('credits', sa.BigInteger(), server_default='0', nullable=False),
    sa.CheckConstraint('NOT credit_floor OR debits <= credits', name=op.f('ck_ledger_accounts_debits_within_credits')),
    sa.CheckConstraint('debits >= 0 AND credits >= 0', name=op.f('ck_ledger_accounts_totals_non_negative')),
    sa.PrimaryKeyConstraint('account', name=op.f('pk_ledger_accounts')),
    sa.UniqueConstraint('account', 'asset', name='uq_ledger_accounts_account_asset')
    )
    op.create_table('ledger_transactions',
    sa.Column('txn_id', sa.String(length=96), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=True),
    sa.Column('seq', sa.BigInteger(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('store', sa.String(length=64), nullable=False),
    sa.Column('card_id', sa.String(length=64), nullable=True),
    sa.Column('posted_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('reverses', sa.String(length=96), nullable=True),
    sa.Column('memo', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['reverses'], ['ledger_transactions.txn_id'], name=op.f('fk_ledger_transactions_reverses_ledger_transactions')),
    sa.PrimaryKeyConstraint('txn_id', name=op.f('pk_ledger_transactions')),
    sa.UniqueConstraint('reverses', name=op.f('uq_ledger_transactions_reverses'))
    )
    op.create_index('ix_ledger_transactions_posted', 'ledger_transactions', ['posted_at_ms'], unique=False)
    op.create_table('quarantine',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=True),
    sa.Column('seq', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('wire', sa.LargeBinary(), nullable=False),
    sa.Column('received_at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quarantine'))
    )
    op.create_table('device_presence',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('online', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('bdseq', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('session_started_ms', sa.BigInteger(), nullable=True),
    sa.Column('last_seen_ms', sa.BigInteger(), nullable=True),
    sa.Column('went_offline_ms', sa.BigInteger(), nullable=True),
    sa.Column('offline_reason', sa.String(length=16), nullable=True),
    sa.Column('software_version', sa.String(length=64), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=True),
    sa.Column('store', sa.String(length=64), nullable=True),
    sa.Column('config_version', sa.BigInteger(), nullable=True),
    sa.Column('denylist_version', sa.BigInteger(), nullable=True),
    sa.Column('readers', sa.Text(), nullable=True),
    sa.Column('outbox_depth', sa.BigInteger(), nullable=True),
    sa.Column('oldest_unsent_age_ms', sa.BigInteger(), nullable=True),
    sa.Column('last_ack_seq', sa.BigInteger(), nullable=True),
    sa.Column('disk_free_bytes', sa.BigInteger(), nullable=True),
    sa.Column('clock_offset_ms', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.device_id'], name=op.f('fk_device_presence_device_id_devices')),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_presence'))
    )
    op.create_table('ledger_entries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('txn_id', sa.String(length=96), nullable=False),
    sa.Column('account', sa.String(length=160), nullable=False),
    sa.Column('asset', sa.String(length=80), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('amount <> 0', name=op.f('ck_ledger_entries_amount_not_zero')),
    sa.ForeignKeyConstraint(['account', 'asset'], ['ledger_accounts.account', 'ledger_accounts.asset'], name='fk_ledger_entries_account_ledger_accounts'),
    sa.ForeignKeyConstraint(['txn_id'], ['ledger_transactions.txn_id'], name=op.f('fk_ledger_entries_txn_id_ledger_transactions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entries'))
    )
    op.create_index('ix_entries_account', 'ledger_entries', ['account', 'asset'], unique=False)
    op.create_index('ix_entries_txn', 'ledger_entries', ['txn_id'], unique=False)
    op.create_table('records',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('record_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('prev_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('wire', sa.LargeBinary(), nullable=False),
    sa.Column('card_id', sa.String(length=64), nullable=False),
    sa.Column('operation', sa.Integer(), nullable=False),
    sa.Column('card_counter', sa.BigInteger(), nullable=False),
    sa.Column('device_time_ms', sa.BigInteger(), nullable=False),
    sa.Column('received_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.CheckConstraint("status IN ('posted', 'quarantined')", name=op.f('ck_records_status')),
    sa.ForeignKeyConstraint(['device_id'], ['devices.device_id'], name=op.f('fk_records_device_id_devices')),
    sa.PrimaryKeyConstraint('device_id', 'seq', name='pk_records')
    )
    op.create_index('ix_records_card', 'records', ['card_id', 'card_counter'], unique=False)


    _append_only_triggers()


APPEND_ONLY = ("ledger_transactions", "ledger_entries", "denylist_entries")


def _append_only_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION onecard_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only: post a reversal instead', TG_TABLE_NAME;
            END $$ LANGUAGE plpgsql""")
        for table in APPEND_ONLY:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION onecard_append_only()")
        return
    for table in APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: post a reversal "
                       f"instead'); END")


def _drop_append_only_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS onecard_append_only()")
        return
    for table in APPEND_ONLY:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_index('ix_records_card', table_name='records')
    op.drop_table('records')
    op.drop_index('ix_entries_txn', table_name='ledger_entries')
    op.drop_index('ix_entries_account', table_name='ledger_entries')
    op.drop_table('ledger_entries')
    op.drop_table('device_presence')
    op.drop_table('quarantine')
    op.drop_index('ix_ledger_transactions_posted', table_name='ledger_transactions')
    op.drop_table('ledger_transactions')
    op.drop_table('ledger_accounts')
    op.drop_table('devices')
    op.drop_index('ix_denylist_entries_card', table_name='denylist_entries')
    op.drop_table('denylist_entries')
    op.drop_table('counters')
    op.drop_table('card_reconciliation')
    op.drop_index('ix_anomalies_card', table_name='anomalies')
    op.drop_table('anomalies')
