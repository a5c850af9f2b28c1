"""``payhub payees erase``: personal-data erasure of one payee (docs/compliance.md#erasure)."""

from __future__ import annotations

import click

from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import console, plain
from payhub.clock import isoformat
from payhub.compliance import erasure


@main.group()
def payees() -> None:
    """The payee registry (payees come from the payees file)."""


@payees.command("erase")
@click.argument("payee_id")
@click.option("--reason", required=True, help="Why (e.g. the request's reference); recorded in the audit log. "
              "Do not type personal values here: the audit log keeps it.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-compact", "no_compact", is_flag=True,
              help="Skip the compaction after the commit (VACUUM); run it later, e.g. during a maintenance window.")
@pass_ctx
@fail_cleanly
def payees_erase(ctx: Context, payee_id: str, reason: str, yes: bool, no_compact: bool) -> None:
    """Erase PAYEE_ID's personal data: name (replaced by a pseudonym), email, payout details, aliases, TIN,
    events' payloads and configured personal attributes, and the key their sealed values in the audit log need.
    Ids, amounts, dates, currencies, tax form and TIN status are kept. Refused while the payee has unpaid rewards
    or payouts still moving. Cannot be undone. Run again for a payee already erased: it changes no data and
    finishes what follows the erasure (observers, compaction)."""
    rt = ctx.runtime()
    if not yes:
        click.confirm(f"Erase the personal data of payee {payee_id!r}? This cannot be undone", abort=True)
    done = erasure.erase(rt, payee_id, reason, compact=not no_compact)
    if done.repeated:
        console.print(f"payee {plain(payee_id)} was already erased at {isoformat(done.erased_at)} (now "
                      f"{done.pseudonym}): no data changed; the steps after the erasure were run again "
                      "(observers told)", markup=False, highlight=False, soft_wrap=True)
    else:
        counts = ", ".join(f"{name} {count}" for name, count in done.counts.items() if count)
        console.print(f"payee {plain(payee_id)} erased: now {done.pseudonym}; {counts or 'no other rows'}",
                      markup=False, highlight=False, soft_wrap=True)
    if done.compaction:
        console.print(f"database compacted ({done.compaction}) in {done.compaction_seconds:.1f} s", markup=False,
                      highlight=False)
    else:
        console.print("database not compacted: run `VACUUM` (SQLite) or `VACUUM` of the payee tables (PostgreSQL) "
                      "before old pages can be assumed gone", markup=False, highlight=False)
