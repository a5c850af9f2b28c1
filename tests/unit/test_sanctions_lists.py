"""Sanctions list files in their published formats (OFAC legacy CSV, OFAC XML, EU consolidated XML) and the fuzzy
matcher: normalisation, transliteration, scoring, threshold edges, country, and its speed on 40,000 names."""

from __future__ import annotations

import hashlib
import os
import random
import string
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from payhub.api import SanctionsEntry
from payhub.compliance.sanctions.checks import Counts, Gate, Verdict, content_problem, date_problem, drop_problem
from payhub.compliance.sanctions.config import SanctionsSettings
from payhub.compliance.sanctions.countries import country_code
from payhub.compliance.sanctions.formats import (
    MAX_ALIASES,
    MAX_NAME_CHARS,
    ListFileError,
    bounded,
    list_sha256,
    read_list,
)
from payhub.compliance.sanctions.matcher import ListIndex, normalise, score
from payhub.compliance.sanctions.store import decode, encode

DATA = Path(__file__).resolve().parents[1] / "data" / "sanctions"
CSV_FILES = [DATA / "sdn.csv", DATA / "alt.csv", DATA / "add.csv"]


def test_ofac_csv_trio_reads_entries_aliases_countries_nulls_and_the_eof_byte() -> None:
    assert all(path.read_bytes().endswith(b"\r\n\x1a") for path in CSV_FILES)
    parsed = read_list("ofac", "ofac_csv", CSV_FILES)
    entries = {e.entry_id: e for e in parsed.content.entries}
    assert sorted(entries) == ["173", "36", "7001", "7002", "7004"]
    assert entries["7001"] == SanctionsEntry("7001", "PETROV, Ivan Sergeyevich", ("PETROV, Vanya",), ("RU",),
                                             ("RUSSIA-EO14024",), "individual")
    assert entries["36"].kind == "entity" and entries["36"].aliases == ("AERO-CARIBBEAN",)  # -0- type: an entity
    assert entries["7002"].programs == ("SDGT", "IRGC") and entries["7002"].countries == ("IR",)
    assert entries["7004"].countries == ("KP",)  # "Korea, North"
    assert entries["173"].name == "ANGLO-CARIBBEAN CO., LTD." and entries["173"].countries == ()


def test_ofac_csv_bad_rows_are_reported_and_skipped_without_hiding_the_rest() -> None:
    parsed = read_list("ofac", "ofac_csv", CSV_FILES)
    assert parsed.skipped == 3 and parsed.records == 15 and parsed.declared is None  # 7 + 4 + 4 rows
    assert parsed.problems == ["sdn.csv line 5: 2 columns, expected 12",
                               "sdn.csv line 7: an entry needs a numeric ent_num and a name",
                               "alt.csv line 4: an alias needs a known ent_num and a name"]
    assert len(parsed.content.entries) == 5


def test_ofac_csv_date_is_the_newest_file_modification_time_and_the_hash_covers_each_file(tmp_path: Path) -> None:
    copies = []
    for number, path in enumerate(CSV_FILES):
        copy = tmp_path / path.name
        copy.write_bytes(path.read_bytes())
        stamp = datetime(2026, 11, 20 + number, 12, tzinfo=UTC).timestamp()
        os.utime(copy, (stamp, stamp))
        copies.append(copy)
    parsed = read_list("ofac", "ofac_csv", copies)
    assert parsed.content.published_on == date(2026, 11, 22)
    hashes = [hashlib.sha256(path.read_bytes()).hexdigest() for path in CSV_FILES]
    assert parsed.files == list(zip(["sdn.csv", "alt.csv", "add.csv"], hashes, strict=True))
    assert parsed.content.sha256 == list_sha256(hashes) == hashlib.sha256("".join(
        f"{h}\n" for h in hashes).encode()).hexdigest()


def test_ofac_csv_primary_file_alone_is_enough(tmp_path: Path) -> None:
    parsed = read_list("ofac", "ofac_csv", [DATA / "sdn.csv"])
    assert {e.entry_id: e.aliases for e in parsed.content.entries}["36"] == ()
    assert parsed.content.sha256 == hashlib.sha256((DATA / "sdn.csv").read_bytes()).hexdigest()


