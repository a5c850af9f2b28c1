"""running totals: what the live rewards add up to per program, currency, scope (payee, partner, program) and month
of their event, and what each budget pool has given out, kept by triggers on ``rewards`` and ``events``

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 11:00:00.000000

Caps, budgets, flag caps and calculators' history read these rows instead of summing every past reward. The
database keeps them, in the same statement as the change: an insert, an update that changes what a reward counts
for (cancelled or not, its amount, program, payee, currency, kind, event, budget pool, a budget hold) or a delete
of a reward, and a change of an event's time or partner. Whatever path changes a reward (calculation, clawback,
operator action, erasure, retention, a replica), the totals follow. A change that keeps a reward's contribution (a
live reward going from pending to scheduled to sent) touches no total.

Each total is kept in up to 16 rows, its ``slot``s, and readers sum over the slots. On PostgreSQL a transaction
writes to one slot of its own, so concurrent writers never wait on (or deadlock over) each other's totals rows: the
first trigger of a transaction takes the first free slot from ``pg_backend_pid() % 16`` on, marked by a transaction
advisory lock (class :data:`SLOT_LOCK_CLASS`) and remembered in the setting ``payhub.totals_slot`` until the
transaction ends; with all 16 taken it shares ``pg_backend_pid() % 16`` (and may wait). The upsert conflicts only
within a slot, so no update is lost whichever slot a writer uses. SQLite (one writer) uses slot 0, as the fill here.
The totals give no lock to readers: a cap or budget check counts what other transactions have committed, as it did
when it summed the rewards. The rows are filled from the existing rewards here.

A reward counts (``reward_totals``) unless it is cancelled or a backup withholding line; it uses its budget
(``budget_totals``) unless it is cancelled or held for the budget (``payhub.store.rewards`` states the same rules).
The month is the UTC ``YYYY-MM`` of the event's ``occurred_at`` ('' for an event without a time); a per-program
total has scope ''.

``volume_totals`` holds the amounts of the events each program decided, per partner, currency, month and event
type (``payhub.store.volumes``), filled here from the decided calculations and written with new ones.
``fund_states`` holds each fund's state after its entries (``payhub.store.funds``), written by the calculate stage
with the entries; it starts empty: a fund is read from its entries until its next entry gives it a state.
"""

from decimal import Decimal

import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

TOTALS_KEY = 'program, currency, per, scope_id, month, slot'
SLOTS = 16
SLOT_LOCK_CLASS = 1885434216  # the first key of the advisory locks marking the slots taken ('payh')
# The slot of the current transaction (PostgreSQL), chosen once per transaction by its first trigger.
SLOT_FUNCTION = f"""CREATE FUNCTION payhub_totals_slot() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  chosen text := current_setting('payhub.totals_slot', true);
  candidate integer;
BEGIN
  IF chosen IS NOT NULL AND chosen <> '' THEN
    RETURN chosen::integer;
  END IF;
  FOR step IN 0..{SLOTS - 1} LOOP
    candidate := (pg_backend_pid() + step) % {SLOTS};
    IF pg_try_advisory_xact_lock({SLOT_LOCK_CLASS}, candidate) THEN
      PERFORM set_config('payhub.totals_slot', candidate::text, true);
      RETURN candidate;
    END IF;
  END LOOP;
  candidate := pg_backend_pid() % {SLOTS};
  PERFORM set_config('payhub.totals_slot', candidate::text, true);
  RETURN candidate;
END
$$"""
# A reward row R counts in the totals; uses its budget (three-valued logic as the queries it replaces: NULL is no).
LIVE = "{r}.status <> 'cancelled' AND {r}.kind <> 'withholding'"
USES_BUDGET = "{r}.budget_key IS NOT NULL AND {r}.status <> 'cancelled' AND NOT ({r}.status = 'held' AND " \
              "{r}.hold_code = 'budget')"
