"""waiting events: an index to find future-dated events by status and date

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 21:00:00.000000
"""

from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_status_occurred', ['status', 'occurred_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_status_occurred')
