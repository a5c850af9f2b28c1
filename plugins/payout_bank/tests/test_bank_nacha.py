"""NACHA ACH files, read back with an independent parser (the ``carta-ach`` package's ``ach.parser.Parser``), with
every control figure recomputed here from the parsed entries: entry hash, totals, record and block counts."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from ach.parser import Parser  # carta-ach
from payhub.api import Outcome, utcnow

from payhub_bank import nacha
from payhub_bank.bizdays import business_day, is_business_day


def ach_files(outbox: Path) -> list[Path]:
    return sorted(outbox.glob("*.ach"))


def parse(path: Path) -> tuple[list[str], dict[str, Any]]:
    text = path.read_text(encoding="ascii")
    return text.splitlines(), Parser(text.replace("\r\n", "\n")).as_dict()


def check_file(path: Path) -> dict[str, Any]:
    """Check the file's structure and every control figure; return the parsed data."""
    lines, data = parse(path)
    assert all(len(line) == 94 for line in lines), [len(line) for line in lines]
    assert len(lines) % 10 == 0, "blocking factor 10"
    records = [line for line in lines if line != "9" * 94]
    padding = lines[len(records):]
    assert records[-1][0] == "9" and all(line == "9" * 94 for line in padding), "padding lines only at the end"
    assert len(padding) < 10
    header, control = data["file_header"], data["file_control"]
    assert header["record_type_code"] == "1" and header["priority_code"] == "01"
    assert (header["record_size"], header["blk_factor"], header["format_code"]) == ("094", "10", "1")
    assert header["immediate_dest"] == " 091000019" and header["immediate_org"] == "1234567890"

    file_hash = file_credit = file_count = 0
    traces = []
    for number, batch in enumerate(data["batches"], start=1):
        bh, bc = batch["batch_header"], batch["batch_control"]
        assert bh["serv_cls_code"] == bc["serv_cls_code"] == "220"  # credits only
        assert bh["std_ent_cls_code"] in ("CCD", "PPD")
        assert bh["batch_id"] == f"{number:07d}"
        assert bh["orig_dfi_id"] == "09100001" and bh["orig_stat_code"] == "1"
        assert bh["company_id"] == bc["company_id"] == "1234567890"
        entries = batch["entries"]
        assert entries
        routing_sum = sum(int(e["entry_detail"]["recv_dfi_id"]) for e in entries)
        credit = sum(int(e["entry_detail"]["amount"]) for e in entries)
        count = len(entries) + sum(len(e["addenda"]) for e in entries)
        assert int(bc["entry_hash"]) == routing_sum % 10**10
        assert int(bc["credit_amount"]) == credit and int(bc["debit_amount"]) == 0
        assert int(bc["entadd_count"]) == count
        for e in entries:
            detail = e["entry_detail"]
            assert detail["transaction_code"] in ("22", "32")
            assert detail["trace_num"].startswith("09100001")
            assert detail["add_rec_ind"] == ("1" if e["addenda"] else "0")
            traces.append(detail["trace_num"])
            for addenda in e["addenda"]:
                assert addenda["addenda_type_code"] == "05" and addenda["add_seq_num"] == "0001"
                assert addenda["ent_det_seq_num"] == detail["trace_num"][-7:]
        file_hash += int(bc["entry_hash"])
        file_credit += credit
        file_count += count
    assert int(control["batch_count"]) == len(data["batches"])
    assert int(control["block_count"]) == len(lines) // 10
    assert int(control["entadd_count"]) == file_count
    assert int(control["entry_hash"]) == file_hash % 10**10
    assert int(control["credit_amount"]) == file_credit and int(control["debit_amount"]) == 0
    assert len(set(traces)) == len(traces) and traces == sorted(traces)
    return data


