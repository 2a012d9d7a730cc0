"""Each store's terminal config, sent to a new terminal at enrolment.

Revision ID: 0008_store_configs
Revises: 0007_access_contracts
Create Date: 2027-01-20

A terminal used to start at config version 0 and refuse every tap until an operator
pushed a config to its device id; HQ now holds one config per store
(``onecard hq push-config --store``) and hands it over in the enrolment answer.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_store_configs'
down_revision = '0007_access_contracts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('store_configs',
    sa.Column('store', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('store', name=op.f('pk_store_configs'))
    )


def downgrade() -> None:
    op.drop_table('store_configs')