# The columns whose change may move a reward's contribution to the totals (whether it counts; what it counts for).
COUNTED = ('status', 'kind', 'amount_minor', 'program', 'currency', 'payee_id', 'event_id')
COUNTED_FOR = ('amount_minor', 'program', 'currency', 'payee_id', 'event_id')
BUDGETED = ('status', 'hold_code', 'amount_minor', 'budget_key')


def _month(dialect: str, column: str) -> str:
    if dialect == 'postgresql':
        return f"coalesce(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM'), '')"
    return f"coalesce(strftime('%Y-%m', {column}), '')"


def _slot(dialect: str) -> str:
    return 'payhub_totals_slot()' if dialect == 'postgresql' else '0'


def _upsert_totals(dialect: str, select: str) -> str:
    return (f'INSERT INTO reward_totals ({TOTALS_KEY}, amount_minor) {select} ON CONFLICT ({TOTALS_KEY}) '
            'DO UPDATE SET amount_minor = reward_totals.amount_minor + excluded.amount_minor')


def _add_reward(dialect: str, r: str, sign: str) -> list[str]:
    """Statements adding ``sign`` × reward ``r``'s amount to its three totals, when it counts."""
    month = _month(dialect, 'e.occurred_at')
    live = LIVE.format(r=r)
    scopes = [("'payee'", f'{r}.payee_id', ''), ("'partner'", 'e.partner_id', ' AND e.partner_id IS NOT NULL'),
              ("'program'", "''", '')]
    return [_upsert_totals(dialect, f'SELECT {r}.program, {r}.currency, {per}, {scope}, {month}, {_slot(dialect)}, '
                                    f'{sign}{r}.amount_minor FROM events e WHERE e.id = {r}.event_id AND {live}{extra}')
            for per, scope, extra in scopes]


def _move_event(dialect: str, e: str, sign: str) -> list[str]:
    """Statements adding ``sign`` × the live rewards of event ``e`` (with ``e``'s time and partner) to the totals."""
    month = _month(dialect, f'{e}.occurred_at')
    live = LIVE.format(r='r')
    scopes = [("'payee'", 'r.payee_id', '', ', r.payee_id'), ("'partner'", f'{e}.partner_id',
                                                              f' AND {e}.partner_id IS NOT NULL', ''),
              ("'program'", "''", '', '')]
    return [_upsert_totals(dialect, f'SELECT r.program, r.currency, {per}, {scope}, {month}, {_slot(dialect)}, '
                                    f'{sign}sum(r.amount_minor) '
                                    f'FROM rewards r WHERE r.event_id = {e}.id AND {live}{extra} '
                                    f'GROUP BY r.program, r.currency{group}')
            for per, scope, extra, group in scopes]


def _add_budget(dialect: str, r: str, sign: str) -> str:
    return (f'INSERT INTO budget_totals (budget_key, slot, amount_minor) SELECT {r}.budget_key, {_slot(dialect)}, '
            f'{sign}{r}.amount_minor WHERE {USES_BUDGET.format(r=r)} ON CONFLICT (budget_key, slot) '
            'DO UPDATE SET amount_minor = budget_totals.amount_minor + excluded.amount_minor')


def _changed(columns: tuple[str, ...]) -> str:
    return ' OR '.join(f'OLD.{c} IS DISTINCT FROM NEW.{c}' for c in columns)


def _contribution_changed(dialect: str, counts: str, columns: tuple[str, ...]) -> str:
    """Whether an update moves a reward's contribution: it starts or stops counting (``counts``), or it counts and
    one of ``columns`` changed."""
    used = '(({}) IS TRUE)' if dialect == 'postgresql' else 'coalesce(({}), 0)'
    old, new = (used.format(counts.format(r=r)) for r in ('OLD', 'NEW'))
    return f'{old} <> {new} OR ({new} AND ({_changed(columns)}))'


