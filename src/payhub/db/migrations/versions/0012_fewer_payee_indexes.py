"""two indexes fewer to keep up on every write: a payee's sums in a program are read through the payee's index
(ix_rewards_payee_id) and the events of a CRM object through the object id's (ix_events_object_id); the indexes
(program, payee_id) on rewards and (source, object_type, object_id) on events are dropped

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 23:40:00.000000
"""

from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_rewards_program_payee', table_name='rewards')
    op.drop_index('ix_events_object', table_name='events')


def downgrade() -> None:
    op.create_index('ix_events_object', 'events', ['source', 'object_type', 'object_id'])
    op.create_index('ix_rewards_program_payee', 'rewards', ['program', 'payee_id'])
