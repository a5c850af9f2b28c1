"""compliance: payees' tax profiles, flags, aliases and erasure; per-payee keys; sanctions lists and payee
screenings; payout hold codes and release requests; withholding lines; the retention cut of the audit log

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 05:00:00.000000

The rewards' hold_code CHECK gains 'tax_form' and 'with_reward'; payouts gain 'first_sent_at' (the payment date the
tax report counts by), events 'waits_for_payee' (the payee a waiting event's flag caps need in the registry). SQLite
cannot change a constraint: the rewards table is made again under its own name from its own CREATE statement with
the new list (as revision 0007 does), its rows copied back.
"""

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
OLD_HOLDS = ('budget', 'no_payee', 'no_rail', 'fx_rate', 'payout_failed', 'operator')
NEW_HOLDS = (*OLD_HOLDS, 'tax_form', 'with_reward')
def _payee_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
    sa.Column('aliases', sa.Text(), nullable=False, server_default='[]'),
    sa.Column('flags', sa.Text(), nullable=False, server_default='[]'),
    sa.Column('tax_form', sa.String(length=10), nullable=True),
    sa.Column('form_signed_on', sa.Date(), nullable=True),
    sa.Column('tin_kind', sa.String(length=20), nullable=True),
    sa.Column('tin_status', sa.String(length=20), nullable=True),
    sa.Column('tin_sealed', sa.Text(), nullable=True),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True),
    ]


def _holds(values: tuple[str, ...]) -> str:
    return f"hold_code IN ({', '.join(repr(v) for v in values)})"


def _swap_sqlite_check(old: str, new: str) -> None:
    """Make the rewards table again with ``new`` in place of the CHECK ``old``, keeping its rows and indexes."""
    conn = op.get_bind()
    create = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'rewards'"
                                  ).scalar_one()
    if old not in create:
        raise RuntimeError("rewards: its CREATE TABLE text does not hold the expected hold_code CHECK")
    indexes = list(conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'rewards' "
                                        "AND sql IS NOT NULL").scalars())
    conn.exec_driver_sql('PRAGMA defer_foreign_keys = ON')
    conn.exec_driver_sql('CREATE TABLE _copy_rewards AS SELECT * FROM rewards')
    conn.exec_driver_sql('DROP TABLE rewards')
    conn.exec_driver_sql(create.replace(old, new))
    conn.exec_driver_sql('INSERT INTO rewards SELECT * FROM _copy_rewards')
    conn.exec_driver_sql('DROP TABLE _copy_rewards')
    for sql in indexes:
        conn.exec_driver_sql(sql)


def _set_holds(old: tuple[str, ...], new: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == 'sqlite':
        _swap_sqlite_check(_holds(old), _holds(new))
    else:
        op.drop_constraint(op.f('ck_rewards_hold_code'), 'rewards', type_='check')
        op.create_check_constraint(op.f('ck_rewards_hold_code'), 'rewards', _holds(new))


def upgrade() -> None:
    for column in _payee_columns():
        op.add_column('payees', column)
    _set_holds(OLD_HOLDS, NEW_HOLDS)
    op.add_column('rewards', sa.Column('kind', sa.String(length=20), nullable=False, server_default='reward'))
    op.add_column('payouts', sa.Column('hold_code', sa.String(length=40), nullable=True))
    op.add_column('payouts', sa.Column('first_sent_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('events', sa.Column('waits_for_payee', sa.String(length=200), nullable=True))
    op.create_table(
        'personal_keys',
        sa.Column('subject', sa.String(length=200), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('subject', name='pk_personal_keys'),
    )
    op.create_table(
        'screening_lists',
        sa.Column('id', ID, primary_key=True, autoincrement=True),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('format', sa.String(length=40), nullable=False),
        sa.Column('published_on', sa.Date(), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('entries', sa.Integer(), nullable=False),
        sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('loaded_by', sa.String(length=200), nullable=False),
        sa.Column('current', sa.Boolean(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_screening_lists'),
    )
    op.create_index('ix_screening_lists_name_current', 'screening_lists', ['name', 'current'])
    op.create_table(
        'payee_screenings',
        sa.Column('payee_id', sa.String(length=200), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.Column('screened_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('payee_id', name='pk_payee_screenings'),
    )
    op.create_table(
        'release_requests',
        sa.Column('payout_id', ID, nullable=False),
        sa.Column('operator', sa.String(length=200), nullable=False),
        sa.Column('justification', sa.Text(), nullable=False),
        sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['payout_id'], ['payouts.id'], name='fk_release_requests_payout_id_payouts'),
        sa.PrimaryKeyConstraint('payout_id', 'operator', name='pk_release_requests'),
    )
    op.create_table(
        'audit_cut',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('archive', sa.Text(), nullable=False),
        sa.Column('archive_sha256', sa.String(length=64), nullable=False),
        sa.Column('top_payout', sa.BigInteger(), nullable=False),
        sa.Column('top_reward', sa.BigInteger(), nullable=False),
        sa.Column('signature', sa.Text(), nullable=False),
        sa.Column('key_id', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_audit_cut'),
    )


def downgrade() -> None:
    op.drop_table('audit_cut')
    op.drop_table('release_requests')
    op.drop_table('payee_screenings')
    op.drop_index('ix_screening_lists_name_current', table_name='screening_lists')
    op.drop_table('screening_lists')
    op.drop_table('personal_keys')
    _drop_column('events', 'waits_for_payee')
    _drop_column('payouts', 'first_sent_at')
    _drop_column('payouts', 'hold_code')
    _drop_column('rewards', 'kind')
    _set_holds(NEW_HOLDS, OLD_HOLDS)
    for column in reversed(_payee_columns()):
        _drop_column('payees', column.name)


def _drop_column(table: str, column: str) -> None:
    """Drop a column; on SQLite with its own ALTER TABLE, which edits the table's CREATE text in place (a batch
    rebuild would rewrite it, and revision 0007's downgrade reads that text)."""
    if op.get_bind().dialect.name == 'sqlite':
        op.get_bind().exec_driver_sql(f'ALTER TABLE {table} DROP COLUMN {column}')
    else:
        op.drop_column(table, column)
