"""bench.gen, the program mix: every generated event is due when the run calculates it (none is dated after now, where
it would wait uncalculated and fail the end-of-run checks), and every payee an event names is in the payees file."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.gen import write_inputs


def _mix(tmp_path: Path) -> tuple[list[dict[str, str]], set[str]]:
    made = write_inputs(tmp_path, events=600, payees=50, partners=5, programs="mix", add_to_path=False)
    with made["events_file"].open(encoding="utf-8") as fh:
        events = list(csv.DictReader(fh))
    with made["payees_file"].open(encoding="utf-8") as fh:
        payees = {row["id"] for row in csv.DictReader(fh)}
    return events, payees


def test_every_mix_event_is_dated_in_the_past(tmp_path: Path) -> None:
    events, _payees = _mix(tmp_path)
    dates = [datetime.fromisoformat(row["occurred_at"]) for row in events]
    # Due at once whatever ingest.future_tolerance_seconds is (0 included), even a day after this test ran.
    assert max(dates) < datetime.now(UTC) - timedelta(days=1)
    assert {row["type"] for row in events} >= {"deal_won", "deal_refunded", "purchase", "order_returned"}


def test_every_payee_an_event_names_is_registered(tmp_path: Path) -> None:
    events, payees = _mix(tmp_path)
    named = {row[key] for row in events for key in ("payee_id", "partner_id", "second_partner_id") if row[key]}
    named |= {share["payee_id"] for row in events if row["splits"] for share in json.loads(row["splits"])}
    assert named <= payees, sorted(named - payees)[:5]