def test_ofac_xml_reads_publish_date_names_aliases_and_countries() -> None:
    parsed = read_list("sdn", "ofac_xml", [DATA / "sdn.xml"])
    assert parsed.content.published_on == date(2026, 11, 28)
    entries = {e.entry_id: e for e in parsed.content.entries}
    assert entries["7001"] == SanctionsEntry("7001", "Ivan Sergeyevich PETROV", ("Vanya PETROV",), ("RU", "BY"),
                                             ("RUSSIA-EO14024",), "individual")
    assert entries["36"].countries == ("CU",) and entries["36"].kind == "entity"
    assert entries["7002"].programs == ("SDGT", "IRGC")
    assert parsed.skipped == 1 and parsed.problems == ["sdn.xml sdnEntry #4: an entry needs a uid and a lastName"]
    assert (parsed.records, parsed.declared) == (4, 4)  # Record_Count counts the unreadable entry too


def test_eu_xml_reads_generation_date_aliases_in_any_script_and_iso_countries() -> None:
    parsed = read_list("eu", "eu_xml", [DATA / "eu.xml"])
    assert parsed.content.published_on == date(2026, 11, 30)
    entries = {e.entry_id: e for e in parsed.content.entries}
    assert entries["EU.7311.21"] == SanctionsEntry("EU.7311.21", "Dmitri Alexandrovich Volkov",
                                                   ("Дмитрий Александрович Волков",), ("RU",), ("RUS",), "person")
    assert entries["EU.8822.10"].countries == ("BY",)  # "00" (unknown) left out
    assert entries["EU.8822.10"].kind == "enterprise"
    assert parsed.skipped == 1 and "sanctionEntity #3" in parsed.problems[0]


def test_xml_entity_bomb_is_refused_without_expanding() -> None:
    started = time.monotonic()
    with pytest.raises(ListFileError, match=r"bomb.xml: refused: DTDForbidden"):
        read_list("sdn", "ofac_xml", [DATA / "bomb.xml"])
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(("fmt", "content", "message"), [
    ("ofac_xml", b"<sdnList><sdnEntry>", r"not well-formed XML"),
    ("ofac_xml", b"<export generationDate='2026-01-01'/>", r"not an OFAC sdnList document"),
    ("eu_xml", b"<sdnList/>", r"not an EU consolidated list export"),
    ("eu_xml", b"<export generationDate='yesterday'/>", r"generationDate 'yesterday' is not a date"),
    ("ofac_xml", b"<sdnList><sdnEntry><uid>1</uid><lastName>X</lastName></sdnEntry></sdnList>",
     r"no publshInformation/Publish_Date"),
    ("ofac_xml", b"<!DOCTYPE x SYSTEM 'http://example.invalid/x.dtd'><sdnList/>", r"refused"),
])
def test_a_file_that_cannot_be_read_fails_its_list(tmp_path: Path, fmt: str, content: bytes, message: str) -> None:
    path = tmp_path / "list.xml"
    path.write_bytes(content)
    with pytest.raises(ListFileError, match=message):
        read_list("x", fmt, [path])  # type: ignore[arg-type]


def test_a_missing_file_fails_its_list_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(ListFileError, match=r"cannot read .*missing.csv"):
        read_list("x", "ofac_csv", [tmp_path / "missing.csv"])


def test_settings_check_formats_and_file_counts() -> None:
    with pytest.raises(ValueError, match="takes exactly one file"):
        SanctionsSettings.model_validate({"lists": [{"name": "eu", "format": "eu_xml", "files": ["a", "b"]}]})
    with pytest.raises(ValueError, match="own name"):
        SanctionsSettings.model_validate({"lists": [{"name": "a", "format": "eu_xml", "files": ["a"]},
                                                    {"name": "a", "format": "eu_xml", "files": ["b"]}]})
    with pytest.raises(ValueError, match="less than or equal to 100"):
        SanctionsSettings.model_validate({"threshold": 101})
    settings = SanctionsSettings.model_validate({}, context={"database_url": "sqlite:///x.db"})
    assert (settings.threshold, settings.max_list_age_days, settings.database_url) == (90, 7, "sqlite:///x.db")
    assert "database_url" not in settings.model_dump()


def test_entries_round_trip_through_storage() -> None:
    entries = read_list("eu", "eu_xml", [DATA / "eu.xml"]).content.entries
    assert decode(encode(entries)) == entries


# ------------------------------------------------------------------------------------------------- matcher

