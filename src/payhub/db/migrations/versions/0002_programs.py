"""programs: approvals, budgets, funds, adjustments, fx, indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:48:19.854388
"""

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('fund_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('program', sa.String(length=200), nullable=False),
    sa.Column('holder_id', sa.String(length=200), nullable=False),
    sa.Column('unit', sa.String(length=10), nullable=False),
    sa.Column('amount', sa.String(length=60), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_fund_entries_event_id_events')),
    sa.ForeignKeyConstraint(['program', 'event_id'], ['calculations.program', 'calculations.event_id'], name='fk_fund_entries_calculation'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fund_entries'))
    )
    with op.batch_alter_table('fund_entries', schema=None) as batch_op:
        batch_op.create_index('ix_fund_entries_holder', ['program', 'holder_id', 'unit'], unique=False)

    op.create_table('approvals',
    sa.Column('reward_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('approver', sa.String(length=200), nullable=False),
    sa.Column('approved_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['reward_id'], ['rewards.id'], name=op.f('fk_approvals_reward_id_rewards')),
    sa.PrimaryKeyConstraint('reward_id', 'approver', name=op.f('pk_approvals'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_partner', ['partner_id', 'occurred_at'], unique=False)

    with op.batch_alter_table('payees', schema=None) as batch_op:
        batch_op.add_column(sa.Column('min_payout', sa.String(length=60), nullable=True))

    with op.batch_alter_table('payout_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fx', sa.Text(), nullable=True))

    with op.batch_alter_table('rewards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approvals_needed', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('budget_key', sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column('fx_mode', sa.String(length=10), nullable=True))
        batch_op.create_index('ix_rewards_budget', ['budget_key'], unique=False)
        batch_op.create_index('ix_rewards_program_payee', ['program', 'payee_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('rewards', schema=None) as batch_op:
        batch_op.drop_index('ix_rewards_program_payee')
        batch_op.drop_index('ix_rewards_budget')
        batch_op.drop_column('fx_mode')
        batch_op.drop_column('budget_key')
        batch_op.drop_column('approvals_needed')

    with op.batch_alter_table('payout_items', schema=None) as batch_op:
        batch_op.drop_column('fx')

    with op.batch_alter_table('payees', schema=None) as batch_op:
        batch_op.drop_column('min_payout')

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_partner')

    op.drop_table('approvals')
    with op.batch_alter_table('fund_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_fund_entries_holder')

    op.drop_table('fund_entries')
