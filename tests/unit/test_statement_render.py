"""A statement's HTML, PDF, mail and text without a database: hostile CRM text escaped and bounded, the PDF made
offline and the same bytes each time, e-mail addresses checked, the Message-ID fixed per payout, the retry delays."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest
from pypdf import PdfReader

from payhub.settings import Settings, SmtpSettings
from payhub.statements import content, delivery, render, stage
from payhub.statements.content import Cap, Fx, Line, Netted, Statement, shown

HOSTILE = '<script>alert("x")</script>\u202eevil\u200b\x1b[2J & \'quote\''
WHEN = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def line(reward_id: int, kind: str, amount_minor: int, **overrides: object) -> Line:
    values: dict[str, object] = dict(
        reward_id=reward_id, kind=kind, source="salesforce", object_type="Opportunity",
        object_id=shown(HOSTILE), event_key=shown("salesforce:Opportunity:" + HOSTILE + ":won"),
        occurred_at=WHEN, program="spiff", program_version=3, description=shown(HOSTILE * 200, content.MAX_DESCRIPTION),
        gross=f"{amount_minor / 100:.2f}", gross_currency="EUR", earned=None, caps=(), nets_against=(),
        taken_back=None, granted=None, withholds=None, withholding_rate=None, withheld_from=None, fx=None,
        amount_minor=amount_minor, amount=f"{amount_minor / 100:.2f}")
    values.update(overrides)
    return Line(**values)  # type: ignore[arg-type]


def statement(**overrides: object) -> Statement:
    lines = (
        line(1, "reward", 60000, earned="900.00", caps=(Cap("per payee p all", "1500.00", "900.00", "300.00"),)),
        line(2, "clawback", -25000, nets_against=(Netted(9, "250.00", "USD"),), granted="250.00",
             fx=Fx("-273.97", "USD", "0.9125", "reference", "2026-03-01", "event", "ECB euro reference rates")),
        line(3, "withholding", -14400, withholds=1, withholding_rate="24%", withheld_from="600.00"),
    )
    values: dict[str, object] = dict(
        payout_id=42, idempotency_key="ph-0123456789abcdef", status="paid", rail="bank", provider_ref="f.xml:3",
        currency="EUR", created_at=WHEN, sent_at=WHEN, paid_at=WHEN + timedelta(days=1), payee_id="p1",
        payee_name=shown(HOSTILE), payee_erased_at=None, lines=lines,
        rewards_minor=60000, clawbacks_minor=-25000, withholding_minor=-14400, total_minor=20600)
    values.update(overrides)
    return Statement(**values)  # type: ignore[arg-type]


def test_shown_bounds_text_and_makes_hidden_characters_visible() -> None:
    assert shown(HOSTILE) == '<script>alert("x")</script>\\u202eevil\\u200b\\x1b[2J & \'quote\''
    assert shown("x" * 500) == "x" * 300 + "…"
    assert shown(None) == ""
    assert len(shown(HOSTILE * 1000, 1000)) <= 1000 * 10 + 1  # escapes lengthen, the input is cut first


def test_html_escapes_every_crm_text() -> None:
    document = render.html(statement())
    assert "<script" not in document and "\u202e" not in document and "\x1b" not in document
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;\\u202eevil\\u200b\\x1b[2J &amp; &#39;quote&#39;" in document
    assert document.count("<bdi>") > 10  # CRM text cannot reorder what follows it
    for text in ("Payout statement 42", "206.00 EUR", "600.00", "-250.00", "-144.00", "earned 900.00 EUR before caps",
                 "cap <bdi>per payee p all</bdi> (limit 1500.00, used 900.00) cut 300.00",
                 "nets against reward 9 (250.00 USD)", "withheld at 24% from reward 1 (gross 600.00 EUR)",
                 "FX: -273.97 USD × 0.9125 (reference rate of 2026-03-01, <bdi>ECB euro reference rates</bdi>",
                 "2026-03-03 12:00 UTC"):
        assert text in document, text
    assert "http" not in document.replace('name="viewport"', "")  # no link, image or style sheet to fetch


def test_pdf_is_made_offline_and_is_the_same_each_time() -> None:
    s = statement()
    first, second = render.pdf(s), render.pdf(s)
    assert first.startswith(b"%PDF-") and first == second
    assert b"/CreationDate" not in first and b"/ModDate" not in first
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(first)).pages)
    for amount in ("206.00 EUR", "600.00", "-250.00", "-144.00", "0.9125", "Payout statement 42"):
        assert amount in text, amount
    assert "\\u202eevil" in text  # the bidi override is shown, not obeyed
    assert len(PdfReader(io.BytesIO(first)).pages) >= 2  # the long descriptions wrap onto more pages


def test_pdf_refuses_every_url(caplog: pytest.LogCaptureFixture) -> None:
    s = statement()
    document = render.html(s).replace(
        "</body>", '<img src="http://127.0.0.1:9/logo.png"><link rel="stylesheet" href="file:///etc/passwd">'
        '<p style="background: url(https://127.0.0.1:9/x.png)">x</p></body>')
    with caplog.at_level(logging.WARNING, logger="payhub.statements.render"):
        data = render.pdf(s, document)
    assert data.startswith(b"%PDF-")
    refused = [r.getMessage() for r in caplog.records if "refused to fetch" in r.getMessage()]
    assert any("http://127.0.0.1:9/logo.png" in m for m in refused)
    assert any("file:///etc/passwd" in m for m in refused)


def test_text_part_lists_each_line_and_the_totals() -> None:
    text = render.text(statement())
    assert "- reward 2: [Clawback] spiff salesforce Opportunity" in text
    assert "(from -273.97 USD at 0.9125) = -250.00 EUR" in text
    assert "Total paid: 206.00 EUR" in text and "Tax withheld: -144.00 EUR" in text


@pytest.mark.parametrize(("value", "expected"), [
    ("ap@acme.example", "ap@acme.example"),
    ("first.last+tag@sub.acme-corp.example", "first.last+tag@sub.acme-corp.example"),
    ("ap@bücher.example", "ap@xn--bcher-kva.example"),
    ("", None), (None, None), ("acme.example", None), ("a@b.example, evil@x.example", None),
    ("Acme <ap@acme.example>", None), ("ap@acme.example\r\nBcc: evil@x.example", None), ("a b@acme.example", None),
    ("ap@-acme.example", None), ("ap@acme..example", None), ("josé@acme.example", None),
    ("a" * 65 + "@x.example", None),
    ("ap@" + "a" * 250 + ".example", None), ('"ap"@acme.example', None),
])
def test_mail_address_is_one_plain_address(value: str | None, expected: str | None) -> None:
    assert delivery.mail_address(value) == expected


def smtp(sender: str = "Payments <payments@payhub.example>") -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", sender=sender, reply_to="finance@payhub.example")


def test_message_has_both_parts_the_pdf_and_a_message_id_fixed_per_payout() -> None:
    doc = delivery.Rendered(statement(), render.html(statement()), b"%PDF-1.7 test", "0" * 64)
    msg = message_from_bytes(delivery.message(doc, smtp(), "ap@acme.example").as_bytes(), policy=policy.default)
    assert (msg["From"], msg["To"], msg["Subject"]) == (
        "Payments <payments@payhub.example>", "ap@acme.example", "Payout statement 42: 206.00 EUR")
    assert msg["Message-ID"] == delivery.message_id(statement(), "Payments <payments@payhub.example>")
    assert msg["Message-ID"].startswith("<statement.42.") and msg["Message-ID"].endswith("@payhub.example>")
    assert msg["Message-ID"] == delivery.message(doc, smtp(), "ap@acme.example")["Message-ID"]  # every send
    other = statement(idempotency_key="ph-another-installation")
    assert delivery.message_id(other, "payments@payhub.example") != msg["Message-ID"]
    assert delivery.message_id(statement(), "not an address").endswith("@payhub.invalid>")
    assert [part.get_content_type() for part in msg.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html", "application/pdf"]
    html_part = msg.get_body(("html",))
    assert html_part is not None and "&lt;script&gt;" in html_part.get_content()


def test_retry_delays_grow_to_an_hour_and_cover_the_lease() -> None:
    settings = Settings.model_validate({"notify": {"statements": "smtp", "smtp": {
        "host": "127.0.0.1", "sender": "p@payhub.example", "timeout_seconds": 30}}})
    assert stage.attempt_seconds(settings) == 360  # starttls without login: 12 exchanges of 30 s
    assert stage.lease(settings) == timedelta(seconds=420)
    assert [stage.retry_delay(settings, n).total_seconds() for n in range(1, 9)] == [
        420, 420, 420, 480, 960, 1920, 3600, 3600]
    outbox = Settings.model_validate({"notify": {"statements": "outbox"}})
    assert stage.lease(outbox) == timedelta(seconds=120)


def test_statement_statuses() -> None:
    assert sorted(content.STATEMENT_STATUSES) == ["paid", "sent"]
    assert statement().deliverable and not statement(status="scheduled").deliverable