def test_normalisation_transliterates_strips_honorifics_and_punctuation_and_sorts_tokens() -> None:
    assert normalise("Mr. HUSSEIN, Saddam") == normalise("saddam  hussein") == "hussein saddam"
    assert normalise("Иван Петров") == "ivan petrov"
    assert normalise("Ｏｍａｒ　AL-RASHID") == "al omar rashid"  # NFKC full-width forms
    assert normalise("Sheikh Dr. Ömer") == "omer"
    assert normalise("Δημήτρης") == normalise("dimitris")
    assert normalise("Mr.") == ""


def test_word_order_and_subset_names_match_but_one_common_word_does_not() -> None:
    assert score(normalise("Omar AL-RASHID"), normalise("AL-RASHID, Omar")) == 100
    assert score(normalise("Ivan Petrov"), normalise("PETROV, Ivan Sergeyevich")) == 100  # two shared words
    assert score(normalise("Ivan Smith"), normalise("PETROV, Ivan Sergeyevich")) < 60
    assert score(normalise("Omar"), normalise("AL-RASHID, Omar")) < 60  # a single word is not a match


def index() -> ListIndex:
    return ListIndex("ofac", date(2026, 11, 28), read_list("ofac", "ofac_csv", CSV_FILES).content.entries)


def test_a_cyrillic_payee_name_matches_the_latin_listing() -> None:
    [hit] = index().screen(["Иван Петров"], None, 90)
    assert (hit.entry_id, hit.matched, hit.score, hit.country_match) == ("7001", "PETROV, Ivan Sergeyevich", 100,
                                                                         None)


def test_a_latin_payee_name_matches_a_cyrillic_alias() -> None:
    eu = ListIndex("eu", date(2026, 11, 30), read_list("eu", "eu_xml", [DATA / "eu.xml"]).content.entries)
    [hit] = eu.screen(["Partner One", "Dmitriy Volkov"], "RU", 90)  # the second name: an alias of the payee
    assert (hit.entry_id, hit.matched, hit.country_match) == ("EU.7311.21", "Дмитрий Александрович Волков", True)
    assert "EU.7311.21" in hit.describe() and "country matches" in hit.describe()


def test_an_alias_on_the_list_is_matched_and_named() -> None:
    [hit] = index().screen(["Umar Al Rasheed"], None, 90)
    assert (hit.entry_id, hit.entry_name, hit.matched) == ("7002", "AL-RASHID, Omar", "AL RASHEED, Umar")


def test_threshold_edges_are_inclusive() -> None:
    entries = [SanctionsEntry("1", "PETRA, Ivan")]
    assert score(normalise("Ivan Petro"), normalise("PETRA, Ivan")) == 90.0  # 9 of 10 characters on each side
    edge = ListIndex("t", None, entries)
    assert [h.score for h in edge.screen(["Ivan Petro"], None, 90)] == [90.0]
    assert edge.screen(["Ivan Petro"], None, 91) == []
    assert [h.entry_id for h in edge.screen(["Someone Else"], None, 0)] == ["1"]
    assert [h.score for h in edge.screen(["Ivan Petra"], None, 100)] == [100.0]


def test_country_match_is_reported_and_a_mismatch_costs_the_configured_penalty() -> None:
    listed = index()
    [same] = listed.screen(["Ivan Petrov"], "RU", 90)
    [other] = listed.screen(["Ivan Petrov"], "DE", 90)
    [unknown] = listed.screen(["Ivan Petrov"], None, 90)
    assert (same.country_match, other.country_match, unknown.country_match) == (True, False, None)
    assert same.score == other.score == 100  # no penalty by default: the country is information only
    [penalised] = listed.screen(["Ivan Petrov"], "DE", 90, country_mismatch_penalty=10)
    assert penalised.score == 90
    assert listed.screen(["Ivan Petrov"], "DE", 90, country_mismatch_penalty=11) == []
    assert listed.screen(["Ivan Petrov"], "RU", 90, country_mismatch_penalty=50)[0].score == 100
    # an entry without countries is never penalised
    [vessel] = listed.screen(["Anglo Caribbean Co Ltd"], "DE", 90, country_mismatch_penalty=50)
    assert (vessel.entry_id, vessel.country_match, vessel.score) == ("173", None, 100)


def test_country_names_as_ofac_writes_them() -> None:
    assert [country_code(n) for n in ("Russia", "Iran", "Korea, North", "Burma", "Germany", "00", "Atlantis")] == [
        "RU", "IR", "KP", "MM", "DE", None, None]


