"""Operators, enrolment tokens, device certificates and the device event log.

Revision ID: 0002_enrolment
Revises: 0001
Create Date: 2026-11-22

Operators authenticate HQ's HTTP API; a one-time enrolment token lets a terminal
obtain its identity; every MQTT client certificate issued to a device is kept by
serial so that rolling and revoking can put it on the broker's CRL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002_enrolment'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('operators',
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), server_default='admin', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('username', name=op.f('pk_operators'))
    )
    op.create_table('enrolment_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('store', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('expires_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('used_at_ms', sa.BigInteger(), nullable=True),
    sa.Column('device_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_enrolment_tokens'))
    )
    op.create_table('device_certificates',
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('issued_at_ms', sa.BigInteger(), nullable=False),
    sa.Column('not_after_ms', sa.BigInteger(), nullable=False),
    sa.Column('revoked_at_ms', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.device_id'], name=op.f('fk_device_certificates_device_id_devices')),
    sa.PrimaryKeyConstraint('serial', name=op.f('pk_device_certificates'))
    )
    op.create_index('ix_device_certificates_device', 'device_certificates', ['device_id'], unique=False)
    op.create_table('device_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_events'))
    )
    op.create_index('ix_device_events_device', 'device_events', ['device_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_device_events_device', table_name='device_events')
    op.drop_table('device_events')
    op.drop_index('ix_device_certificates_device', table_name='device_certificates')
    op.drop_table('device_certificates')
    op.drop_table('enrolment_tokens')
    op.drop_table('operators')
