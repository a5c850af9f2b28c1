"""The ``sanctions`` hook plugin on a real database: lists loaded by ``payhub screening refresh`` (audited with their
dates and hashes, unchanged ones not stored again), provider plugins isolated, stale or missing lists stopping
payouts, a listed payee's payout held before it is sent, payees screened when the payees file changes, and the
``payhub screening check|status`` commands with their exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from payhub.api import Payee, PayoutInstruction, SanctionsEntry, SanctionsList, ScreenDecision, SourceRecord, hookimpl
from payhub.builtin.sanctions import Sanctions
from payhub.compliance import personal
from payhub.compliance.sanctions.payee_screening import screen_payees
from payhub.compliance.sanctions.refresh import refresh
from payhub.db.schema import payee_screenings, screening_lists
from payhub.payees import sync_payees
from payhub.runtime import Runtime
from payhub.testing import FakeRail, FakeSource, ManualClock, invoke_cli
from payhub.testing.pytest_plugin import HarnessFactory

DATA = Path(__file__).resolve().parents[1] / "data" / "sanctions"


def copy_lists(directory: Path, when: datetime) -> Path:
    """The test lists copied into ``directory / lists``, the CSV files dated ``when``."""
    target = directory / "lists"
    target.mkdir(exist_ok=True)
    for path in DATA.iterdir():
        shutil.copyfile(path, target / path.name)
        os.utime(target / path.name, (when.timestamp(), when.timestamp()))
    return target


LISTS = {
    "ofac_sdn": ("ofac_csv", ("sdn.csv", "alt.csv", "add.csv")),
    "eu": ("eu_xml", ("eu.xml",)),
    "sdn_xml": ("ofac_xml", ("sdn.xml",)),
}


def lists_section(lists: Path, *, max_age: int = 7, extra: str = "", names: tuple[str, ...] = ("ofac_sdn", "eu"),
                  skipped_share: float | None = 0.5) -> str:
    """The sanctions section with the lists ``names``. The test files hold a few bad records on purpose (3 of 15
    CSV rows, 1 of 3 EU entries, 1 of 4 OFAC XML entries): ``max_skipped_share`` 0.5 lets them load, None leaves
    the default (0.01)."""
    share = "" if skipped_share is None else f"max_skipped_share = {skipped_share}"
    tables = "".join(f"""
        [[hooks.sanctions.lists]]
        name = "{name}"
        format = "{LISTS[name][0]}"
        files = [{", ".join(f'"{lists}/{file}"' for file in LISTS[name][1])}]
        """ for name in names)
    return f"""
        [hooks.sanctions]
        max_list_age_days = {max_age}
        {share}
        {extra}
        {tables}"""


@pytest.fixture
def payhub_clock() -> Iterator[ManualClock]:
    """payhub's clock at 2026-12-02 09:00 UTC, a few days after the test lists' dates."""
    with ManualClock(datetime(2026, 12, 2, 9, tzinfo=UTC)) as clock:
        yield clock


@pytest.fixture
def screening(make_runtime: Callable[..., Runtime], tmp_path: Path,
              payhub_clock: ManualClock) -> Iterator[Callable[..., tuple[Runtime, Sanctions]]]:
    def factory(*, max_age: int = 7, extra: str = "", csv_date: datetime | None = None,
                names: tuple[str, ...] = ("ofac_sdn", "eu"), skipped_share: float | None = 0.5,
                copy: bool = True) -> tuple[Runtime, Sanctions]:
        lists = copy_lists(tmp_path, csv_date or datetime(2026, 12, 1, 12, tzinfo=UTC)) if copy else tmp_path / "lists"
        rt = make_runtime(lists_section(lists, max_age=max_age, extra=extra, names=names,
                                        skipped_share=skipped_share))
        plugin = rt.plugins.hooks.get_plugin("sanctions")
        assert isinstance(plugin, Sanctions), rt.plugins.statuses
        return rt, plugin

    yield factory


def audit(rt: Runtime, action: str) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT subject_id, outcome, detail FROM audit_log WHERE action = :a ORDER BY seq"),
                            {"a": action}).all()
    return [{"subject": s, "outcome": o, **json.loads(d)} for s, o, d in rows]


def test_refresh_stores_each_list_and_audits_its_date_hash_and_count(screening: Any) -> None:
    rt, _plugin = screening()
    results = refresh(rt, _plugin.settings)
    assert [(r.name, r.outcome, r.skipped) for r in results] == [("ofac_sdn", "loaded", 3), ("eu", "loaded", 1)]
    loaded = audit(rt, "screening.list_loaded")
    assert [(e["name"], e["format"], e["published_on"], e["entries"]) for e in loaded] == [
        ("ofac_sdn", "ofac_csv", "2026-12-01", 5), ("eu", "eu_xml", "2026-11-30", 2)]
    eu_sha = hashlib.sha256((DATA / "eu.xml").read_bytes()).hexdigest()
    assert loaded[1]["sha256"] == eu_sha and loaded[1]["files"] == [{"file": "eu.xml", "sha256": eu_sha}]
    assert [f["file"] for f in loaded[0]["files"]] == ["sdn.csv", "alt.csv", "add.csv"]
    assert loaded[0]["skipped"] == 3 and "sdn.csv line 5: 2 columns, expected 12" in loaded[0]["problems"]
    with rt.engine.connect() as conn:
        rows = conn.execute(sa.select(screening_lists.c.name, screening_lists.c.current, screening_lists.c.sha256,
                                      screening_lists.c.loaded_by)).all()
    assert sorted((n, c) for n, c, _s, _b in rows) == [("eu", True), ("ofac_sdn", True)]


def test_unchanged_lists_are_not_stored_again_and_a_changed_one_is_kept_as_a_new_version(
        screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    again = refresh(rt, plugin.settings)
    assert [r.outcome for r in again] == ["unchanged", "unchanged"]
    checked = audit(rt, "screening.list_checked")
    assert [(e["name"], e["outcome"]) for e in checked] == [("ofac_sdn", "unchanged"), ("eu", "unchanged")]
    assert all("checked_at" in e for e in checked)
    eu = tmp_path / "lists" / "eu.xml"
    eu.write_text(eu.read_text(encoding="utf-8").replace("2026-11-30T", "2026-12-01T"), encoding="utf-8")
    third = refresh(rt, plugin.settings)
    assert [r.outcome for r in third] == ["unchanged", "loaded"]
    with rt.engine.connect() as conn:
        versions = conn.execute(sa.select(screening_lists.c.published_on, screening_lists.c.current)
                                .where(screening_lists.c.name == "eu").order_by(screening_lists.c.id)).all()
    assert versions == [(date(2026, 11, 30), False), (date(2026, 12, 1), True)]
    assert audit(rt, "screening.list_loaded")[-1]["replaced"] is not None


def test_a_list_that_cannot_be_read_fails_alone_and_is_audited(screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening()
    (tmp_path / "lists" / "eu.xml").write_bytes((DATA / "bomb.xml").read_bytes().replace(b"sdnList", b"export"))
    results = refresh(rt, plugin.settings)
    assert [(r.name, r.outcome) for r in results] == [("ofac_sdn", "loaded"), ("eu", "failed")]
    assert "refused" in (results[1].reason or "")
    [failed] = audit(rt, "screening.list_failed")
    assert (failed["name"], failed["outcome"]) == ("eu", "failed")
    assert plugin.payhub_payouts_blocked() == "sanctions list eu was never loaded (run `payhub screening refresh`)"


class ProvidedList:
    @hookimpl
    def payhub_sanctions_lists(self) -> list[SanctionsList]:
        return [SanctionsList("uk_hmt", date(2026, 12, 1), "ab" * 32,
                              (SanctionsEntry("UK-1", "Zoltan Kertesz", countries=("HU",)),))]


class BrokenProvider:
    @hookimpl
    def payhub_sanctions_lists(self) -> list[SanctionsList]:
        raise RuntimeError("list server unreachable")


def test_provider_lists_are_loaded_and_a_raising_provider_is_isolated(screening: Any) -> None:
    rt, plugin = screening()
    rt.plugins.hooks.register(BrokenProvider(), name="broken")
    rt.plugins.hooks.register(ProvidedList(), name="provider")
    results = {r.name: r for r in refresh(rt, plugin.settings)}
    assert results["uk_hmt"].outcome == "loaded" and results["uk_hmt"].format == "hook:provider"
    assert results["hooks.broken"].outcome == "failed"
    assert results["hooks.broken"].reason == "RuntimeError: list server unreachable"
    assert results["ofac_sdn"].outcome == results["eu"].outcome == "loaded"
    decision = plugin.payhub_screen_payee(Payee("p9", "Kertesz Zoltan", country="HU"))
    assert decision is not None and "uk_hmt of 2026-12-01: entry UK-1 'Zoltan Kertesz'" in decision.reason


def test_stale_or_missing_lists_block_payouts_until_refreshed(screening: Any, payhub_clock: ManualClock) -> None:
    rt, plugin = screening(max_age=7)
    assert plugin.payhub_payouts_blocked() == (
        "sanctions list ofac_sdn was never loaded (run `payhub screening refresh`); "
        "sanctions list eu was never loaded (run `payhub screening refresh`)")
    refresh(rt, plugin.settings)
    assert plugin.payhub_payouts_blocked() is None  # eu of 2026-11-30 is 2 days old on 2026-12-02
    payhub_clock.set(datetime(2026, 12, 7, 23, 59, tzinfo=UTC))
    assert plugin.payhub_payouts_blocked() is None  # 7 days: still allowed
    payhub_clock.set(datetime(2026, 12, 8, 0, 1, tzinfo=UTC))
    assert plugin.payhub_payouts_blocked() == "sanctions list eu of 2026-11-30 is 8 days old (max_list_age_days 7)"


def test_no_list_configured_or_loaded_blocks_payouts(make_runtime: Callable[..., Runtime]) -> None:
    rt = make_runtime("[hooks.sanctions]\n")
    plugin = rt.plugins.hooks.get_plugin("sanctions")
    assert plugin.payhub_payouts_blocked() == "no sanctions list is configured or loaded"
    decision = plugin.payhub_screen_payout(instruction(Payee("p1", "Anyone")))
    assert decision == ScreenDecision(False, "sanctions screening: no sanctions list is loaded (run `payhub "
                                             "screening refresh`)")


def instruction(payee: Payee) -> PayoutInstruction:
    return PayoutInstruction(1, "key-1", payee, Decimal("10"), "EUR", "ref",
                             datetime(2026, 12, 1, tzinfo=UTC))


def test_payout_screening_names_list_date_entry_and_score(screening: Any) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    assert plugin.payhub_screen_payout(instruction(Payee("p1", "Partner One GmbH", country="DE"))) is None
    decision = plugin.payhub_screen_payout(instruction(Payee("p2", "Acme", country="RU", aliases=("Иван Петров",))))
    assert decision is not None and not decision.allow
    assert decision.reason == ("sanctions: possible match on 1 listed entry: ofac_sdn of 2026-12-01: entry 7001 "
                               "'PETROV, Ivan Sergeyevich', score 100.0, country matches")
    assert "Acme" not in decision.reason and "Иван Петров" not in decision.reason


def test_a_newer_list_is_picked_up_by_a_running_plugin(screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    assert plugin.payhub_screen_payee(Payee("p1", "Northern Star Shipping")) is None
    eu = tmp_path / "lists" / "eu.xml"
    eu.write_text(eu.read_text(encoding="utf-8").replace("Northern Lights Trading LLC", "Northern Star Shipping"),
                  encoding="utf-8")
    refresh(rt, plugin.settings)
    decision = plugin.payhub_screen_payee(Payee("p1", "Northern Star Shipping"))
    assert decision is not None and "entry EU.8822.10 'Northern Star Shipping'" in decision.reason


class RaisingPayeeScreen:
    @hookimpl
    def payhub_screen_payee(self, payee: Payee) -> ScreenDecision | None:
        raise RuntimeError(f"cannot screen {payee.name}")


def test_payees_are_screened_when_added_with_the_result_stored_and_audited_sealed(
        screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    (tmp_path / "payees.csv").write_text("id,name,country,aliases\np1,Partner One,DE,\n"
                                         "p2,Иван Петров,RU,Vanya Petrov\n", encoding="utf-8")
    rt.settings.payees.file = tmp_path / "payees.csv"
    assert sync_payees(rt) == 2
    with rt.engine.connect() as conn:
        stored = {r.payee_id: (r.status, json.loads(r.detail)) for r in conn.execute(sa.select(payee_screenings))}
    assert {k: v[0] for k, v in stored.items()} == {"p1": "clear", "p2": "hit"}
    [answer] = stored["p2"][1]["results"]
    assert answer["plugin"] == "sanctions" and "entry 7001 'PETROV, Ivan Sergeyevich'" in answer["reason"]
    entries = audit(rt, "payee.screened")
    assert [(e["subject"], e["outcome"]) for e in entries] == [("p1", "clear"), ("p2", "hit")]
    with rt.engine.connect() as conn:
        text = " ".join(d for (d,) in conn.execute(sa.text(
            "SELECT detail FROM audit_log WHERE action = 'payee.screened'")))
    assert "Иван" not in text and "\\u0418\\u0432\\u0430\\u043d" not in text and "Vanya Petrov" not in text

    result = invoke_cli("-c", str(tmp_path / "payhub.toml"), "screening", "status", "--format", "json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert [h["payee"] for h in status["payee_hits"]] == ["p2"]
    assert "PETROV, Ivan Sergeyevich" in status["payee_hits"][0]["reasons"][0]


def test_a_raising_payee_screen_is_a_hit_with_the_payee_name_sealed_and_others_still_answer(
        screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    rt.plugins.hooks.register(RaisingPayeeScreen(), name="raising")
    (tmp_path / "payees.csv").write_text("id,name,country\np1,Partner One,DE\n", encoding="utf-8")
    rt.settings.payees.file = tmp_path / "payees.csv"
    sync_payees(rt)
    [entry] = audit(rt, "payee.screened")
    assert entry["outcome"] == "hit"
    results = {r["plugin"]: r for r in entry["results"]}
    assert results["sanctions"]["allow"] is True
    assert results["raising"]["allow"] is False
    assert results["raising"]["reason"].startswith("screening hook error: RuntimeError: cannot screen pii:v1:p1:")
    assert "Partner One" not in json.dumps(entry)
    assert screen_payees(rt, ["p1", "unknown"]) == {"p1": "hit"}


# ---------------------------------------------------------------------------------------------- end to end

SETTINGS: dict[str, Any] = {
    "programs": {"pct": {"calculator": "percentage", "percent": "10"}},
    "routing": {"default_rail": "bank"},
}


def deal(object_id: str, payee: str) -> SourceRecord:
    return SourceRecord("Opportunity", object_id, "won", "deal_won", "2026-01-15T10:00:00Z", payee, "1000", "EUR")


def test_a_listed_payee_is_held_before_sending_and_the_others_are_paid(
        payhub_harness: HarnessFactory, payhub_clock: ManualClock, tmp_path: Path) -> None:
    lists = copy_lists(tmp_path, payhub_clock.now())
    source, rail = FakeSource("crm"), FakeRail("bank")
    settings = {**SETTINGS, "hooks": {"sanctions": {"lists": [
        {"name": "ofac_sdn", "format": "ofac_csv", "files": [str(lists / n) for n in ("sdn.csv", "alt.csv",
                                                                                       "add.csv")]},
        {"name": "eu", "format": "eu_xml", "files": [str(lists / "eu.xml")]}],
        "max_list_age_days": 30, "max_skipped_share": 0.5}}}
    harness = payhub_harness(settings, {"sources.crm": source, "rails.bank": rail}, payees=[
        {"id": "p1", "name": "Partner One", "country": "DE", "iban": "DE02100100109307118603"},
        {"id": "p2", "name": "Acme Trading", "country": "RU", "aliases": "Дмитрий Волков",
         "iban": "DE02100100109307118603"}])
    assert harness.plugin_failures() == {}
    refreshed = invoke_cli("-c", str(harness.settings_file), "screening", "refresh")
    assert refreshed.exit_code == 0, refreshed.output
    assert "loaded ofac_sdn (ofac_csv)" in refreshed.stdout and "loaded eu (eu_xml)" in refreshed.stdout
    source.push(deal("006A", "p1"), deal("006B", "p2"))
    harness.run_until_idle(skip_waits=True)
    payouts = {p.payee_id: p for p in harness.payouts()}
    assert payouts["p1"].status == "sent"
    held = payouts["p2"]
    assert held.status == "held" and held.attempts == 0
    assert "eu of 2026-11-30: entry EU.7311.21 'Dmitri Alexandrovich Volkov'" in (held.reason or "")
    assert "score 100.0, country matches" in (held.reason or "")
    [entry] = [e for e in harness.audit("payout.held") if e.subject_id == str(held.id)]
    recorded = json.dumps(entry.detail, ensure_ascii=False)
    assert "'Dmitri Alexandrovich Volkov'" in recorded  # the list entry, in clear
    assert "Acme" not in recorded and "Дмитрий Волков" not in recorded  # never the payee's own name or alias
    assert held.idempotency_key not in rail.accepted
    assert [call for call in rail.calls if held.idempotency_key in call] == []
    assert harness.audit_problem() is None


# --------------------------------------------------------------------------------------------------- CLI

def test_check_exit_codes_no_list_hit_and_no_hit(screening: Any, tmp_path: Path) -> None:
    _rt, _plugin = screening()
    config = str(tmp_path / "payhub.toml")
    none_loaded = invoke_cli("-c", config, "screening", "check", "Ivan Petrov")
    assert none_loaded.exit_code == 2 and "no sanctions list is loaded" in none_loaded.stderr
    assert invoke_cli("-c", config, "screening", "refresh").exit_code == 0
    hit = invoke_cli("-c", config, "screening", "check", "Иван Петров", "--country", "de", "--format", "json")
    assert hit.exit_code == 1, hit.output
    answer = json.loads(hit.stdout)
    assert answer["hit"] is True and answer["threshold"] == 90
    assert answer["hits"] == [{"list": "ofac_sdn", "published_on": "2026-12-01", "entry_id": "7001",
                               "entry_name": "PETROV, Ivan Sergeyevich", "matched": "PETROV, Ivan Sergeyevich",
                               "score": 100.0, "country_match": False, "programs": ["RUSSIA-EO14024"]}]
    table = invoke_cli("-c", config, "screening", "check", "Aero Caribbean")
    assert table.exit_code == 1
    assert table.stdout == ("1 possible match at threshold 90:\n  ofac_sdn of 2026-12-01: entry 36 "
                            "'AEROCARIBBEAN AIRLINES' (as 'AERO-CARIBBEAN'), score 100.0, country not compared\n")
    clear = invoke_cli("-c", config, "screening", "check", "Partner One GmbH")
    assert clear.exit_code == 0 and "no match at threshold 90" in clear.stdout


def test_check_without_the_plugin_is_an_error(make_runtime: Callable[..., Runtime], tmp_path: Path) -> None:
    make_runtime("")
    result = invoke_cli("-c", str(tmp_path / "payhub.toml"), "screening", "check", "Anyone")
    assert result.exit_code == 2 and "not enabled" in result.stderr


def test_status_shows_dates_ages_and_staleness(screening: Any, tmp_path: Path, payhub_clock: ManualClock) -> None:
    screening(max_age=1)
    config = str(tmp_path / "payhub.toml")
    before = json.loads(invoke_cli("-c", config, "screening", "status", "--format", "json").stdout)
    assert [(x["list"], x["stale"], x["entries"]) for x in before["lists"]] == [("eu", True, 0),
                                                                                 ("ofac_sdn", True, 0)]
    assert "never loaded" in before["payouts_blocked"]
    assert invoke_cli("-c", config, "screening", "refresh").exit_code == 0
    after = json.loads(invoke_cli("-c", config, "screening", "status", "--format", "json").stdout)
    assert [(x["list"], x["published_on"], x["age_days"], x["stale"]) for x in after["lists"]] == [
        ("eu", "2026-11-30", 2, True), ("ofac_sdn", "2026-12-01", 1, False)]
    assert after["payouts_blocked"] == "sanctions list eu of 2026-11-30 is 2 days old (max_list_age_days 1)"
    table = invoke_cli("-c", config, "screening", "status")
    assert table.exit_code == 0 and "payouts blocked: sanctions list eu" in table.stdout


# ------------------------------------------------------------------ checks before a load becomes current

def current_versions(rt: Runtime) -> dict[str, tuple[int, int]]:
    """name -> (version id, entries) of each current version in the database."""
    with rt.engine.connect() as conn:
        rows = conn.execute(sa.select(screening_lists.c.name, screening_lists.c.id, screening_lists.c.entries)
                            .where(screening_lists.c.current.is_(True))).all()
    return {name: (version, entries) for name, version, entries in rows}


def rewrite(path: Path, content: bytes) -> None:
    """``path`` given ``content``, keeping its modification time (the test clock runs behind the real one: a file
    written now would be dated in the future)."""
    stamp = path.stat().st_mtime
    path.write_bytes(content)
    os.utime(path, (stamp, stamp))


def add_a_column(path: Path) -> None:
    """Every row of an OFAC CSV file with one more column, as after a format change."""
    lines = path.read_bytes().rstrip(b"\x1a").splitlines()
    rewrite(path, b"".join(line + b",-0- \r\n" for line in lines if line) + b"\x1a")


def test_a_csv_whose_rows_all_gained_a_column_is_refused_and_the_previous_version_stays(
        screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    before = current_versions(rt)
    assert before["ofac_sdn"][1] == 5
    for name in ("sdn.csv", "alt.csv", "add.csv"):
        add_a_column(tmp_path / "lists" / name)
    results = {r.name: r for r in refresh(rt, plugin.settings)}
    assert results["ofac_sdn"].outcome == "refused"
    assert results["ofac_sdn"].reason == "no entries (15 of 15 records skipped)"
    assert results["ofac_sdn"].version is not None and results["ofac_sdn"].version.id == before["ofac_sdn"][0]
    [refused] = audit(rt, "screening.list_refused")
    assert (refused["subject"], refused["outcome"], refused["entries"], refused["records"]) == (
        "ofac_sdn", "refused", 0, 15)
    assert refused["reason"] == "no entries (15 of 15 records skipped)"
    assert refused["current_version"] == before["ofac_sdn"][0] and refused["current_entries"] == 5
    assert "sdn.csv line 1: 13 columns, expected 12" in refused["problems"]
    assert current_versions(rt) == before
    assert plugin.payhub_payouts_blocked() is None  # the previous version is fresh
    decision = plugin.payhub_screen_payee(Payee("p1", "Ivan Petrov"))
    assert decision is not None and "entry 7001" in decision.reason  # still screened against the previous version

    cli = invoke_cli("-c", str(tmp_path / "payhub.toml"), "screening", "refresh")
    assert cli.exit_code == 1, cli.output
    assert "refused ofac_sdn (ofac_csv): no entries (15 of 15 records skipped); its version of 2026-12-01 " \
           "(5 entries) stays current" in " ".join(cli.stdout.split())


def test_a_configured_list_that_never_loaded_a_usable_version_keeps_blocking_payouts(
        screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening()
    add_a_column(tmp_path / "lists" / "sdn.csv")
    cli = invoke_cli("-c", str(tmp_path / "payhub.toml"), "screening", "refresh")
    assert cli.exit_code == 1, cli.output
    assert "refused ofac_sdn" in cli.stdout and "no version of it is loaded" in cli.stdout
    assert "loaded eu (eu_xml)" in cli.stdout
    assert set(current_versions(rt)) == {"eu"}
    assert plugin.payhub_payouts_blocked() == "sanctions list ofac_sdn was never loaded (run `payhub screening " \
                                              "refresh`)"


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("eu.xml", b'<export xmlns="http://eu.europa.ec/fpi/fsd/export" generationDate="2026-12-01T10:00:00"/>',
     "no entries"),
    ("sdn.csv", b'36,"AEROCARIBBEAN AIRLINES",-0- ,"CUBA",-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- ,-0- \r\n7001,"PETR',
     "7 of 10 records skipped (70.0%), more than max_skipped_share 0.5: a format change or a damaged file"),
])
def test_an_empty_export_or_a_truncated_csv_is_refused(screening: Any, tmp_path: Path, name: str, content: bytes,
                                                         reason: str) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    before = current_versions(rt)
    rewrite(tmp_path / "lists" / name, content)
    results = {r.name: r for r in refresh(rt, plugin.settings)}
    refused = [r for r in results.values() if r.outcome == "refused"]
    assert [(r.name, r.reason) for r in refused] == [({"eu.xml": "eu", "sdn.csv": "ofac_sdn"}[name], reason)]
    assert current_versions(rt) == before
    assert plugin.payhub_payouts_blocked() is None


def test_too_many_skipped_records_are_refused_at_the_default_share(screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening(skipped_share=None)
    results = refresh(rt, plugin.settings)
    assert [(r.name, r.outcome, r.reason) for r in results] == [
        ("ofac_sdn", "refused", "3 of 15 records skipped (20.0%), more than max_skipped_share 0.01: a format change "
                                "or a damaged file"),
        ("eu", "refused", "1 of 3 records skipped (33.3%), more than max_skipped_share 0.01: a format change or a "
                          "damaged file")]
    assert current_versions(rt) == {}
    assert "ofac_sdn was never loaded" in (plugin.payhub_payouts_blocked() or "")


def test_a_sharp_drop_in_entries_is_refused_unless_the_admin_accepts_it(screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    before = current_versions(rt)
    eu = tmp_path / "lists" / "eu.xml"
    text = eu.read_text(encoding="utf-8")
    start, end = text.index('  <sanctionEntity designationDetails="" unitedNationId="" euReferenceNumber="EU.8822'), \
        text.index('  <sanctionEntity designationDetails="" unitedNationId="" euReferenceNumber="EU.9000')
    eu.write_text(text[:start] + text[end:], encoding="utf-8")
    config = str(tmp_path / "payhub.toml")
    refused = invoke_cli("-c", config, "screening", "refresh")
    assert refused.exit_code == 1, refused.output
    reason = ("1 entries where the current version has 2 (50.0% fewer, more than max_drop_share 0.2); if the list "
              "really shrank, load it with `payhub screening refresh --accept-drop eu`")
    assert [e["reason"] for e in audit(rt, "screening.list_refused")] == [reason]
    assert current_versions(rt) == before

    other = invoke_cli("-c", config, "screening", "refresh", "--accept-drop", "ofac_sdn")
    assert other.exit_code == 1  # accepting a drop of another list accepts nothing here
    accepted = invoke_cli("-c", config, "screening", "refresh", "--accept-drop", "eu", "--accept-drop", "uk")
    assert accepted.exit_code == 0, accepted.output
    assert "loaded eu (eu_xml)" in accepted.stdout and "--accept-drop names no list refreshed: uk" in accepted.stdout
    loaded = audit(rt, "screening.list_loaded")[-1]
    assert (loaded["name"], loaded["outcome"], loaded["entries"]) == ("eu", "drop_accepted", 1)
    assert loaded["drop_accepted"] == {"previous_entries": 2, "share": 0.5}
    assert current_versions(rt)["eu"][1] == 1


def test_an_ofac_xml_whose_record_count_differs_from_its_entries_is_refused(screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening(names=("sdn_xml",))
    xml = tmp_path / "lists" / "sdn.xml"
    original = xml.read_text(encoding="utf-8")
    xml.write_text(original.replace("<Record_Count>4</Record_Count>", "<Record_Count>5</Record_Count>"),
                   encoding="utf-8")
    [result] = refresh(rt, plugin.settings)
    assert (result.outcome, result.reason) == (
        "refused", "the file declares 5 records (Record_Count) but holds 4: truncated or altered")
    xml.write_text(original, encoding="utf-8")
    [result] = refresh(rt, plugin.settings)
    assert (result.outcome, result.version and result.version.entries) == ("loaded", 3)


class SwitchableProvider:
    def __init__(self) -> None:
        self.lists: list[SanctionsList] = []
        self.error: Exception | None = None

    @hookimpl
    def payhub_sanctions_lists(self) -> list[SanctionsList]:
        if self.error:
            raise self.error
        return self.lists


def uk_list(*entries: SanctionsEntry, sha: str = "ab") -> SanctionsList:
    return SanctionsList("uk_hmt", date(2026, 12, 1), sha * 32, entries)


def test_an_empty_list_from_a_provider_is_refused(screening: Any) -> None:
    rt, plugin = screening()
    provider = SwitchableProvider()
    rt.plugins.hooks.register(provider, name="provider")
    provider.lists = [uk_list(SanctionsEntry("UK-1", "Zoltan Kertesz"))]
    refresh(rt, plugin.settings)
    provider.lists = [uk_list(sha="cd")]
    results = {r.name: r for r in refresh(rt, plugin.settings)}
    assert (results["uk_hmt"].outcome, results["uk_hmt"].reason) == ("refused", "no entries")
    assert current_versions(rt)["uk_hmt"][1] == 1
    assert plugin.payhub_screen_payee(Payee("p1", "Zoltan Kertesz")) is not None


def test_lists_no_longer_configured_or_provided_are_ignored_then_retired(
        screening: Any, payhub_clock: ManualClock) -> None:
    rt, plugin = screening()
    provider = SwitchableProvider()
    provider.lists = [uk_list(SanctionsEntry("UK-1", "Zoltan Kertesz"))]
    rt.plugins.hooks.register(provider, name="provider")
    refresh(rt, plugin.settings)
    payhub_clock.set(datetime(2026, 12, 8, 0, 1, tzinfo=UTC))  # eu (2026-11-30) is 8 days old, ofac_sdn 7
    assert "sanctions list eu of 2026-11-30 is 8 days old" in (plugin.payhub_payouts_blocked() or "")

    rt2, plugin2 = screening(names=("ofac_sdn",), copy=False)  # eu removed from the settings
    rt2.plugins.hooks.register(provider, name="provider")
    assert plugin2.payhub_payouts_blocked() is None
    assert plugin2.payhub_screen_payee(Payee("p1", "Dmitri Alexandrovich Volkov")) is None  # only on eu
    assert plugin2.payhub_screen_payee(Payee("p2", "Zoltan Kertesz")) is not None  # the provided list counts

    provider.error = RuntimeError("list server unreachable")
    results = refresh(rt2, plugin2.settings)
    assert [(r.name, r.outcome) for r in results if r.outcome == "retired"] == [("eu", "retired")]
    assert set(current_versions(rt2)) == {"ofac_sdn", "uk_hmt"}  # a provider failing this time keeps its list
    [retired] = audit(rt2, "screening.list_retired")
    assert (retired["subject"], retired["outcome"], retired["format"], retired["entries"]) == (
        "eu", "retired", "eu_xml", 2)

    provider.error = None
    provider.lists = []
    results = refresh(rt2, plugin2.settings)
    assert [(r.name, r.outcome) for r in results if r.outcome == "retired"] == [("uk_hmt", "retired")]
    assert set(current_versions(rt2)) == {"ofac_sdn"}
    assert plugin2.payhub_screen_payee(Payee("p2", "Zoltan Kertesz")) is None


# ------------------------------------------------------------------ dates from the future, confirmations

@pytest.mark.parametrize(("name", "file", "old", "new"), [
    ("eu", "eu.xml", 'generationDate="2026-11-30T', 'generationDate="2099-12-31T'),
    ("sdn_xml", "sdn.xml", "<Publish_Date>11/28/2026</Publish_Date>", "<Publish_Date>12/31/2099</Publish_Date>"),
])
def test_a_list_dated_in_the_future_is_refused_and_the_previous_version_stays(
        screening: Any, tmp_path: Path, name: str, file: str, old: str, new: str) -> None:
    rt, plugin = screening(names=(name,))
    refresh(rt, plugin.settings)
    before = current_versions(rt)
    path = tmp_path / "lists" / file
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    cli = invoke_cli("-c", str(tmp_path / "payhub.toml"), "screening", "refresh")
    assert cli.exit_code == 1, cli.output
    reason = ("dated 2099-12-31, 26692 days after today (2026-12-02, UTC): a list from the future would never "
              "become stale; check the file and the clock")
    assert f"refused {name} ({LISTS[name][0]}): {reason}" in " ".join(cli.stdout.split())
    [refused] = audit(rt, "screening.list_refused")
    assert (refused["subject"], refused["outcome"], refused["reason"], refused["published_on"]) == (
        name, "refused", reason, "2099-12-31")
    assert current_versions(rt) == before


def test_a_future_dated_version_already_stored_stops_payouts(screening: Any) -> None:
    rt, plugin = screening(names=("eu",))
    refresh(rt, plugin.settings)
    with rt.engine.begin() as conn:
        conn.execute(sa.update(screening_lists).values(published_on=date(2099, 12, 31)))
    assert plugin.payhub_payouts_blocked() == (
        "sanctions list eu is dated 2099-12-31, 26692 days after today (2026-12-02, UTC): a list from the future "
        "would never become stale; check the file and the clock")


def touch(lists: Path, names: tuple[str, ...], when: datetime) -> None:
    for name in names:
        os.utime(lists / name, (when.timestamp(), when.timestamp()))


def test_csv_files_fetched_again_unchanged_confirm_the_list_and_restart_its_age(
        screening: Any, tmp_path: Path, payhub_clock: ManualClock) -> None:
    rt, plugin = screening(names=("ofac_sdn",))
    config = str(tmp_path / "payhub.toml")
    assert invoke_cli("-c", config, "screening", "refresh").exit_code == 0
    payhub_clock.set(datetime(2026, 12, 20, 9, tzinfo=UTC))
    assert plugin.payhub_payouts_blocked() == (
        "sanctions list ofac_sdn of 2026-12-01 is 19 days old (max_list_age_days 7)")
    same_day = invoke_cli("-c", config, "screening", "refresh")  # files not fetched again: nothing confirmed
    assert "unchanged ofac_sdn" in same_day.stdout and plugin.payhub_payouts_blocked() is not None

    touch(tmp_path / "lists", ("sdn.csv", "alt.csv", "add.csv"), datetime(2026, 12, 19, 23, tzinfo=UTC))
    confirmed = invoke_cli("-c", config, "screening", "refresh")
    assert confirmed.exit_code == 0, confirmed.output
    assert ("confirmed ofac_sdn (ofac_csv): published 2026-12-01, confirmed current on 2026-12-19 (its files "
            "fetched again, the same content)") in " ".join(confirmed.stdout.split())
    [entry] = audit(rt, "screening.list_confirmed")
    version = current_versions(rt)["ofac_sdn"][0]
    assert (entry["subject"], entry["outcome"], entry["version"], entry["published_on"], entry["confirmed_on"],
            entry["previously_confirmed_on"]) == ("ofac_sdn", "confirmed", version, "2026-12-01", "2026-12-19", None)
    with rt.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(screening_lists)).scalar() == 1  # no new version
    assert plugin.payhub_payouts_blocked() is None
    status = json.loads(invoke_cli("-c", config, "screening", "status", "--format", "json").stdout)
    assert [(x["published_on"], x["confirmed_on"], x["age_days"], x["stale"]) for x in status["lists"]] == [
        ("2026-12-01", "2026-12-19", 1, False)]

    again = refresh(rt, plugin.settings)  # the same files once more: no new confirmation
    assert [r.outcome for r in again] == ["unchanged"]
    payhub_clock.set(datetime(2026, 12, 27, 9, tzinfo=UTC))
    assert plugin.payhub_payouts_blocked() == (
        "sanctions list ofac_sdn of 2026-12-01 (confirmed current on 2026-12-19) is 8 days old (max_list_age_days 7)")


def test_a_confirmation_of_an_older_version_does_not_date_a_newer_one(
        screening: Any, tmp_path: Path, payhub_clock: ManualClock) -> None:
    rt, plugin = screening(names=("ofac_sdn",), csv_date=datetime(2026, 11, 1, tzinfo=UTC))
    refresh(rt, plugin.settings)
    lists = tmp_path / "lists"
    touch(lists, ("sdn.csv", "alt.csv", "add.csv"), datetime(2026, 12, 2, tzinfo=UTC))
    assert [r.outcome for r in refresh(rt, plugin.settings)] == ["confirmed"]
    (lists / "sdn.csv").write_bytes((lists / "sdn.csv").read_bytes().replace(b"AEROCARIBBEAN", b"AEROCARIBE"))
    touch(lists, ("sdn.csv", "alt.csv", "add.csv"), datetime(2026, 11, 20, tzinfo=UTC))  # before the confirmation
    [loaded] = refresh(rt, plugin.settings)
    assert loaded.outcome == "loaded" and loaded.version is not None
    assert plugin.screener.lists()[0].confirmed_on is None
    assert plugin.payhub_payouts_blocked() == "sanctions list ofac_sdn of 2026-11-20 is 12 days old " \
                                              "(max_list_age_days 7)"


def test_an_unchanged_xml_list_is_not_confirmed_by_its_file_time(
        screening: Any, tmp_path: Path, payhub_clock: ManualClock) -> None:
    rt, plugin = screening(names=("eu",))
    refresh(rt, plugin.settings)
    touch(tmp_path / "lists", ("eu.xml",), datetime(2026, 12, 20, tzinfo=UTC))
    payhub_clock.set(datetime(2026, 12, 20, 9, tzinfo=UTC))
    assert [r.outcome for r in refresh(rt, plugin.settings)] == ["unchanged"]
    assert audit(rt, "screening.list_confirmed") == []
    assert "eu of 2026-11-30 is 20 days old" in (plugin.payhub_payouts_blocked() or "")


class HugeProvider:
    @hookimpl
    def payhub_sanctions_lists(self) -> list[SanctionsList]:
        return [SanctionsList("uk_hmt", date(2026, 12, 1), "ab" * 32, (
            SanctionsEntry("UK-1", "Zoltan Kertesz"), SanctionsEntry("UK-2", "Z" * 2_000_000)))]


def test_a_provider_entry_with_a_huge_name_is_skipped_and_counted(screening: Any) -> None:
    rt, plugin = screening(names=("eu",))
    rt.plugins.hooks.register(HugeProvider(), name="provider")
    results = {r.name: r for r in refresh(rt, plugin.settings)}
    assert (results["uk_hmt"].outcome, results["uk_hmt"].skipped) == ("loaded", 1)
    assert results["uk_hmt"].problems == ("entry 'UK-2': a name of 2,000,000 characters, more than 1,000",)
    assert current_versions(rt)["uk_hmt"][1] == 1
    [loaded] = [e for e in audit(rt, "screening.list_loaded") if e["name"] == "uk_hmt"]
    assert loaded["skipped"] == 1 and loaded["entries"] == 1


# ------------------------------------------------------------------------- sealed values and the CLI

def test_list_entry_names_are_not_sealed_and_status_opens_the_payees_own_sealed_names(
        screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    rt.plugins.hooks.register(RaisingPayeeScreen(), name="raising")
    (tmp_path / "payees.csv").write_text(
        "id,name,country,aliases\np-volkov,Volkov Trading,RU,Дмитрий Александрович Волков\n",
        encoding="utf-8")
    rt.settings.payees.file = tmp_path / "payees.csv"
    sync_payees(rt)
    [entry] = audit(rt, "payee.screened")
    results = {r["plugin"]: r["reason"] for r in entry["results"]}
    assert results["sanctions"] == ("sanctions: possible match on 1 listed entry: eu of 2026-11-30: entry "
                                    "EU.7311.21 'Dmitri Alexandrovich Volkov' (as 'Дмитрий Александрович Волков'), "
                                    "score 100.0, country matches")  # list data, in clear
    assert results["raising"].startswith("screening hook error: RuntimeError: cannot screen pii:v1:p-volkov:")

    config = str(tmp_path / "payhub.toml")
    status = json.loads(invoke_cli("-c", config, "screening", "status", "--format", "json").stdout)
    [hit] = status["payee_hits"]
    assert "screening hook error: RuntimeError: cannot screen Volkov Trading" in hit["reasons"]
    assert "pii:v1:" not in json.dumps(status)
    with rt.engine.begin() as conn:
        assert personal.erase_key(conn, "p-volkov")
    erased = json.loads(invoke_cli("-c", config, "screening", "status", "--format", "json").stdout)
    assert "screening hook error: RuntimeError: cannot screen [erased]" in erased["payee_hits"][0]["reasons"]


def test_status_opens_a_sealed_name_that_ran_into_the_following_letters(screening: Any, tmp_path: Path) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    rt.plugins.hooks.register(RaisingPayeeScreen(), name="raising")
    (tmp_path / "payees.csv").write_text("id,name,country,aliases\np1,Ivan Petrov,RU,Ivan\n", encoding="utf-8")
    rt.settings.payees.file = tmp_path / "payees.csv"
    sync_payees(rt)
    status = json.loads(invoke_cli("-c", str(tmp_path / "payhub.toml"), "screening", "status", "--format",
                                   "json").stdout)
    assert "screening hook error: RuntimeError: cannot screen Ivan Petrov" in status["payee_hits"][0]["reasons"]


@pytest.mark.parametrize(("args", "message"), [
    (("",), "give a name to screen"),
    (("  \t ",), "give a name to screen"),
    (("Ivan Petrov", "--country", "XX"), "'XX' is not an ISO 3166 alpha-2 country code"),
    (("Ivan Petrov", "--country", "Germany"), "is not an ISO 3166 alpha-2 country code"),
])
def test_check_refuses_an_empty_name_or_an_unknown_country(screening: Any, tmp_path: Path, args: tuple[str, ...],
                                                            message: str) -> None:
    rt, plugin = screening()
    refresh(rt, plugin.settings)
    result = invoke_cli("-c", str(tmp_path / "payhub.toml"), "screening", "check", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split()) and "no match" not in result.stdout
    kosovo = invoke_cli("-c", str(tmp_path / "payhub.toml"), "screening", "check", "Partner One", "--country", "xk")
    assert kosovo.exit_code == 0, kosovo.output
