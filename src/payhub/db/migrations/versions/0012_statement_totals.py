"""running totals on PostgreSQL kept once per statement: the triggers on ``rewards`` that keep ``reward_totals`` and
``budget_totals`` (revision 0010) run once per INSERT, UPDATE or DELETE statement over its transition tables,
summing the statement's rows per total in one upsert, instead of three upserts per row

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 21:00:00.000000

What a statement adds to a total is what the row triggers added, row by row: the same rules (a reward counts unless
it is cancelled or a backup withholding line; it uses its budget unless it is cancelled or held for the budget), the
same month of the event, the same slot of the transaction (``payhub_totals_slot()``). An update counts only the
rows whose contribution moved, as the row triggers' conditions did. The upsert writes each total once per statement,
in the order of its key, so two transactions sharing a slot lock its rows in the same order. SQLite keeps its row
triggers (it has no statement triggers); the trigger on ``events`` stays a row trigger on both.
"""

import importlib.util
from pathlib import Path

from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

_spec = importlib.util.spec_from_file_location('payhub_revision_0010',
                                              Path(__file__).with_name('0010_running_totals.py'))
assert _spec is not None and _spec.loader is not None
totals = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(totals)

LIVE = totals.LIVE
USES_BUDGET = totals.USES_BUDGET
KEY = 'program, currency, per, scope_id, month'
MONTH = "coalesce(to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM'), '')"
REPLACED = ('trg_rewards_totals_insert', 'trg_rewards_totals_update', 'trg_rewards_totals_delete',
            'trg_rewards_budget_insert', 'trg_rewards_budget_update', 'trg_rewards_budget_delete')


def _contributions(rows: str, sign: str) -> str:
    """What each counting row of ``rows`` (a transition table, or a subquery ``r``) adds to its three totals."""
    live = LIVE.format(r='r')
    return ' UNION ALL '.join(
        f'SELECT r.program, r.currency, {per} AS per, {scope} AS scope_id, {MONTH} AS month, '
        f'{sign}r.amount_minor AS amount_minor FROM {rows} r JOIN events e ON e.id = r.event_id WHERE {live}{extra}'
        for per, scope, extra in (("'payee'", 'r.payee_id', ''),
                                  ("'partner'", 'e.partner_id', ' AND e.partner_id IS NOT NULL'),
                                  ("'program'", "''", '')))


def _add_totals(parts: str) -> str:
    return (f'INSERT INTO reward_totals ({KEY}, slot, amount_minor) SELECT {KEY}, payhub_totals_slot(), '
            f'sum(amount_minor) FROM ({parts}) t GROUP BY {KEY} ORDER BY {KEY} ON CONFLICT ({KEY}, slot) '
            'DO UPDATE SET amount_minor = reward_totals.amount_minor + excluded.amount_minor')


def _budget(rows: str, sign: str) -> str:
    return (f'SELECT r.budget_key, {sign}r.amount_minor AS amount_minor FROM {rows} r '
            f'WHERE {USES_BUDGET.format(r="r")}')


def _add_budget(parts: str) -> str:
    return ('INSERT INTO budget_totals (budget_key, slot, amount_minor) SELECT budget_key, payhub_totals_slot(), '
            f'sum(amount_minor) FROM ({parts}) t GROUP BY budget_key ORDER BY budget_key '
            'ON CONFLICT (budget_key, slot) DO UPDATE SET amount_minor = budget_totals.amount_minor + '
            'excluded.amount_minor')


def _moved(counts: str, columns: tuple[str, ...]) -> str:
    """The updated rows whose contribution moved, as pairs of old (o) and new (n) rows."""
    condition = totals._contribution_changed('postgresql', counts, columns).replace('OLD.', 'o.').replace('NEW.', 'n.')
    return f'old_rows o JOIN new_rows n ON n.id = o.id WHERE {condition}'


def _statement_triggers() -> list[tuple[str, str, str, str]]:
    """(name, event, transition tables, body statement) of each statement trigger."""
    totals_moved = _moved(LIVE, totals.COUNTED_FOR)
    budget_moved = _moved(USES_BUDGET, ('amount_minor', 'budget_key'))
    return [
        ('trg_rewards_totals_insert', 'INSERT', 'NEW TABLE AS new_rows', _add_totals(_contributions('new_rows', ''))),
        ('trg_rewards_totals_update', 'UPDATE', 'OLD TABLE AS old_rows NEW TABLE AS new_rows', _add_totals(
            f"{_contributions(f'(SELECT o.* FROM {totals_moved})', '-')} UNION ALL "
            f"{_contributions(f'(SELECT n.* FROM {totals_moved})', '')}")),
        ('trg_rewards_totals_delete', 'DELETE', 'OLD TABLE AS old_rows', _add_totals(_contributions('old_rows', '-'))),
        ('trg_rewards_budget_insert', 'INSERT', 'NEW TABLE AS new_rows', _add_budget(_budget('new_rows', ''))),
        ('trg_rewards_budget_update', 'UPDATE', 'OLD TABLE AS old_rows NEW TABLE AS new_rows', _add_budget(
            f"{_budget(f'(SELECT o.* FROM {budget_moved})', '-')} UNION ALL "
            f"{_budget(f'(SELECT n.* FROM {budget_moved})', '')}")),
        ('trg_rewards_budget_delete', 'DELETE', 'OLD TABLE AS old_rows', _add_budget(_budget('old_rows', '-'))),
    ]


def _drop_row_triggers() -> None:
    for name in REPLACED:
        op.execute(f'DROP TRIGGER {name} ON rewards')
        op.execute(f'DROP FUNCTION {name}()')


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    _drop_row_triggers()
    for name, event, tables, body in _statement_triggers():
        op.execute(f'CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  {body};\n'
                   '  RETURN NULL;\nEND\n$$')
        op.execute(f'CREATE TRIGGER {name} AFTER {event} ON rewards REFERENCING {tables} FOR EACH STATEMENT '
                   f'EXECUTE FUNCTION {name}()')


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    _drop_row_triggers()
    for name, table, event, when, body in totals._triggers('postgresql'):
        if name not in REPLACED:
            continue
        statements = ''.join(f'  {s};\n' for s in body)
        op.execute(f'CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{statements}'
                   '  RETURN NULL;\nEND\n$$')
        op.execute(f'CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW WHEN ({when}) '
                   f'EXECUTE FUNCTION {name}()')
