"""one index fewer to keep up on every reward written: the rewards of a payee in a program are read through the
payee's index (ix_rewards_payee_id, the program filtered), and the index (program, payee_id) is dropped

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


def downgrade() -> None:
    op.create_index('ix_rewards_program_payee', 'rewards', ['program', 'payee_id'])
