"""named states: CHECK constraints on the status columns (events, calculations, rewards, payouts, attempts)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 03:00:00.000000

The values are those of payhub.states when this revision was written; a later change of a state set is a new
revision. SQLite cannot add a constraint to a table: the table is made again under its own name from its own CREATE
statement with the constraints appended (so the other tables' foreign keys keep naming it, and stay enforced, deferred
to the commit), its rows copied back and its indexes created again.
"""

from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

CHECKS: dict[str, dict[str, tuple[str, ...]]] = {
    'events': {'status': ('ingested', 'waiting', 'calculated', 'quarantined')},
    'calculations': {'status': ('rewarded', 'not_eligible', 'failed')},
    'rewards': {
        'status': ('awaiting_approval', 'pending', 'held', 'carried', 'scheduled', 'sent', 'paid', 'cancelled'),
        'hold_code': ('budget', 'no_payee', 'no_rail', 'fx_rate', 'payout_failed', 'operator'),
    },
    'payouts': {'status': ('scheduled', 'sending', 'retrying', 'unknown', 'unresolved', 'sent', 'paid', 'rejected',
                           'returned', 'failed', 'held', 'cancelled')},
    'attempts': {
        'kind': ('send', 'lookup'),
        'outcome': ('accepted', 'paid', 'rejected', 'returned', 'retry', 'unknown', 'not_found', 'sent'),
    },
}


def _constraints(table: str) -> dict[str, str]:
    """Each CHECK of ``table``: its name → its condition."""
    return {f'ck_{table}_{column}': f"{column} IN ({', '.join(repr(v) for v in allowed)})"
            for column, allowed in CHECKS[table].items()}


def _clauses(table: str) -> list[str]:
    return [f'CONSTRAINT {name} CHECK ({condition})' for name, condition in _constraints(table).items()]


def _rebuild_sqlite(table: str, edit) -> None:  # type: ignore[no-untyped-def]
    """Rebuild ``table`` from its CREATE statement as ``edit`` changes it, keeping its name, rows and indexes.

    The rows wait in a plain copy while the table is made again; foreign keys are deferred to the commit, by which
    time every row a foreign key names is back."""
    conn = op.get_bind()
    create = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                  (table,)).scalar_one()
    indexes = list(conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                                        "AND sql IS NOT NULL", (table,)).scalars())
    copy = f'_copy_{table}'
    conn.exec_driver_sql('PRAGMA defer_foreign_keys = ON')  # until the commit
    conn.exec_driver_sql(f'CREATE TABLE {copy} AS SELECT * FROM {table}')
    conn.exec_driver_sql(f'DROP TABLE {table}')
    conn.exec_driver_sql(edit(create))
    conn.exec_driver_sql(f'INSERT INTO {table} SELECT * FROM {copy}')
    conn.exec_driver_sql(f'DROP TABLE {copy}')
    for sql in indexes:
        conn.exec_driver_sql(sql)


def upgrade() -> None:
    for table in CHECKS:
        if op.get_bind().dialect.name == 'sqlite':
            _rebuild_sqlite(table, lambda sql, t=table: sql.rstrip()[:-1].rstrip() + ', \n\t'
                            + ', \n\t'.join(_clauses(t)) + '\n)')
        else:
            for name, condition in _constraints(table).items():
                op.create_check_constraint(op.f(name), table, condition)


def _without_checks(sql: str, table: str) -> str:
    """``table``'s CREATE TABLE text without the CHECK clauses upgrade() added; refuses text it did not write."""
    clauses = ', \n\t' + ', \n\t'.join(_clauses(table))
    if clauses not in sql:
        raise RuntimeError(f"{table}: its CREATE TABLE text does not end with the CHECKs of revision 0007; "
                           "not downgraded")
    return sql.replace(clauses, '')


def downgrade() -> None:
    for table in reversed(list(CHECKS)):
        if op.get_bind().dialect.name == 'sqlite':
            _rebuild_sqlite(table, lambda sql, t=table: _without_checks(sql, t))
        else:
            for name in _constraints(table):
                op.drop_constraint(op.f(name), table, type_='check')
