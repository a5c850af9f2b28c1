"""The daemon against local vendor-like servers: both CRMs, thousands of deals, a SIGKILL mid-sync, a restart.

The Salesforce and HubSpot simulators run in this process (127.0.0.1, ephemeral ports), seeded with a realistic
mix of deals: closed-won through a partner (several currencies), open, lost, won without a partner, won and then
lost, and malformed ones. A real ``payhub run`` (a subprocess, as in tests/test_crash.py) reads both with
``[sources.sf] plugin = "salesforce"`` and ``[sources.hs] plugin = "hubspot"``, small batches and short poll
intervals, so each sync spans many batches. Faults are injected while it runs: 429s (with Retry-After), 5xx
answers and expired sessions / OAuth tokens.

The test watches the committed state and SIGKILLs the daemon once both sources are part-way through their sync and
some events are calculated, restarts it, changes a few deals in the CRMs while it catches up (open deals won, won
deals lost), waits until every expected event is ingested and calculated, stops it with SIGTERM, and checks:
every closed-won partner deal has exactly one live reward by the program (10 % of its amount, in its currency,
paid to the partner); deals won and then lost keep nothing; open, lost and direct deals have no reward; malformed
deals are quarantined with their reason; no event key is stored twice; ``payhub audit verify`` passes.

Run it alone with ``pytest -s plugins/integration`` to see the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from payhub_simulators.hubspot import TOKEN_PATH, HubSpotSimulator
from payhub_simulators.salesforce import SalesforceSimulator

from payhub.api import quantize, to_minor
from payhub.testing import Harness, RewardView, StoreReader

pytestmark = pytest.mark.slow

PAYHUB = shutil.which("payhub", path=str(Path(sys.executable).parent)) or shutil.which("payhub") or "payhub"
DEALS = int(os.environ.get("PAYHUB_TEST_CRM_DEALS", "2000"))  # per CRM
PERCENT = Decimal(10)
PROGRAM = "partner_rebate"
LIVE_CHANGES = 10  # per CRM and kind, while the restarted daemon catches up
SF_PAST = (datetime.now(UTC) - timedelta(days=30)).replace(microsecond=0)  # when the Salesforce history was written
HOUR_MS = 3_600_000

CONFIG = """\
[database]
url = "sqlite:///payhub.db"
batch_size = 100

[daemon]
idle_seconds = 0.1
shutdown_grace_seconds = 10
plugin_timeout_seconds = 60

[log]
level = "INFO"

[sources.sf]
plugin = "salesforce"
poll_interval_seconds = 0.5
batch_size = 40
auth = "client_credentials"
login_url = "{sf_url}"
client_id = "{sf_client_id}"
multi_currency = true
page_size = 200
retry_backoff_seconds = 0.05
retry_backoff_max_seconds = 0.5
fetch_time_budget_seconds = 5

[sources.sf.opportunity]
where = "PartnerAccountId != null"

[sources.hs]
plugin = "hubspot"
poll_interval_seconds = 0.5
batch_size = 40
base_url = "{hs_url}"
client_id = "{hs_client_id}"
start_date = {hs_start}
company_currency = "USD"
partner_required = true
index_lag_seconds = 1
page_size = 100
read_chunk_size = 50
requests_per_second = 19
retry_initial_seconds = 0.1
retry_max_seconds = 1
token_refresh_margin_seconds = 5
fetch_time_budget_seconds = 5

[programs.{program}]
calculator = "percentage"
percent = "{percent}"
pay = "partner"
event_types = ["deal_won"]
clawback_event_types = ["deal_reversed"]
once_per_object = true
"""


@dataclass
class Expected:
    """What payhub must make of one CRM's deals."""

    source: str
    keys: set[str] = field(default_factory=set)  # every event key the source must store, nothing else
    rewarded: dict[str, tuple[str, Decimal, str]] = field(default_factory=dict)  # deal -> (partner, amount, cur.)
    netted: set[str] = field(default_factory=set)  # deals won and then lost: what they were granted nets to zero
    quarantined: dict[str, str] = field(default_factory=dict)  # key -> a fragment of the reason
    silent: set[str] = field(default_factory=set)  # open, lost and direct deals: no event, no reward
    won_keys: dict[str, str] = field(default_factory=dict)  # deal -> its won key (won partner deals)
    kinds: Counter[str] = field(default_factory=Counter)

    def won(self, deal: str, key: str, partner: str, amount: Decimal, currency: str) -> None:
        self.keys.add(key)
        self.won_keys[deal] = key
        self.rewarded[deal] = (partner, amount, currency)

    def lost(self, deal: str, key: str) -> None:
        self.keys.add(key)
        self.rewarded.pop(deal, None)
        self.netted.add(deal)


