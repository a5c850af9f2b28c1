"""The console's statement pages (docs/console.md, Partner statements): the statement with its delivery row, the
PDF download (the same bytes as delivered), the role and session checks, hostile ids and a payout that does not add
up."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from console_client import Console
from sqlalchemy import select, update
from test_statements import AFTER, deliveries, paid_world, pdf_text
from test_statements_smtp import Server, smtp_settings

from payhub.db.schema import audit_log, payouts
from payhub.statements import stage
from payhub.testing import ManualClock


def test_statement_page_and_pdf_with_the_delivery_for_each_role(make_runtime: Any, tmp_path: Path) -> None:
    server = Server().start()
    try:
        rt = paid_world(make_runtime, tmp_path, smtp_settings(server.port))
        with ManualClock(AFTER):
            stage.deliver(rt, 2)
    finally:
        server.stop()
    auditor = Console(rt)
    auditor.sign_in("ann", "auditor")
    page = auditor.get("/console/payouts/2/statement")
    assert page.status_code == 200, page.text
    text = page.text
    assert "<h1>Statement of payout 2</h1>" in text
    for shown in ("127.72 EUR", "-912.30", "821.07", "547.38", "-197.06", "-131.37", "Clawback:", "Tax withheld:",
                  "cap <bdi>per payee us all</bdi> (limit 1500.00, used 900.00) cut 300.00", "withheld at 24%",
                  "nets against <a href=\"/console/rewards/1\">reward 1</a>", "0.9123", "test rates"):
        assert shown in text, shown
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Acme &amp; \\u202eSons" in text
    assert "<script>alert" not in text and "\u202e" not in text
    row = deliveries(rt)[2]
    assert '<span class="status status-delivered">delivered</span>' in text and row.sha256 in text
    assert "[sealed]" in text and "ap@acme.example" not in text  # the address is personal data: not for auditors
    operator = Console(rt)
    operator.sign_in("otto", "operator")
    assert "ap@acme.example" in operator.get("/console/payouts/2/statement").text

    pdf = auditor.get("/console/payouts/2/statement.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"] == 'attachment; filename="statement-2.pdf"'
    digest = hashlib.sha256(pdf.content).hexdigest()
    assert digest == pdf.headers["x-statement-sha256"] == row.sha256  # the bytes that were mailed
    assert "127.72" in pdf_text(pdf.content)
    with rt.engine.connect() as conn:
        downloads = [(r.actor, json.loads(r.detail)) for r in conn.execute(
            select(audit_log).where(audit_log.c.action == "api.request",
                                    audit_log.c.subject_id == "/console/payouts/2/statement.pdf"))]
    assert downloads == [("token:ann", {"method": "GET", "status": 200, "statement": 2, "format": "pdf",
                                        "sha256": digest})]


def test_statement_pages_need_a_session_and_refuse_bad_ids(make_runtime: Any, tmp_path: Path) -> None:
    rt = paid_world(make_runtime, tmp_path, '[notify]\nstatements = "outbox"\n')
    anonymous = Console(rt)
    for path in ("/console/payouts/2/statement", "/console/payouts/2/statement.pdf"):
        answer = anonymous.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login?next=")
    console = Console(rt)
    console.sign_in("ann", "auditor")
    for path, status in (("/console/payouts/abc/statement", 422), ("/console/payouts/-1/statement", 422),
                         ("/console/payouts/1%3Cscript%3E/statement.pdf", 422),
                         ("/console/payouts/" + "9" * 40 + "/statement", 422),
                         ("/console/payouts/99/statement", 404), ("/console/payouts/0/statement.pdf", 404),
                         ("/console/payouts/99999999999999999999/statement", 404)):
        answer = console.get(path)
        assert answer.status_code == status, (path, answer.status_code)
        assert "<script" not in answer.text.replace('<script src="/console/static/', "")
    page = console.get("/console/payouts/3/statement")
    assert page.status_code == 200
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page.text and "<img" not in page.text
    assert "Not delivered yet: the daemon delivers it on its next pass (outbox)." in page.text


def test_a_payout_that_does_not_add_up_shows_why_and_has_no_pdf(make_runtime: Any, tmp_path: Path) -> None:
    rt = paid_world(make_runtime, tmp_path)
    with rt.engine.begin() as conn:
        conn.execute(update(payouts).where(payouts.c.id == 1).values(amount_minor=payouts.c.amount_minor + 1))
    console = Console(rt)
    console.sign_in("ann", "auditor")
    page = console.get("/console/payouts/1/statement")
    assert page.status_code == 409
    assert "does not add up: its lines add up to 693.35 EUR, not the payout&#39;s 693.36 EUR" in page.text
    assert "statements are off" in page.text
    assert console.get("/console/payouts/1/statement.pdf").status_code == 409
