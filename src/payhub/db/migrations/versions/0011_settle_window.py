"""payouts claimed by index ranges, however many a rail has paid before: the disburse stage's claimable payouts of a
rail by id (a partial index of the payouts in a claimable status), the settle stage's paid payouts within a rail's
return window by status, rail and time of their last change

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 20:30:00.000000
"""

import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


CLAIMABLE = "status IN ('scheduled', 'retrying', 'unknown', 'sending')"


def upgrade() -> None:
    op.create_index('ix_payouts_status_rail_updated', 'payouts', ['status', 'rail', 'updated_at'])
    op.create_index('ix_payouts_claimable', 'payouts', ['rail', 'id'], sqlite_where=sa.text(CLAIMABLE),
                    postgresql_where=sa.text(CLAIMABLE))


def downgrade() -> None:
    op.drop_index('ix_payouts_claimable', table_name='payouts')
    op.drop_index('ix_payouts_status_rail_updated', table_name='payouts')