# (name, table, timing, statements per row: (reward row or event row, sign))
def _triggers(dialect: str) -> list[tuple[str, str, str, str, list[str]]]:
    """(name, table, event, WHEN condition, body statements) of each trigger."""
    moved = _changed(('occurred_at', 'partner_id'))
    return [
        ('trg_rewards_totals_insert', 'rewards', 'INSERT', LIVE.format(r='NEW'), _add_reward(dialect, 'NEW', '')),
        ('trg_rewards_totals_update', 'rewards', f'UPDATE OF {", ".join(COUNTED)}',
         _contribution_changed(dialect, LIVE, COUNTED_FOR),
         [*_add_reward(dialect, 'OLD', '-'), *_add_reward(dialect, 'NEW', '')]),
        ('trg_rewards_totals_delete', 'rewards', 'DELETE', LIVE.format(r='OLD'), _add_reward(dialect, 'OLD', '-')),
        ('trg_rewards_budget_insert', 'rewards', 'INSERT', USES_BUDGET.format(r='NEW'),
         [_add_budget(dialect, 'NEW', '')]),
        ('trg_rewards_budget_update', 'rewards', f'UPDATE OF {", ".join(BUDGETED)}',
         _contribution_changed(dialect, USES_BUDGET, ('amount_minor', 'budget_key')),
         [_add_budget(dialect, 'OLD', '-'), _add_budget(dialect, 'NEW', '')]),
        ('trg_rewards_budget_delete', 'rewards', 'DELETE', USES_BUDGET.format(r='OLD'),
         [_add_budget(dialect, 'OLD', '-')]),
        ('trg_events_totals_update', 'events', 'UPDATE OF occurred_at, partner_id', moved,
         [*_move_event(dialect, 'OLD', '-'), *_move_event(dialect, 'NEW', '')]),
    ]


def _create_triggers(dialect: str) -> None:
    if dialect == 'postgresql':
        op.execute(SLOT_FUNCTION)
    for name, table, event, when, body in _triggers(dialect):
        if dialect == 'postgresql':
            statements = ''.join(f'  {s};\n' for s in body)
            op.execute(f'CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n{statements}'
                       '  RETURN NULL;\nEND\n$$')
            op.execute(f'CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW WHEN ({when}) '
                       f'EXECUTE FUNCTION {name}()')
        else:
            statements = ''.join(f'  {s};\n' for s in body).replace('IS DISTINCT FROM', 'IS NOT')
            op.execute(f'CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW '
                       f'WHEN {when.replace("IS DISTINCT FROM", "IS NOT")}\nBEGIN\n{statements}END')


def _backfill(dialect: str) -> None:
    month = _month(dialect, 'e.occurred_at')
    live = LIVE.format(r='r')
    for per, scope, extra, group in (("'payee'", 'r.payee_id', '', ', r.payee_id'),
                                     ("'partner'", 'e.partner_id', ' AND e.partner_id IS NOT NULL', ', e.partner_id'),
                                     ("'program'", "''", '', '')):
        op.execute(f'INSERT INTO reward_totals ({TOTALS_KEY}, amount_minor) SELECT r.program, r.currency, {per}, '
                   f'{scope}, {month}, 0, sum(r.amount_minor) FROM rewards r JOIN events e ON e.id = r.event_id '
                   f'WHERE {live}{extra} GROUP BY r.program, r.currency{group}, {month}')
    op.execute(f'INSERT INTO budget_totals (budget_key, slot, amount_minor) SELECT r.budget_key, 0, sum(r.amount_minor) '
               f'FROM rewards r WHERE {USES_BUDGET.format(r="r")} GROUP BY r.budget_key')


