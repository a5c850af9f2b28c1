"""Flag caps never calculate a reward without the payee's flags, on SQLite and PostgreSQL: an event whose payee is not
in the registry waits (``waits_for_payee``, audited) and is calculated, cut, once the payees file brings the payee;
a later event of the same CRM object waits behind it; programs no cap applies to are calculated at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from test_flag_caps import PAYEES, course, lost, outcome, run, won
from test_flag_caps import world as world  # noqa: F401 - a fixture

from payhub.audit import verify
from payhub.db.schema import audit_log, events
from payhub.payees import sync_payees
from payhub.runtime import Runtime

CAP = ('[[compliance.gifts.flag_caps]]\nflag = "government_official"\namount = "1000"\ncurrency = "USD"\n'
       'programs = ["deals"]\n')


def event_states(rt: Runtime) -> dict[str, tuple[str, str | None, str | None]]:
    with rt.engine.connect() as conn:
        return {f"{r.object_id}:{r.transition}": (r.status, r.waits_for_payee, r.reason)
                for r in conn.execute(select(events))}


def test_an_unregistered_payee_waits_and_is_cut_once_registered(world: Any, tmp_path: Path) -> None:
    rt = world(CAP)
    run(rt, won("big", "g1", "5000.00"), lost("big", "g1"), won("other", "ana", "5000.00"))
    states = event_states(rt)
    assert states["big:won"][:2] == ("waiting", "g1")
    assert "payee g1 is not in the payees registry; flag caps" in (states["big:won"][2] or "")
    assert states["big:lost"][0] == "waiting" and states["big:lost"][1] is None  # behind the win it takes back
    assert states["other:won"][0] == "calculated"
    found = outcome(rt)
    assert ("deals", "big") not in found
    assert [r[1] for r in found[("deals", "other")]["rewards"]] == ["5000.00"]

    run(rt)  # nothing changed: still waiting, no new audit entry
    with rt.engine.connect() as conn:
        waited = [json.loads(d) for d in conn.execute(select(audit_log.c.detail).where(
            audit_log.c.action == "event.waiting")).scalars()]
    assert [w.get("payee") for w in waited] == ["g1", None]

    (tmp_path / "payees.csv").write_text(PAYEES + "g1,Gov Two,DE,government_official\n")
    sync_payees(rt)
    run(rt)
    states = event_states(rt)
    assert states["big:won"][:2] == ("calculated", None) and states["big:lost"][0] == "calculated"
    found = outcome(rt)
    [(payee, amount, status, details)] = found[("deals", "big")]["rewards"]
    assert (payee, amount, status) == ("g1", "1000.00", "cancelled")  # cut to the cap, then taken back by the loss
    assert details["capped"][0]["cut"] == "4000.00"
    with rt.engine.connect() as conn:
        assert verify(conn).ok


def test_without_flag_caps_for_the_program_nothing_waits(world: Any) -> None:
    rt = world(CAP)
    run(rt, course("c1", "ghost"))  # the training program has no flag cap: calculated for an unregistered payee
    assert event_states(rt)["c1:done"][0] == "calculated"
    assert [r[1] for r in outcome(rt)[("training", "c1")]["rewards"]] == ["100.00"]
