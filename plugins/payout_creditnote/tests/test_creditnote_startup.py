"""Starting the credit-note rail does not parse the UBL schema: the first credit note's validation does, once per
process, and validates exactly as before; a schema missing from the installation still stops the rail at start.
Starting it imports lxml (an installation where it cannot be imported fails the rail at start-up, not at its first
send, whose outcome would then be unknown) and, without a ``delivery_url``, no delivery module and no httpx."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import respx
from creditnote_helpers import instruction, make_rail, settings_values
from payhub.api import Outcome

from payhub_creditnote import CreditNoteRail, ubl

BILLING = "https://billing.vendor.example/api/credit-notes"


def test_the_schema_is_parsed_by_the_first_validation_not_at_start(
        rail_factory: Callable[..., CreditNoteRail]) -> None:
    ubl._schema.cache_clear()
    rail = rail_factory()
    assert ubl._schema.cache_info().currsize == 0
    [accepted] = rail.send([instruction(1)])
    assert accepted.outcome == Outcome.ACCEPTED
    assert ubl._schema.cache_info().currsize == 1
    assert ubl.validate(b"<CreditNote/>")  # still checked against the schema
    assert ubl._schema.cache_info().hits >= 1  # parsed once, then kept


def test_a_missing_schema_stops_the_rail_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ubl, "schema_path", lambda: tmp_path / "missing" / ubl.MAIN_SCHEMA)
    with pytest.raises(FileNotFoundError, match="UBL 2.1 CreditNote schema is missing"):
        make_rail(tmp_path)


@respx.mock
def test_the_billing_client_is_made_by_the_first_delivery_with_its_timeouts_and_headers(
        rail_factory: Callable[..., CreditNoteRail]) -> None:
    route = respx.post(BILLING).respond(201)
    rail = rail_factory(delivery_url=BILLING, delivery_token="billing-secret", delivery_timeout_seconds=2,
                        connect_timeout_seconds=1)
    assert rail.billing is not None and rail.billing._http is None
    [result] = rail.send([instruction(1)])
    assert result.outcome == Outcome.ACCEPTED
    http = rail.billing._http
    assert http is not None and http.timeout == httpx.Timeout(2, connect=1)
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer billing-secret"
    assert request.headers["Content-Type"] == "application/xml"
    assert request.headers["User-Agent"] == "payhub-creditnote/0.1"


WATCHED = ("lxml", "httpx", "payhub_creditnote.delivery")

PROBE = """
import json, sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from payhub.api import Payee, PayoutInstruction
from payhub_creditnote import CreditNoteRail, CreditNoteSettings

def loaded():
    return sorted(name for name in {modules!r} if name in sys.modules)

values = json.loads({values!r})
rail = CreditNoteRail("cn", CreditNoteSettings.model_validate(values, context={{"base_dir": Path({base!r})}}))
rail.capabilities
at_start = loaded()
payee = Payee("r1", "Reseller B.V.", country="NL", email="ap@reseller.example",
              details={{"vat_id": "NL123456789B01", "city": "Amsterdam"}})
[result] = rail.send([PayoutInstruction(1, "ph-" + "1" * 32, payee, Decimal("10.00"), "EUR", "payout 1",
                                        datetime(2026, 10, 1, tzinfo=UTC))])
assert result.provider_ref == "CN-2026-000001", result  # issued, written (delivered or not)
print(json.dumps([at_start, loaded()]))
"""


@pytest.mark.parametrize(("delivery", "at_start"), [
    (None, ["lxml"]),
    ("http://127.0.0.1:9/credit-notes", ["httpx", "lxml", "payhub_creditnote.delivery"]),  # refused at once
])
def test_starting_the_rail_imports_its_xml_library_and_no_http_client_it_does_not_use(
        tmp_path: Path, delivery: str | None, at_start: list[str]) -> None:
    values = settings_values(tmp_path, delivery_url=delivery)
    code = PROBE.format(modules=WATCHED, values=json.dumps(values), base=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    started, after_send = json.loads(done.stdout)
    assert started == at_start
    assert after_send == at_start  # the first credit note is written and validated with what start-up imported