def _backfill_volumes(dialect: str) -> None:
    """The decided events' amounts (exact decimal text) summed as Decimal, per program, partner, currency, month and
    event type; the calculations read a page at a time, by id."""
    month = _month(dialect, 'e.occurred_at')
    page = sa.text(
        f"SELECT c.id, c.program, e.partner_id, e.currency, {month}, e.event_type, e.amount FROM calculations c "
        "JOIN events e ON e.id = c.event_id WHERE c.id > :after AND c.status IN ('rewarded', 'not_eligible') AND "
        "e.partner_id IS NOT NULL AND e.partner_id <> '' AND e.amount IS NOT NULL AND e.currency IS NOT NULL AND "
        "e.currency <> '' AND e.occurred_at IS NOT NULL ORDER BY c.id LIMIT 20000")
    totals: dict[tuple[str, ...], Decimal] = {}
    after = 0
    while rows := op.get_bind().execute(page, {'after': after}).all():
        for calc_id, program, partner, currency, month_label, event_type, amount in rows:
            key = (program, partner, currency, month_label, event_type)
            totals[key] = totals.get(key, Decimal(0)) + Decimal(amount)
            after = calc_id
    table = sa.table('volume_totals', *(sa.column(c) for c in ('program', 'partner_id', 'currency', 'month',
                                                                'event_type', 'amount')))
    keys = ('program', 'partner_id', 'currency', 'month', 'event_type')
    rows_out = [dict(zip(keys, key, strict=True)) | {'amount': str(amount)} for key, amount in sorted(totals.items())]
    if rows_out:
        op.bulk_insert(table, rows_out)


def upgrade() -> None:
    op.create_table(
        'reward_totals',
        sa.Column('program', sa.String(length=200), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('per', sa.String(length=10), nullable=False),
        sa.Column('scope_id', sa.String(length=200), nullable=False),
        sa.Column('month', sa.String(length=7), nullable=False),
        sa.Column('slot', sa.SmallInteger(), nullable=False),
        sa.Column('amount_minor', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('program', 'currency', 'per', 'scope_id', 'month', 'slot', name='pk_reward_totals'),
    )
    op.create_index('ix_reward_totals_scope', 'reward_totals', ['per', 'scope_id', 'currency', 'month'])
    op.create_table(
        'budget_totals',
        sa.Column('budget_key', sa.String(length=400), nullable=False),
        sa.Column('slot', sa.SmallInteger(), nullable=False),
        sa.Column('amount_minor', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('budget_key', 'slot', name='pk_budget_totals'),
    )
    op.create_table(
        'fund_states',
        sa.Column('program', sa.String(length=200), nullable=False),
        sa.Column('holder_id', sa.String(length=200), nullable=False),
        sa.Column('unit', sa.String(length=10), nullable=False),
        sa.Column('last_entry_id', sa.BigInteger(), nullable=True),
        sa.Column('state', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('program', 'holder_id', 'unit', name='pk_fund_states'),
    )
    op.create_table(
        'volume_totals',
        sa.Column('program', sa.String(length=200), nullable=False),
        sa.Column('partner_id', sa.String(length=200), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('month', sa.String(length=7), nullable=False),
        sa.Column('event_type', sa.String(length=100), nullable=False),
        sa.Column('amount', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('program', 'partner_id', 'currency', 'month', 'event_type', name='pk_volume_totals'),
    )
    dialect = op.get_bind().dialect.name
    _backfill(dialect)
    _backfill_volumes(dialect)
    _create_triggers(dialect)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, table, _event, _when, _body in _triggers(dialect):
        op.execute(f'DROP TRIGGER {name}' + (f' ON {table}' if dialect == 'postgresql' else ''))
        if dialect == 'postgresql':
            op.execute(f'DROP FUNCTION {name}()')
    if dialect == 'postgresql':
        op.execute('DROP FUNCTION payhub_totals_slot()')
    op.drop_table('volume_totals')
    op.drop_table('fund_states')
    op.drop_table('budget_totals')
    op.drop_index('ix_reward_totals_scope', table_name='reward_totals')
    op.drop_table('reward_totals')
