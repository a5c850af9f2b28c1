"""A corpus of hostile CRM records for the file source, written as raw bytes, each with what must become of it.

Every hostile record carries a marker ``hxNNNx`` (in its id where the id is not the point of the record, else in an
attribute) so its event can be found by its raw text, and is followed by a good sentinel record ``good-NNN`` that
must be ingested whatever happened before it. Expectations:

- ``ok``: ingested (then calculated), optionally with a check on the stored row;
- ``bad``: quarantined with a reason;
- ``any``: either, but stored values must be clean (no NUL, no lone surrogate) and the daemon goes on;
- ``dup``: the same CRM object as an earlier record: no event of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HEADER = b"ref,id,type,occurred_at,payee_id,partner_id,amount,currency,product\n"
WHEN = "2026-10-01T10:00:00Z"


@dataclass
class Case:
    marker: str
    line: bytes
    expect: str  # ok | bad | any | dup
    check: Callable[[dict[str, Any]], bool] | None = None
    note: str = ""


@dataclass
class Corpus:
    csv: bytearray = field(default_factory=lambda: bytearray(HEADER))
    jsonl: bytearray = field(default_factory=bytearray)
    csv_cases: list[Case] = field(default_factory=list)
    jsonl_cases: list[Case] = field(default_factory=list)
    sentinels: list[str] = field(default_factory=list)
    n: int = 0

    def _next(self) -> str:
        self.n += 1
        return f"hx{self.n:03d}x"

    def _sentinel(self, out: bytearray, fmt: str) -> None:
        sid = f"good-{len(self.sentinels) + 1:03d}"
        self.sentinels.append(sid)
        if fmt == "csv":
            out += f"{sid},{sid},deal_won,{WHEN},p1,acme,100.00,USD,widget\n".encode()
        else:
            out += (json.dumps({"ref": sid, "id": sid, "type": "deal_won", "occurred_at": WHEN, "payee_id": "p1",
                                "amount": "100.00", "currency": "USD"}) + "\n").encode()

    def csv_row(self, expect: str, *, id: str | None = None, type: str = "deal_won", occurred_at: str = WHEN,
                payee: str = "p1", partner: str = "acme", amount: str = "100.00", currency: str = "USD",
                product: str = "widget", raw: bytes | None = None, check: Any = None, note: str = "") -> str:
        """Add a CSV row built from fields (each written as given: quote it yourself) or ``raw`` bytes."""
        marker = self._next()
        if raw is None:
            text = ",".join([marker, marker if id is None else id, type, occurred_at, payee, partner, amount,
                             currency, product])
            line = text.encode("utf-8", "surrogatepass") + b"\n"
        else:
            line = marker.encode() + b"," + raw.replace(b"{m}", marker.encode())
        self.csv += line
        self.csv_cases.append(Case(marker, line, expect, check, note))
        self._sentinel(self.csv, "csv")
        return marker

    def json_row(self, expect: str, obj: Any = None, *, raw: bytes | None = None, check: Any = None,
                 note: str = "", **fields: Any) -> str:
        """Add a JSON Lines record: ``obj`` (a base record updated with ``fields``) or ``raw`` bytes."""
        marker = self._next()
        if raw is None:
            base = {"id": marker, "type": "deal_won", "occurred_at": WHEN, "payee_id": "p1", "amount": "100.00",
                    "currency": "USD"}
            record = {"ref": marker, **(base if obj is None else obj), **fields}
            line = json.dumps(record, ensure_ascii=True).encode() + b"\n"
        else:
            line = raw.replace(b"{m}", marker.encode())
            assert marker.encode() in line[:40], line[:40]
        self.jsonl += line
        self.jsonl_cases.append(Case(marker, line, expect, check, note))
        self._sentinel(self.jsonl, "jsonl")
        return marker


def attr(name: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda row: json.loads(row["attributes"]).get(name) == value


def col(name: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda row: row[name] == value


def build() -> Corpus:
    c = Corpus()
    # ------------------------------------------------------------------ CSV quoting
    c.csv_row("ok", product='Monitor 27" 4K', check=attr("product", 'Monitor 27" 4K'), note="inch mark")
    c.csv_row("ok", product='27" and 32" screens', check=attr("product", '27" and 32" screens'))
    c.csv_row("ok", product='"Widget, large"', check=attr("product", "Widget, large"))
    c.csv_row("ok", product='"He said ""hi"""', check=attr("product", 'He said "hi"'))
    c.csv_row("ok", product='"two\nlines"', check=attr("product", "two\nlines"), note="quoted newline")
    c.csv_row("ok", product='"cr\r\nlf"', check=attr("product", "cr\nlf"), note="CRLF in a quoted field: LF")
    c.csv_row("ok", payee='p"1', check=col("payee_id", 'p"1'))
    c.csv_row("ok", product="it's", check=attr("product", "it's"))
    c.csv_row("ok", product="a\tb", check=attr("product", "a\tb"))
    c.csv_row("bad", product="extra,column", note="too many columns")
    c.csv_row("bad", raw=b"{m},deal_won," + WHEN.encode() + b",p1\n", note="too few columns")
    c.csv_row("bad", raw=b"{m}\n", note="one column")
    c.csv_row("bad", product='"never closed', note="unterminated quote")
    # ------------------------------------------------------------------ bytes and encodings
    c.csv_row("bad", raw=b"{m},deal_won," + WHEN.encode() + b",p1,acme,1.00,USD,caf\xe9\n", note="latin-1")
    c.csv_row("bad", raw=b"{m},deal_won," + WHEN.encode() + b",p1,acme,1.00,USD,\xff\xfe\xfd\n", note="invalid")
    c.csv_row("bad", raw=b"{m},deal_won," + WHEN.encode() + b",p1,acme,1.00,USD,\xc3\n", note="truncated utf-8")
    c.csv_row("bad", raw=b"{m},deal_won," + WHEN.encode() + b",p1,acme,1.00,USD,\xed\xa0\x80\n",
              note="encoded surrogate")
    c.csv_row("bad", raw=b"{m},deal_won," + WHEN.encode() + b",p1,acme,1.00,USD,\xc0\xaf\n", note="overlong")
    c.csv_row("any", product="nul\x00byte", note="NUL in an attribute")
    c.csv_row("bad", payee="p\x00", note="NUL in the payee")
    c.csv_row("ok", product="emoji \U0001f600", check=attr("product", "emoji \U0001f600"))
    c.csv_row("ok", product="日本語の製品", check=attr("product", "日本語の製品"))
    c.csv_row("ok", product="x" * 10_000, check=attr("product", "x" * 10_000), note="10 KB field")
    c.csv_row("bad", product="y" * 200_000, note="200 KB field")
    c.csv_row("bad", product="z" * 2_000_000, note="2 MB field")
    # ------------------------------------------------------------------ lengths against the columns
    c.csv_row("ok", id="i" * 200, check=col("object_id", "i" * 200), note="id of exactly 200")
    for width in (201, 250, 1000, 70_000):
        c.csv_row("bad", id="L" * width, note=f"id of {width} characters")
    for width in (201, 5000):
        c.csv_row("bad", payee="P" * width, note=f"payee of {width}")
        c.csv_row("bad", partner="Q" * width, note=f"partner of {width}")
    c.csv_row("bad", type="t" * 101, note="type of 101")
    c.csv_row("ok", id="é" * 100, check=col("object_id", "é" * 100), note="200 bytes, 100 characters")
    # ------------------------------------------------------------------ dates
    for bad_date in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "2026-02-30", "2026-13-01",
                     "yesterday", "2026-10-01T25:00:00Z", "10/01/2026", "2026-10-01T10:00:00+25:00",
                     "99999-01-01", "-2026-01-01", "1e10", "NaN",
                     "2026-10-01T10:00:00 America/New_York", "２０２６-10-01"):
        c.csv_row("bad", occurred_at=bad_date, note=f"date {bad_date}")
    c.csv_row("ok", occurred_at="2026-10-01", note="date only")
    c.csv_row("ok", occurred_at="2026-10-01T10:00:00+14:00", note="far east offset")
    c.csv_row("ok", occurred_at="2026-10-01T10:00:00.123456Z", note="microseconds")
    c.csv_row("ok", occurred_at="2026-10-01T10:00:00.1234567890123Z", note="beyond microseconds")
    c.csv_row("any", occurred_at="", note="no date")
    # ------------------------------------------------------------------ amounts
    for bad_amount in ("1,000.00", "1e3", "1E-2", "NaN", "nan", "Infinity", "-Infinity", "inf", "0x10", "$100",
                       "100 USD", "twelve", "1.2.3", "--1", "+-1", "١٢٣", "１２３", "1_000", "-500.00", "-0.01",
                       "9" * 70, "1" + "0" * 40, "0." + "0" * 60 + "1", "1e999999", "12,5", "1 000", ".", "-",
                       "\u2212" + "5"):
        c.csv_row("bad", amount=bad_amount if "," not in bad_amount else f'"{bad_amount}"',
                  note=f"amount {bad_amount!r}")
    for good_amount, stored in (("0", "0"), ("0.00", "0.00"), (" 12.50 ", "12.50"), ("+7", "7"),
                                ("1000000", "1000000"), ("0.001", "0.001"), ("-0", None)):
        check = None if stored is None else col("amount", stored)
        c.csv_row("ok" if stored is not None else "any", amount=good_amount, check=check,
                  note=f"amount {good_amount!r}")
    # ------------------------------------------------------------------ currencies
    for bad_currency in ("US$", "XYZ", "EURO", "E", "€", "U\x00D", "ＵＳＤ", "usd\u200b"):
        c.csv_row("bad", currency=bad_currency, note=f"currency {bad_currency!r}")
    c.csv_row("bad", currency="", note="amount without currency")
    c.csv_row("ok", currency="eur", check=col("currency", "EUR"), note="lower-case currency")
    c.csv_row("ok", currency="JPY", amount="1500", check=col("currency", "JPY"))
    c.csv_row("ok", currency="BHD", amount="1.125", check=col("amount", "1.125"))
    # ------------------------------------------------------------------ payees and text CRM users type
    c.csv_row("bad", payee="", note="no payee")
    c.csv_row("bad", payee="   ", note="blank payee")
    for text in ("[/x]", "[bold]red[/bold]", "=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "<script>x</script>",
                 "'; DROP TABLE events; --", "Robert\"); DROP TABLE payees;--", "${jndi:ldap://x}", "{{7*7}}",
                 "%s%s%n", "../../etc/passwd", "C:\\Windows\\x", "null", "None", "true", "0",
                 "a\u0301", "ǅ", "ß", "İ", "\U0001f4a9"):
        c.csv_row("ok", payee=f'"{text.replace(chr(34), chr(34) * 2)}"', check=None, note=f"payee {text!r}")
        c.csv_row("ok", product=f'"{text.replace(chr(34), chr(34) * 2)}"', check=attr("product", text),
                  note=f"product {text!r}")
    c.csv_row("bad", payee="\u202ereversed", note="bidi override in an id")
    c.csv_row("ok", product="\u202ereversed", check=attr("product", "\u202ereversed"), note="bidi in text")
    c.csv_row("any", product="esc \x1b[2J\x1b]0;title\x07", note="terminal escapes")
    c.csv_row("any", payee="p\x1b[31m", note="escape in payee")
    # ------------------------------------------------------------------ types and transitions
    c.csv_row("bad", type="", note="no type")
    c.csv_row("bad", type="   ", note="blank type")
    c.csv_row("ok", type="deal_registered", note="another type")
    c.csv_row("ok", type="Deal_Won", note="type case is kept")
    # ------------------------------------------------------------------ identity
    c.csv_row("dup", id="good-001", note="exact repeat of an object")
    c.csv_row("dup", id="\ufeffgood-002", note="BOM before the id")
    c.csv_row("dup", id="good\u200b-003", note="zero-width space in the id")
    c.csv_row("dup", id="good-004\u2060", note="word joiner after the id")
    c.csv_row("dup", id=" good-005 ", note="spaces around the id")
    c.csv_row("ok", id="café-1", note="NFC id")
    c.csv_row("dup", id="cafe\u0301-1", note="NFD spelling of the NFC id")
    c.csv_row("ok", id="a:b", note="colon in the id")
    c.csv_row("ok", id="a%3Ab", note="percent in the id")
    c.csv_row("ok", id="a%b%", note="lone percent")
    c.csv_row("bad", id="", note="no id")
    c.csv_row("bad", id="\u200b", note="id of only a zero-width space")
    # ------------------------------------------------------------------ a bad row then its correction
    fix_id = "fix-1"
    c.csv_row("fix", id=fix_id, amount="twelve", note="bad, corrected below")
    c.csv_row("fix", id=fix_id, amount="12.00", note="the correction")
    # ------------------------------------------------------------------ JSON Lines
    c.json_row("ok", product='Monitor 27" 4K', check=attr("product", 'Monitor 27" 4K'), note='\\" in a string')
    c.json_row("ok", product='a\\"b', check=attr("product", 'a\\"b'))
    c.json_row("ok", product="line\nbreak", check=attr("product", "line\nbreak"))
    c.json_row("ok", product="\u2028\u2029", check=attr("product", "\u2028\u2029"), note="JS line separators")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "occurred_at": "' + WHEN.encode()
               + b'", "payee_id": "p1", "product": "\\ud800"}\n', note="lone surrogate")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "occurred_at": "' + WHEN.encode()
               + b'", "payee_id": "p\\udfff"}\n', note="lone low surrogate in the payee")
    c.json_row("ok", raw=b'{"id": "{m}", "type": "deal_won", "occurred_at": "' + WHEN.encode()
               + b'", "payee_id": "p1", "product": "\\ud83d\\ude00"}\n', check=attr("product", "\U0001f600"),
               note="surrogate pair")
    c.json_row("any", raw=b'{"id": "{m}", "type": "deal_won", "occurred_at": "' + WHEN.encode()
               + b'", "payee_id": "p1", "product": "a\\u0000b"}\n', note="escaped NUL in an attribute")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "occurred_at": "' + WHEN.encode()
               + b'", "payee_id": "p\\u0000"}\n', note="escaped NUL in the payee")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "amount": "1", "amount": "1000", "payee_id": "p1",'
               b' "occurred_at": "' + WHEN.encode() + b'", "currency": "USD"}\n', note="duplicate key")
    c.json_row("bad", raw=b'{"id": "{m}", "ID": "other", "type": "deal_won", "payee_id": "p1", "occurred_at": "'
               + WHEN.encode() + b'"}\n', note="duplicate key by case")
    c.json_row("bad", amount=12.5, note="float amount")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "payee_id": "p1", "amount": NaN, "currency": "USD",'
               b' "occurred_at": "' + WHEN.encode() + b'"}\n', note="NaN literal")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "payee_id": "p1", "amount": Infinity, '
               b'"currency": "USD", "occurred_at": "' + WHEN.encode() + b'"}\n', note="Infinity literal")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "payee_id": "p1", "amount": 1' + b"0" * 5000
               + b', "currency": "USD", "occurred_at": "' + WHEN.encode() + b'"}\n', note="5000-digit integer")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "payee_id": "p1", "amount": 1e400, '
               b'"currency": "USD", "occurred_at": "' + WHEN.encode() + b'"}\n', note="float overflow")
    c.json_row("ok", amount=250, check=col("amount", "250"), note="integer amount")
    c.json_row("bad", amount=True, note="boolean amount")
    c.json_row("bad", amount=[1], note="list amount")
    c.json_row("bad", amount={"value": "1"}, note="object amount")
    c.json_row("bad", raw=b'{"id": "{m}", "nested": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
               note="100k-deep nesting")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "payee_id": "p1"\n', note="truncated object")
    c.json_row("bad", raw=b'["{m}", "deal_won"]\n', note="an array, not an object")
    c.json_row("bad", raw=b'"{m}"\n', note="a string")
    c.json_row("bad", raw=b'{"ref": "{m}"}\n', note="an object with no fields")
    c.json_row("bad", raw=b"{m}\n", note="not JSON")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "payee_id": "caf\xe9", "occurred_at": "'
               + WHEN.encode() + b'"}\n', note="latin-1 byte")
    c.json_row("bad", raw=b'{"id": "{m}", "type": "deal_won", "payee_id": "p1", "occurred_at": "'
               + WHEN.encode() + b'"}{"id": "x"}\n', note="two objects on a line")
    c.json_row("ok", id=12345, check=col("object_id", "12345"), note="numeric id")
    c.json_row("bad", id={"x": 1}, note="object id")
    c.json_row("bad", id=None, note="null id")
    c.json_row("bad", payee_id=["p1"], note="list payee")
    c.json_row("bad", occurred_at=1_700_000_000, note="epoch number date")
    c.json_row("bad", occurred_at="9999-12-31T23:59:59-05:00", note="overflowing date")
    c.json_row("bad", type=None, note="null type")
    c.json_row("ok", tags={"a": [1, 2, {"b": None}]}, check=attr("tags", {"a": [1, 2, {"b": None}]}),
               note="nested attribute")
    c.json_row("ok", product="x" * 20_000, check=attr("product", "x" * 20_000), note="20 KB attribute")
    c.json_row("bad", product="y" * 300_000, note="300 KB attribute")
    c.json_row("bad", id="L" * 300, note="id of 300")
    c.json_row("ok", raw=b'\t {"id": "{m}", "type": "deal_won", "payee_id": "p1", "occurred_at": "'
               + WHEN.encode() + b'"} \t\n', note="whitespace around the object")
    return c
