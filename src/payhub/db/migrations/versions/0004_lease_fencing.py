"""lease fencing: a token per claim on payouts and sources

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('payouts', 'sources'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('lease_token', sa.String(length=32), nullable=True))


def downgrade() -> None:
    for table in ('sources', 'payouts'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('lease_token')