def reward_minor(amount: Decimal, currency: str) -> int:
    return to_minor(quantize(amount * PERCENT / 100, currency), currency)


def minor(reward: RewardView) -> int:
    """A reward's amount in minor units of its currency."""
    return to_minor(reward.amount, reward.currency)


def sf_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------------ Salesforce

SF_MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"Amount": None}, "Amount is missing on a closed-won opportunity"),
    ({"CloseDate": "05/01/2026"}, "CloseDate '05/01/2026' is not a date or date-time"),
    ({"CurrencyIsoCode": None}, "CurrencyIsoCode is empty in a multi-currency org"),
    ({"Amount": Decimal("-50")}, "is negative"),
    ({"CurrencyIsoCode": "ZZZ"}, "unknown currency 'ZZZ'"),
    ({"OwnerId": None}, "payee is missing"),
]


def sf_amount(n: int, currency: str) -> Decimal:
    return Decimal(50_000 + 137 * n) if currency == "JPY" else Decimal(1000 + n) + Decimal(n % 100) / 100


def seed_salesforce(sim: SalesforceSimulator, deals: int) -> Expected:
    """``deals`` opportunities, 25 per second of SystemModstamp (many ties), in a multi-currency org."""
    expected = Expected("sf")
    moment = [SF_PAST]
    sim.clock = lambda: moment[0]
    for n in range(deals):
        moment[0] = SF_PAST + timedelta(seconds=n // 25)
        kind = n % 20
        currency = ("USD", "EUR", "JPY")[n % 3]
        partner = f"001{n % 37:012d}AAA"
        owner = f"005{n % 11:012d}AAA"
        amount = sf_amount(n, currency)
        values: dict[str, Any] = {"Name": f"Deal {n}", "Amount": amount, "CurrencyIsoCode": currency,
                                  "PartnerAccountId": partner, "OwnerId": owner, "CloseDate": date(2026, 2, 27)}
        if kind in (12, 13):
            expected.kinds["open"] += 1
            deal = sim.add_opportunity(**values, StageName=("Prospecting", "Negotiation")[kind - 12])
            expected.silent.add(deal)
        elif kind == 14:
            expected.kinds["lost"] += 1
            expected.silent.add(sim.add_opportunity(**values, StageName="Closed Lost"))
        elif kind == 15:
            expected.kinds["won without partner"] += 1
            values["PartnerAccountId"] = None
            expected.silent.add(sim.add_opportunity(**values, StageName="Closed Won"))
        elif kind == 16:  # won, then lost before payhub ever saw it: a reversal that takes nothing back
            expected.kinds["won then lost"] += 1
            deal = sim.add_opportunity(**values, StageName="Closed Won")
            moment[0] += timedelta(seconds=1)
            sim.update("Opportunity", deal, StageName="Closed Lost")
            expected.lost(deal, f"sf:Opportunity:{deal}:reversed:{sf_instant(moment[0])}")
        elif kind == 17:
            expected.kinds["malformed"] += 1
            change, reason = SF_MALFORMED[(n // 20) % len(SF_MALFORMED)]
            deal = sim.add_opportunity(**{**values, **change}, StageName="Closed Won")
            key = f"sf:Opportunity:{deal}:won:{sf_instant(moment[0])}"
            expected.keys.add(key)
            expected.quarantined[key] = reason
            expected.silent.add(deal)
        else:
            expected.kinds["won with partner"] += 1
            deal = sim.add_opportunity(**values, StageName="Closed Won")
            expected.won(deal, f"sf:Opportunity:{deal}:won:{sf_instant(moment[0])}", partner, amount, currency)
    sim.clock = lambda: datetime.now(UTC).replace(microsecond=0)
    return expected


def change_salesforce(sim: SalesforceSimulator, expected: Expected, stored: set[str], count: int) -> None:
    """While the daemon runs: ``count`` open deals are won, ``count`` won deals already ingested are lost."""
    table = sim.tables["Opportunity"]
    opened = sorted(d for d in expected.silent if not table[d]["IsClosed"] and table[d]["PartnerAccountId"])
    for deal in opened[:count]:
        sim.update("Opportunity", deal, StageName="Closed Won")
        record = table[deal]
        expected.silent.discard(deal)
        expected.won(deal, f"sf:Opportunity:{deal}:won:{sf_instant(record['LastStageChangeDate'])}",
                     record["PartnerAccountId"], record["Amount"], record["CurrencyIsoCode"])
    seen = sorted(d for d, key in expected.won_keys.items() if key in stored and d in expected.rewarded)
    for deal in seen[:count]:
        sim.update("Opportunity", deal, StageName="Closed Lost")
        expected.lost(deal, f"sf:Opportunity:{deal}:reversed:{sf_instant(table[deal]['SystemModstamp'])}")
    expected.kinds["won during the run"] += min(count, len(opened))
    expected.kinds["lost during the run"] += min(count, len(seen))


# ------------------------------------------------------------------------------------------------ HubSpot

HS_MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"amount": "abc"}, "amount 'abc' is not a decimal number"),
    ({"closedate": None}, "closedate is missing"),
    ({"closedate": "next tuesday"}, "closedate 'next tuesday' is not a date"),
    ({"amount": "-50.00"}, "amount -50.00 is negative"),
    ({"currency": "ZZZ"}, "unknown currency 'ZZZ'"),
    ({"owner": None}, "payee is missing"),
]