def test_screening_one_payee_against_40000_names_is_fast() -> None:
    rnd = random.Random(13)

    def word() -> str:
        return "".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(4, 9)))

    entries = [SanctionsEntry(str(n), " ".join(word() for _ in range(rnd.randint(2, 4)))) for n in range(39_999)]
    entries.append(SanctionsEntry("40000", "PETROV, Ivan Sergeyevich"))
    big = ListIndex("big", None, entries)
    assert len(big) == 40_000
    started = time.perf_counter()
    hits = big.screen(["Иван Петров", "Ivan S. Petrov"], "RU", 90)
    elapsed = time.perf_counter() - started
    assert [h.entry_id for h in hits] == ["40000"]
    assert elapsed < 1.0, f"screening a payee (2 names) against 40,000 names took {elapsed:.3f}s"


# ------------------------------------------------------------------------------- checks before loading a list

def test_a_list_without_entries_or_with_too_many_skipped_records_is_refused() -> None:
    assert content_problem(Counts(entries=0, records=0), 0.01) == "no entries"
    assert content_problem(Counts(entries=0, records=15, skipped=15), 1.0) == "no entries (15 of 15 records skipped)"
    assert content_problem(Counts(entries=99, records=100, skipped=1), 0.01) is None  # 1 %: at the limit
    assert content_problem(Counts(entries=98, records=100, skipped=2), 0.01) == (
        "2 of 100 records skipped (2.0%), more than max_skipped_share 0.01: a format change or a damaged file")
    assert content_problem(Counts(entries=4, records=4), 0.01) is None


def test_an_ofac_xml_must_hold_the_records_it_declares() -> None:
    assert content_problem(Counts(entries=3, records=4, skipped=1, declared=4), 0.5) is None
    assert content_problem(Counts(entries=3, records=3, declared=4), 0.5) == (
        "the file declares 4 records (Record_Count) but holds 3: truncated or altered")
    assert content_problem(Counts(entries=5, records=5, declared=4), 0.5) is not None


def test_a_sharp_drop_against_the_current_version_is_refused_unless_accepted() -> None:
    assert drop_problem("sdn", None, 1, 0.2) is None  # nothing current: nothing to compare
    assert drop_problem("sdn", 100, 80, 0.2) is None  # 20 %: at the limit
    assert drop_problem("sdn", 100, 150, 0.2) is None  # growth is never refused
    assert drop_problem("sdn", 100, 79, 0.2) == (
        "79 entries where the current version has 100 (21.0% fewer, more than max_drop_share 0.2); if the list "
        "really shrank, load it with `payhub screening refresh --accept-drop sdn`")
    counts = Counts(entries=79, records=79)
    assert Gate(counts, 0.01, 0.2).judge("sdn", 100).refusal is not None
    assert Gate(counts, 0.01, 0.2, accept_drop=True).judge("sdn", 100) == Verdict(accepted_drop=0.21)
    assert Gate(counts, 0.01, 0.2, accept_drop=True).judge("sdn", 80) == Verdict()  # no drop to accept
    empty = Counts(entries=0, records=0)
    assert Gate(empty, 0.01, 0.2, accept_drop=True).judge("sdn", 100).refusal == "no entries"  # never accepted


def test_load_check_settings_have_documented_defaults_and_bounds() -> None:
    settings = SanctionsSettings.model_validate({})
    assert (settings.max_skipped_share, settings.max_drop_share) == (0.01, 0.2)
    for key in ("max_skipped_share", "max_drop_share"):
        for bad in (-0.1, 1.5, float("nan")):
            with pytest.raises(ValueError, match=key):
                SanctionsSettings.model_validate({key: bad})


# ------------------------------------------------------------------------------------------- dates and sizes

def test_a_list_dated_more_than_a_day_after_today_is_refused() -> None:
    today = date(2026, 12, 2)
    assert date_problem(date(2026, 12, 3), today) is None  # a publisher ahead of UTC may date it tomorrow
    assert date_problem(date(2020, 1, 1), today) is None  # old lists are for max_list_age_days
    assert date_problem(date(2099, 12, 31), today) == (
        "dated 2099-12-31, 26692 days after today (2026-12-02, UTC): a list from the future would never become "
        "stale; check the file and the clock")
    counts = Counts(entries=5, records=5)
    assert Gate(counts, 0.01, 0.2).judge("eu", None, date(2026, 12, 4), today).refusal == (
        "dated 2026-12-04, 2 days after today (2026-12-02, UTC): a list from the future would never become stale; "
        "check the file and the clock")
    assert Gate(counts, 0.01, 0.2, accept_drop=True).judge("eu", 5, date(2026, 12, 3), today) == Verdict()


