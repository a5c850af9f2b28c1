"""the HTTP face: API tokens, webhook deliveries and the objects webhooks named; audit filters by actor and action;
listings paged by id under each filter

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:00:00.000000
"""

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# Listings filter by one column and page by id (keyset): each filter has an index in id order.
LISTING_INDEXES = [
    ('ix_events_source_id', 'events', ['source', 'id']),
    ('ix_calculations_status_id', 'calculations', ['status', 'id']),
    ('ix_rewards_status_id', 'rewards', ['status', 'id']),
    ('ix_rewards_payee_id', 'rewards', ['payee_id', 'id']),
    ('ix_rewards_program_id', 'rewards', ['program', 'id']),
    ('ix_payouts_status_id', 'payouts', ['status', 'id']),
    ('ix_payouts_rail_id', 'payouts', ['rail', 'id']),
    ('ix_payouts_payee_id', 'payouts', ['payee_id', 'id']),
    ('ix_audit_subject_seq', 'audit_log', ['subject_id', 'seq']),
]


def upgrade() -> None:
    op.create_table(
        'api_tokens',
        sa.Column('id', ID, primary_key=True, autoincrement=True),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('role', sa.String(length=20), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=200), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_api_tokens'),
        sa.UniqueConstraint('name', name='uq_api_tokens_name'),
        sa.UniqueConstraint('token_hash', name='uq_api_tokens_token_hash'),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('source', sa.String(length=100), nullable=False),
        sa.Column('delivery_id', sa.String(length=200), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('source', 'delivery_id', name='pk_webhook_deliveries'),
    )
    op.create_index('ix_webhook_deliveries_received', 'webhook_deliveries', ['received_at'])
    op.create_table(
        'webhook_objects',
        sa.Column('id', ID, primary_key=True, autoincrement=True),
        sa.Column('source', sa.String(length=100), nullable=False),
        sa.Column('object_id', sa.String(length=500), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_webhook_objects'),
        sa.UniqueConstraint('source', 'object_id', name='uq_webhook_objects_source_object_id'),
    )
    op.create_index('ix_audit_actor', 'audit_log', ['actor', 'seq'])
    op.create_index('ix_audit_action', 'audit_log', ['action', 'seq'])
    for name, table, columns in LISTING_INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(LISTING_INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_index('ix_audit_action', table_name='audit_log')
    op.drop_index('ix_audit_actor', table_name='audit_log')
    op.drop_table('webhook_objects')
    op.drop_index('ix_webhook_deliveries_received', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_table('api_tokens')
