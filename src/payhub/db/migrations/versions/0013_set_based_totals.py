"""running totals of inserted rewards added once per statement on PostgreSQL: the insert triggers of revision 0010
become statement triggers that read the statement's new rows (a transition table) and add each total's sum once

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 01:10:00.000000

Revision 0010's insert triggers ran three upserts of ``reward_totals`` (payee, partner and program totals) and one of
``budget_totals`` for each reward inserted, each upsert a new version of a row that most rewards of a batch share (a
program's month). A transaction of 2,000 rewards updated its program's total row 2,000 times, and each update
followed the chain of the versions before it: 120 µs of a reward's 166 µs insert went to the triggers. Here each
INSERT statement adds, per total, the sum of its rows that count, with the same rules (``LIVE``, ``USES_BUDGET``), the
same months and the same slot: the totals after each statement are the ones the row triggers gave.

The update and delete triggers stay row triggers with their WHEN conditions: PostgreSQL allows no transition table
on a trigger with a column list, and most updates (a reward scheduled, sent, paid) move no total. SQLite has no
statement triggers: its row triggers are unchanged.
"""

from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

TOTALS_KEY = 'program, currency, per, scope_id, month, slot'
LIVE = "r.status <> 'cancelled' AND r.kind <> 'withholding'"
USES_BUDGET = "r.budget_key IS NOT NULL AND r.status <> 'cancelled' AND NOT (r.status = 'held' AND r.hold_code = 'budget')"
MONTH = "coalesce(to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM'), '')"  # of the reward's event e
NEW_ROWS = 'payhub_new_rewards'


def _statement_bodies() -> dict[str, list[str]]:
    """The statement triggers' bodies, by trigger name.

    The new rows that count are joined to their events once, each event read by its key (the subquery is kept apart
    by ``OFFSET 0``: joined as a table, the planner may hash the whole events table once per statement), then summed
    per payee, partner and program in one upsert."""
    counted = (f'WITH n AS MATERIALIZED (SELECT r.program, r.currency, r.payee_id, e.partner_id, e.month, '
               f'r.amount_minor FROM {NEW_ROWS} r CROSS JOIN LATERAL (SELECT partner_id, {MONTH} AS month FROM events '
               f'e WHERE e.id = r.event_id OFFSET 0) e WHERE {LIVE}) ')
    scopes = [f"SELECT program, currency, {per}, {scope}, month, payhub_totals_slot(), sum(amount_minor) FROM n{extra} "
              f"GROUP BY program, currency{group}, month"
              for per, scope, extra, group in (("'payee'", 'payee_id', '', ', payee_id'),
                                               ("'partner'", 'partner_id', ' WHERE partner_id IS NOT NULL',
                                                ', partner_id'),
                                               ("'program'", "''", '', ''))]
    totals = (f'{counted}INSERT INTO reward_totals ({TOTALS_KEY}, amount_minor) {" UNION ALL ".join(scopes)} '
              f'ON CONFLICT ({TOTALS_KEY}) DO UPDATE SET amount_minor = reward_totals.amount_minor + '
              'excluded.amount_minor')
    budget = (f'INSERT INTO budget_totals (budget_key, slot, amount_minor) SELECT r.budget_key, payhub_totals_slot(), '
              f'sum(r.amount_minor) FROM {NEW_ROWS} r WHERE {USES_BUDGET} GROUP BY r.budget_key ON CONFLICT '
              '(budget_key, slot) DO UPDATE SET amount_minor = budget_totals.amount_minor + excluded.amount_minor')
    return {'trg_rewards_totals_insert': [totals], 'trg_rewards_budget_insert': [budget]}


def _row_bodies() -> dict[str, tuple[str, list[str]]]:
    """Revision 0010's row triggers (WHEN condition, body), by trigger name: what a downgrade restores."""
    live, uses_budget = LIVE.replace('r.', 'NEW.'), USES_BUDGET.replace('r.', 'NEW.')
    month = MONTH
    totals = [f'INSERT INTO reward_totals ({TOTALS_KEY}, amount_minor) SELECT NEW.program, NEW.currency, {per}, '
              f'{scope}, {month}, payhub_totals_slot(), NEW.amount_minor FROM events e WHERE e.id = NEW.event_id AND '
              f'{live}{extra} ON CONFLICT ({TOTALS_KEY}) DO UPDATE SET amount_minor = reward_totals.amount_minor + '
              'excluded.amount_minor'
              for per, scope, extra in (("'payee'", 'NEW.payee_id', ''),
                                        ("'partner'", 'e.partner_id', ' AND e.partner_id IS NOT NULL'),
                                        ("'program'", "''", ''))]
    budget = (f'INSERT INTO budget_totals (budget_key, slot, amount_minor) SELECT NEW.budget_key, payhub_totals_slot(), '
              f'NEW.amount_minor WHERE {uses_budget} ON CONFLICT (budget_key, slot) DO UPDATE SET amount_minor = '
              'budget_totals.amount_minor + excluded.amount_minor')
    return {'trg_rewards_totals_insert': (live, totals), 'trg_rewards_budget_insert': (uses_budget, [budget])}


def _function(name: str, body: list[str]) -> str:
    statements = ''.join(f'  {s};\n' for s in body)
    return f'CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{statements}  RETURN NULL;\nEND\n$$'


def _drop(name: str) -> None:
    op.execute(f'DROP TRIGGER {name} ON rewards')
    op.execute(f'DROP FUNCTION {name}()')


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for name, body in _statement_bodies().items():
        _drop(name)
        op.execute(_function(name, body))
        op.execute(f'CREATE TRIGGER {name} AFTER INSERT ON rewards REFERENCING NEW TABLE AS {NEW_ROWS} '
                   f'FOR EACH STATEMENT EXECUTE FUNCTION {name}()')


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for name, (when, body) in _row_bodies().items():
        _drop(name)
        op.execute(_function(name, body))
        op.execute(f'CREATE TRIGGER {name} AFTER INSERT ON rewards FOR EACH ROW WHEN ({when}) '
                   f'EXECUTE FUNCTION {name}()')