def eu_export(*entities: str) -> bytes:
    return ('<export xmlns="http://eu.europa.ec/fpi/fsd/export" generationDate="2026-12-01T10:00:00">'
            + "".join(entities) + "</export>").encode()


def eu_entity(ref: str, *names: str) -> str:
    return (f'<sanctionEntity euReferenceNumber="{ref}" logicalId="1"><subjectType code="person"/>'
            + "".join(f'<nameAlias wholeName="{name}"/>' for name in names) + "</sanctionEntity>")


def test_an_eu_entry_with_a_huge_name_or_too_many_aliases_is_skipped_and_counted_quickly(tmp_path: Path) -> None:
    path = tmp_path / "eu.xml"
    huge = "A" * 5_000_000
    path.write_bytes(eu_export(eu_entity("EU.1", "Ivan Petrov"), eu_entity("EU.2", "Real Name", huge),
                               eu_entity("EU.3", *(f"Alias {n}" for n in range(MAX_ALIASES + 2))),
                               eu_entity("EU.4", "B" * MAX_NAME_CHARS, *(f"Alias {n}" for n in range(MAX_ALIASES)))))
    started = time.monotonic()
    parsed = read_list("eu", "eu_xml", [path])
    elapsed = time.monotonic() - started
    assert [e.entry_id for e in parsed.content.entries] == ["EU.1", "EU.4"]  # at the limits: kept
    assert (parsed.records, parsed.skipped) == (4, 2)
    assert parsed.problems == ["eu.xml sanctionEntity #2 (EU.2): a name of 5,000,000 characters, more than 1,000",
                               "eu.xml sanctionEntity #3 (EU.3): 501 aliases, more than 500"]
    assert elapsed < 2, f"reading a list with a 5 MB name took {elapsed:.1f}s"


def test_an_ofac_xml_entry_with_a_huge_name_is_skipped(tmp_path: Path) -> None:
    text = (DATA / "sdn.xml").read_text(encoding="utf-8")
    path = tmp_path / "sdn.xml"
    path.write_text(text.replace("<lastName>AERO-CARIBBEAN</lastName>",
                                 f"<lastName>{'AERO ' * 300}</lastName>"), encoding="utf-8")
    parsed = read_list("sdn", "ofac_xml", [path])
    assert "36" not in {e.entry_id for e in parsed.content.entries}
    assert "sdn.xml sdnEntry #1 (uid 36): a name of 1,499 characters, more than 1,000" in parsed.problems


def test_an_ofac_csv_row_with_a_huge_name_is_skipped_and_an_entry_with_too_many_aliases_too(tmp_path: Path) -> None:
    sdn, alt = tmp_path / "sdn.csv", tmp_path / "alt.csv"
    sdn.write_bytes((DATA / "sdn.csv").read_bytes())
    rows = [f'7001,{9000 + n},"aka","PETROV {n}",-0- \r\n' for n in range(MAX_ALIASES + 1)]
    rows.append(f'36,1,"aka","{"X" * (MAX_NAME_CHARS + 1)}",-0- \r\n')
    alt.write_bytes("".join(rows).encode() + b"\x1a")
    parsed = read_list("ofac", "ofac_csv", [sdn, alt])
    entries = {e.entry_id: e for e in parsed.content.entries}
    assert "7001" not in entries and entries["36"].aliases == ()
    assert "alt.csv line 502: a name of 1,001 characters, more than 1,000" in parsed.problems
    assert "sdn.csv entry '7001': 501 aliases, more than 500" in parsed.problems
    kept, problems = bounded(list(entries.values()))
    assert len(kept) == len(entries) and problems == []


def test_a_list_file_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "eu.xml"
    path.write_bytes((DATA / "eu.xml").read_bytes())
    size = path.stat().st_size
    assert len(read_list("eu", "eu_xml", [path], max_bytes=size).content.entries) == 2
    with pytest.raises(ListFileError, match=rf"list eu: .*eu.xml is larger than {size - 1:,} bytes \(max_file_mb\)"):
        read_list("eu", "eu_xml", [path], max_bytes=size - 1)
    settings = SanctionsSettings.model_validate({})
    assert (settings.max_file_mb, settings.max_file_bytes) == (200, 200 * 1024 * 1024)
    with pytest.raises(ValueError, match="max_file_mb"):
        SanctionsSettings.model_validate({"max_file_mb": 0})
