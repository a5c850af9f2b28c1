"""payouts by status, rail and time of their last change: the settle stage's paid payouts within a rail's return
window are found by an index range, however many payouts the rail has paid before it

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 20:30:00.000000
"""

from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_payouts_status_rail_updated', 'payouts', ['status', 'rail', 'updated_at'])


def downgrade() -> None:
    op.drop_index('ix_payouts_status_rail_updated', table_name='payouts')
