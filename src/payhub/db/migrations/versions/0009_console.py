"""the console: browser sessions signed in with an API token; partner statements delivered per payout; indexes for
the console's search (events by CRM object id, payouts by rail reference)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 08:00:00.000000
"""

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'console_sessions',
        sa.Column('id_hash', sa.String(length=64), nullable=False),
        sa.Column('token_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('csrf', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('ended_why', sa.String(length=20), nullable=True),
        sa.Column('notice', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name='fk_console_sessions_token_id_api_tokens'),
        sa.PrimaryKeyConstraint('id_hash', name='pk_console_sessions'),
    )
    op.create_index('ix_console_sessions_token', 'console_sessions', ['token_id'])
    op.create_index('ix_events_object_id', 'events', ['object_id'])
    op.create_index('ix_payouts_provider_ref', 'payouts', ['provider_ref'],
                    postgresql_ops={'provider_ref': 'varchar_pattern_ops'})
    op.create_table(
        'statement_deliveries',
        sa.Column('payout_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('channel', sa.String(length=10), nullable=False),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('destination', sa.String(length=400), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['payout_id'], ['payouts.id'], name='fk_statement_deliveries_payout_id_payouts'),
        sa.PrimaryKeyConstraint('payout_id', name='pk_statement_deliveries'),
    )


def downgrade() -> None:
    op.drop_index('ix_payouts_provider_ref', table_name='payouts')
    op.drop_index('ix_events_object_id', table_name='events')
    op.drop_table('statement_deliveries')
    op.drop_index('ix_console_sessions_token', table_name='console_sessions')
    op.drop_table('console_sessions')