def test_nacha_file_reads_back_with_correct_controls(rail, payout, outbox: Path) -> None:
    batch = [
        payout(1, "USD", "1234.56", name="Café Zoë LLC", routing_number="091000019", account_number="123456789"),
        payout(2, "USD", "0.01", routing_number="021000021", account_number="0000123", entry_class="PPD",
               name="Ana Núñez"),
        payout(3, "USD", "99999.99", routing_number="026009593", account_number="1234-5678 90",
               account_type="savings"),
        payout(4, "USD", "10.00", routing_number="322271627", account_number="44443333", entry_class="ppd",
               account_type="savings"),
        payout(5, "USD", "250.75"),
        payout(6, "USD", "3.10"),
        payout(7, "USD", "77.00", entry_class="PPD"),
    ]
    results = rail.send(batch)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 7
    [path] = ach_files(outbox)
    data = check_file(path)
    assert [b["batch_header"]["std_ent_cls_code"] for b in data["batches"]] == ["CCD", "PPD"]
    details = {e["entry_detail"]["trace_num"]: e for b in data["batches"] for e in b["entries"]}
    cents = sum(int(e["entry_detail"]["amount"]) for e in details.values())
    assert cents == int(sum(i.amount for i in batch) * 100) == 10157541
    lines = path.read_text().splitlines()
    manifest = json.loads((outbox / (path.name + ".manifest.json")).read_text())
    entries = {e["key"]: e for e in manifest["entries"]}
    for ins, result in zip(batch, results, strict=True):
        name, line = result.provider_ref.rsplit(":", 1)
        record = lines[int(line) - 1]
        entry = entries[ins.idempotency_key]
        assert name == path.name and entry["line"] == int(line) and record[0] == "6"
        assert record[79:94] == entry["trace_number"]
        assert record[39:54] == entry["individual_id"] == ins.idempotency_key[3:18].upper()
        assert int(record[29:39]) == int(ins.amount * 100) and Decimal(entry["amount"]) == ins.amount
        assert ins.idempotency_key.upper() in lines[int(line)]  # the 05 addenda carries the whole key
        parsed = details[entry["trace_number"]]["entry_detail"]
        routing = ins.payee.details["routing_number"]
        assert parsed["recv_dfi_id"] + parsed["check_digit"] == routing
        expected_code = "32" if ins.payee.details.get("account_type") == "savings" else "22"
        assert parsed["transaction_code"] == expected_code
    first = details[entries["ph-" + f"{1:032x}"]["trace_number"]]["entry_detail"]
    assert first["ind_name"].rstrip() == "CAFE ZOE LLC"
    assert first["dfi_acnt_num"].rstrip() == "123456789"
    third = details[entries["ph-" + f"{3:032x}"]["trace_number"]]["entry_detail"]
    assert third["dfi_acnt_num"].rstrip() == "1234567890"
    effective = data["batches"][0]["batch_header"]["eff_ent_date"]
    assert effective == manifest["effective_date"].replace("-", "")[2:]
    day = date.fromisoformat(manifest["effective_date"])
    assert is_business_day(day, "USD") and day == business_day(utcnow().date(), 1, "USD")


def test_entry_hash_keeps_the_rightmost_ten_digits(make_rail, payout, outbox: Path) -> None:
    rail = make_rail(ach={"addenda": False})
    batch = [payout(n, "USD", "1.00", routing_number="322271627", account_number=f"{n:08d}") for n in range(400)]
    rail.send(batch)
    [path] = ach_files(outbox)
    data = check_file(path)
    raw = 32227162 * 400
    assert raw > 10**10 and int(data["file_control"]["entry_hash"]) == raw % 10**10
    assert int(data["file_control"]["entadd_count"]) == 400
    assert len(path.read_text().splitlines()) == 410  # 404 records + 6 padding lines


def test_files_of_a_day_get_new_modifiers_and_trace_numbers_continue(make_rail, payout, outbox: Path) -> None:
    first = make_rail()
    first.send([payout(1, "USD", "1.00"), payout(2, "USD", "2.00")])
    first.send([payout(3, "USD", "3.00")])
    restarted = make_rail()  # a new process reads what the outbox holds
    restarted.send([payout(4, "USD", "4.00", entry_class="PPD")])
    files = ach_files(outbox)
    assert len(files) == 3
    modifiers, traces = [], []
    for path in files:
        data = check_file(path)
        modifiers.append(data["file_header"]["file_id_mod"])
        traces += [e["entry_detail"]["trace_num"] for b in data["batches"] for e in b["entries"]]
    assert modifiers == ["A", "B", "C"]
    assert traces == [f"09100001{n:07d}" for n in range(1, 5)]


def test_crlf_line_endings(make_rail, payout, outbox: Path) -> None:
    make_rail(ach={"line_ending": "CRLF", "reference_code": "PAYHUB"}).send([payout(1, "USD", "9.99")])
    [path] = ach_files(outbox)
    raw = path.read_bytes()
    assert raw.count(b"\r\n") == 10 and raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    data = check_file(path)
    assert data["file_header"]["reference_code"] == "PAYHUB  "


def test_both_currencies_in_one_call_make_one_file_each(rail, payout, outbox: Path) -> None:
    results = rail.send([payout(1, "EUR", "1.00"), payout(2, "USD", "2.00"), payout(3, "EUR", "3.00")])
    assert [r.provider_ref.split(":")[0].rsplit(".", 1)[1] for r in results] == ["xml", "ach", "xml"]
    assert len(ach_files(outbox)) == 1 and len(list(outbox.glob("*.xml"))) == 1
    assert len(list(outbox.glob("*.manifest.json"))) == 2


def test_trace_sequence_wraps_after_9999999(rail) -> None:
    settings = rail.settings.ach
    items = [nacha.AchItem(f"k{n}", f"ID{n}", 100, "A", "091000019", "1234", "22", "CCD", None) for n in range(2)]
    text, placed, next_trace = nacha.build(settings, utcnow(), "A", date(2026, 10, 5), items, 9_999_999)
    assert [p.trace_number for p in placed] == ["091000019999999", "091000010000001"]
    assert next_trace == 2