def hs_amount(n: int, currency: str) -> str:
    return f"{60_000 + 91 * n}" if currency == "JPY" else f"{2000 + n}.{(n * 7) % 100:02d}"


def seed_hubspot(sim: HubSpotSimulator, deals: int) -> Expected:
    """``deals`` deals modified over a few seconds three hours ago, 37 partner companies."""
    expected = Expected("hs")
    partners = [sim.add_company(f"Partner {n}") for n in range(37)]
    base = sim.now_ms() - 3 * HOUR_MS
    for n in range(deals):
        at = base + n * 3  # a few deals share a millisecond with none: ids order them anyway
        kind = n % 20
        currency = ("USD", "EUR", "JPY")[n % 3]
        partner = partners[n % 37]
        amount = hs_amount(n, currency)
        values: dict[str, Any] = {"amount": amount, "currency": None if currency == "USD" else currency,
                                  "owner": f"{300 + n % 11}", "company": partner, "at_ms": at}
        if kind in (12, 13):
            expected.kinds["open"] += 1
            expected.silent.add(sim.add_deal(("qualifiedtobuy", "contractsent")[kind - 12], **values))
        elif kind == 14:
            expected.kinds["lost"] += 1
            expected.silent.add(sim.add_deal("closedlost", **values))
        elif kind == 15:
            expected.kinds["won without partner"] += 1
            expected.silent.add(sim.add_deal("closedwon", **{**values, "company": None}))
        elif kind == 16:  # won, then lost a minute later: both transitions are in the stage history
            expected.kinds["won then lost"] += 1
            deal = sim.add_deal("closedwon", **values)
            sim.update_deal(deal, dealstage="closedlost", at_ms=at + 60_000)
            expected.keys.add(f"hs:deal:{deal}:won:{at}")
            expected.lost(deal, f"hs:deal:{deal}:lost:{at + 60_000}")
        elif kind == 17:
            expected.kinds["malformed"] += 1
            change, reason = HS_MALFORMED[(n // 20) % len(HS_MALFORMED)]
            deal = sim.add_deal("closedwon", **{**values, **change})
            key = f"hs:deal:{deal}:won:{at}"
            expected.keys.add(key)
            expected.quarantined[key] = reason
            expected.silent.add(deal)
        else:
            expected.kinds["won with partner"] += 1
            deal = sim.add_deal("closedwon", **values)
            expected.won(deal, f"hs:deal:{deal}:won:{at}", partner, Decimal(amount), currency)
    return expected


def change_hubspot(sim: HubSpotSimulator, expected: Expected, stored: set[str], count: int) -> None:
    """While the daemon runs: ``count`` open deals are won, ``count`` won deals already ingested are lost."""
    opened = sorted((d for d in expected.silent if sim.deals[int(d)].properties["dealstage"] in
                     ("qualifiedtobuy", "contractsent")), key=int)
    for deal in opened[:count]:
        at = sim.now_ms()
        sim.update_deal(deal, dealstage="closedwon", at_ms=at)
        props = sim.deals[int(deal)].properties
        partner = str(next(iter(sim.associations[int(deal)])))
        expected.silent.discard(deal)
        expected.won(deal, f"hs:deal:{deal}:won:{at}", partner, Decimal(str(props["amount"])),
                     props["deal_currency_code"] or "USD")
    seen = sorted((d for d, key in expected.won_keys.items() if key in stored and d in expected.rewarded), key=int)
    for deal in seen[:count]:
        at = sim.now_ms()
        sim.update_deal(deal, dealstage="closedlost", at_ms=at)
        expected.lost(deal, f"hs:deal:{deal}:lost:{at}")
    expected.kinds["won during the run"] += min(count, len(opened))
    expected.kinds["lost during the run"] += min(count, len(seen))


# ------------------------------------------------------------------------------------------------ the daemon


@pytest.fixture
def salesforce() -> Iterator[SalesforceSimulator]:
    sim = SalesforceSimulator()
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def hubspot() -> Iterator[HubSpotSimulator]:
    # HubSpot's search limit (5 per second); the source keeps itself to 4 and retries the 429s it still gets.
    with HubSpotSimulator(search_per_second=5, token_ttl=600) as sim:
        yield sim


@dataclass
class Daemon:
    """``payhub run`` in a subprocess, its stderr in a log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> None:
        assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()}"

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while "payhub started" not in self.log.read_text():
            self.alive()
            assert time.monotonic() < deadline, f"daemon did not start:\n{self.log.read_text()}"
            time.sleep(0.02)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StoreReader]:
    """What the daemons store in ``payhub.db`` under ``tmp_path``, read back read-only while they run."""
    with Harness.open(f"sqlite:///{tmp_path / 'payhub.db'}") as reader:
        yield reader


def statuses(store: StoreReader) -> dict[str, dict[str, str]]:
    """Per source, key -> status of every stored event."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for stored in store.events():
        found[stored.source][stored.key] = stored.status
    return found


def wait_for(what: str, check: Callable[[], bool], daemon: Daemon, timeout: float, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        daemon.alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{daemon.log.read_text()[-4000:]}"
        time.sleep(step)


def test_both_crms_rewarded_exactly_once_across_a_kill_mid_sync(
        salesforce: SalesforceSimulator, hubspot: HubSpotSimulator, tmp_path: Path, store: StoreReader) -> None:
    began = time.monotonic()
    sf = seed_salesforce(salesforce, DEALS)
    hs = seed_hubspot(hubspot, DEALS)
    expected = {"sf": sf, "hs": hs}
    seeded = {name: set(e.keys) for name, e in expected.items()}

    (tmp_path / "payhub.toml").write_text(CONFIG.format(
        sf_url=salesforce.url, sf_client_id=salesforce.client_id, hs_url=hubspot.url, hs_client_id=hubspot.client_id,
        hs_start=(datetime.now(UTC) - timedelta(days=1)).date().isoformat(), program=PROGRAM, percent=PERCENT))
    env = dict(os.environ)
    env.update(PAYHUB_CONFIG=str(tmp_path / "payhub.toml"),  # secrets from the environment, as the docs advise
               PAYHUB_SOURCES__SF__CLIENT_SECRET=salesforce.client_secret,
               PAYHUB_SOURCES__HS__CLIENT_SECRET=hubspot.client_secret,
               PAYHUB_SOURCES__HS__REFRESH_TOKEN=hubspot.refresh_token)
    env.pop("PAYHUB_DATABASE__URL", None)
    logs: list[Path] = []

    def payhub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PAYHUB, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    def start(name: str) -> Daemon:
        log_path = tmp_path / f"{name}.log"
        logs.append(log_path)
        with log_path.open("w") as log:
            proc = subprocess.Popen([PAYHUB, "run", "--no-progress"], env=env, cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=log)
        return Daemon(proc, log_path)

    upgraded = payhub("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    checked = payhub("config", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # Passing trouble from the first requests on: every one is retried inside the fetch.
    salesforce.fail_next(503, 1)
    salesforce.fail_next(429, 1, retry_after="0")
    hubspot.fail("/crm/v3/objects/deals/search", 429, times=2, headers={"Retry-After": "0"})
    hubspot.fail("/crm/v3/objects/deals/batch/read", 502, times=1, skip=3)

    # --- first run: SIGKILL once both sources are part-way through their sync and some events are calculated
    def mid_sync() -> bool:
        state = statuses(store)
        calculated = sum(1 for per in state.values() for s in per.values() if s == "calculated")
        return calculated > 0 and all(0.15 * len(seeded[n]) <= len(state.get(n, {})) < len(seeded[n])
                                      for n in seeded)

    first = start("run-1")
    try:
        first.wait_started()
        wait_for("both sources part-way through their sync", mid_sync, first, timeout=60)
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
    killed_at = time.monotonic() - began
    at_kill = statuses(store)
    cursors = {source.name: source.cursor for source in store.sources()}
    kill_point = {n: (len(at_kill[n]), len(seeded[n])) for n in seeded}
    calculated_at_kill = sum(1 for per in at_kill.values() for s in per.values() if s == "calculated")
    rewards_at_kill = len(store.rewards())
    assert '"sync"' in (cursors["sf"] or ""), f"the Salesforce sync was not in progress: {cursors['sf']}"
    assert json.loads(cursors["hs"] or "{}").get("end") is not None, f"no HubSpot window open: {cursors['hs']}"

    # --- second run: resumes from the stored cursors; sessions expire and more faults come while it catches up
    logins = (len(salesforce.token_requests), hubspot.token_grants)
    second = start("run-2")
    try:
        second.wait_started()
        wait_for("both sources to log in again", lambda: len(salesforce.token_requests) > logins[0]
                 and hubspot.token_grants > logins[1], second, timeout=30)
        salesforce.expire_sessions()  # a session timeout: 401 INVALID_SESSION_ID, renewed once, repeated
        salesforce.fail_next(500, 1)
        hubspot.expire_tokens()  # 401 EXPIRED_AUTHENTICATION: refreshed once, resent
        hubspot.fail(TOKEN_PATH, 503, times=1)
        hubspot.fail("/crm/v3/objects/deals/search", 429, times=1, headers={"Retry-After": "0"})
        stored = statuses(store)
        # The CRMs change under the running sync: open deals are won, won deals already ingested are lost.
        change_salesforce(salesforce, sf, set(stored["sf"]), LIVE_CHANGES)
        change_hubspot(hubspot, hs, set(stored["hs"]), LIVE_CHANGES)

        def caught_up() -> bool:
            state = statuses(store)
            return all(set(state.get(n, {})) >= e.keys and "ingested" not in state[n].values()
                       for n, e in expected.items())

        wait_for("both sources caught up and calculated", caught_up, second, timeout=75, step=0.2)
        time.sleep(1.5)  # a few more polls: nothing more may come
    finally:
        second.proc.send_signal(signal.SIGTERM)
        try:
            second.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            second.proc.kill()
            second.proc.wait()
    assert second.proc.returncode == 0, second.log.read_text()[-4000:]
    synced_at = time.monotonic() - began

    tracebacks = [p.name for p in logs if "Traceback" in p.read_text()]
    assert not tracebacks, f"the daemon raised: {tracebacks}\n{logs[-1].read_text()[-4000:]}"
    assert "payhub stopped" in second.log.read_text()

    figures = {n: check_source(store, e) for n, e in expected.items()}
    audited = Counter(entry.action for entry in store.audit())

    verified = payhub("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    listed = payhub("events", "list", "--status", "quarantined", "--limit", "10000", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == sum(len(e.quarantined) for e in expected.values())
    assert audited.get("event.quarantined") == sum(len(e.quarantined) for e in expected.values())

    # The injected faults were all served, and the sessions were renewed.
    assert not salesforce.faults
    assert len(salesforce.token_requests) >= 3  # a login per run, plus the renewal after the expired session
    assert hubspot.token_grants >= 3  # a refresh per run, plus the one after expire_tokens
    answered = Counter(r.status for r in hubspot.requests)
    assert answered[429] >= 3 and answered[502] and answered[503] and answered[401], answered

    print(f"\n{DEALS} deals per CRM; killed at {killed_at:.1f}s with "
          + ", ".join(f"{n} {got}/{of} events" for n, (got, of) in kill_point.items())
          + f" ingested, {calculated_at_kill} calculated, {rewards_at_kill} rewards; caught up at {synced_at:.1f}s, "
          f"total {time.monotonic() - began:.1f}s")
    for n, e in expected.items():
        print(f"  {n}: {dict(e.kinds)}; {figures[n]}")
    print(f"  salesforce: {len(salesforce.api_requests)} API requests, {len(salesforce.token_requests)} logins; "
          f"hubspot: {len(hubspot.requests)} requests, {hubspot.rate_limited} search 429s, "
          f"{hubspot.token_grants} token grants, answers {dict(answered)}; audit {sum(audited.values())} entries")


def check_source(store: StoreReader, expected: Expected) -> dict[str, int]:
    """Assert what payhub stored for one source; return its figures."""
    name = expected.source
    stored = [row for row in store.events() if row.source == name]
    keys = Counter(row.key for row in stored)
    assert not [k for k, n in keys.items() if n > 1], "an event key is stored twice"
    assert set(keys) == expected.keys, (f"{name}: missing {sorted(expected.keys - set(keys))[:5]}, "
                                        f"unexpected {sorted(set(keys) - expected.keys)[:5]}")
    won_per_deal = Counter(row.object_id for row in stored if row.event_type == "deal_won")
    assert {d for d, n in won_per_deal.items() if n > 1} == set(), f"{name}: a deal has two won events"

    quarantined = {row.key: row.reason for row in stored if row.status == "quarantined"}
    assert set(quarantined) == set(expected.quarantined)
    for key, fragment in expected.quarantined.items():
        assert fragment in (quarantined[key] or ""), f"{key}: {quarantined[key]!r} does not say {fragment!r}"
    assert {row.status for row in stored if row.key not in quarantined} == {"calculated"}

    by_id = {row.id: row for row in stored}
    calcs = Counter(c.event_id for c in store.calculations() if c.event_id in by_id and c.program == PROGRAM)
    assert set(calcs) == {row.id for row in stored if row.key not in quarantined}, f"{name}: calculations"
    assert set(calcs.values()) == {1}, f"{name}: an event was calculated twice"

    granted: dict[str, list[RewardView]] = defaultdict(list)
    for row in (r for r in store.rewards() if r.event_id in by_id):
        assert row.program == PROGRAM
        granted[by_id[row.event_id].object_id].append(row)
    for deal, (partner, amount, currency) in expected.rewarded.items():
        live = [r for r in granted.get(deal, []) if r.status != "cancelled"]
        assert len(live) == 1, f"{name} deal {deal}: {len(live)} live rewards, expected one"
        assert len(granted[deal]) == 1, f"{name} deal {deal}: {len(granted[deal])} rewards in all"
        reward = live[0]
        assert (reward.payee_id, reward.currency, minor(reward)) == (
            partner, currency, reward_minor(amount, currency)), f"{name} deal {deal}: {reward}"
        assert by_id[reward.event_id].key == expected.won_keys[deal]
    cancelled = adjusted = 0
    for deal in expected.netted:
        rows = granted.get(deal, [])
        assert sum(minor(r) for r in rows if r.status != "cancelled") == 0, f"{name} deal {deal}: {rows}"
        cancelled += sum(1 for r in rows if r.status == "cancelled")
        adjusted += sum(1 for r in rows if minor(r) < 0)
    for deal in expected.silent:
        assert not granted.get(deal), f"{name} deal {deal} (open, lost, direct or malformed) was rewarded"
    statuses = Counter(r.status for rows in granted.values() for r in rows)
    polled = [entry.detail for entry in store.audit("source.polled") if entry.subject_id == name]
    return {"batches": len(polled), "records read": sum(p["records"] for p in polled),
            "re-read (dedup)": sum(p["duplicates"] for p in polled), "events": len(stored),
            "quarantined": len(quarantined), "rewarded deals": len(expected.rewarded),
            "rewards": sum(len(rows) for rows in granted.values()), "cancelled": cancelled,
            "negative adjustments": adjusted, **{f"rewards {s}": n for s, n in sorted(statuses.items())}}
