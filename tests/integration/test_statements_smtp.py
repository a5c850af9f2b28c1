"""Partner statements mailed to a real SMTP server (aiosmtpd on 127.0.0.1, a free port): the message's headers,
parts and PDF; a server that is down or does not answer, then answers; a crash between sending and recording;
STARTTLS with a login and implicit TLS against a self-signed certificate, and what is refused (no STARTTLS, an
untrusted certificate, a wrong password)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cli_helpers import CliSite
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from test_program_rules import verified
from test_statements import AFTER, deliveries, paid_world, pdf_text, statement_entries

from payhub.compliance import personal
from payhub.db.schema import audit_log
from payhub.runtime import Runtime
from payhub.statements import content, delivery, stage
from payhub.testing import ManualClock

SENDER = "Partner payments <payments@payhub.example>"
USER, PASSWORD = "statements", "s3cret-Pa55"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Inbox:
    """An aiosmtpd handler keeping what it receives; ``slow`` makes MAIL FROM wait that many seconds."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.sessions: list[dict[str, Any]] = []
        self.slow = 0.0

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        if self.slow:
            await asyncio.sleep(self.slow)
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or TLS
        self.sessions.append({"tls": tls, "authenticated": session.authenticated})
        return "250 Message accepted"

    def of(self, payout_id: int) -> list[EmailMessage]:
        return [msg for _from, _to, msg in self.messages if msg["X-Payhub-Payout"] == str(payout_id)]


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # a refusal is answered 535


class Server:
    """A local SMTP server on a free port of 127.0.0.1, started and stopped by the test."""

    def __init__(self, port: int | None = None, **kwargs: Any) -> None:
        self.inbox = Inbox()
        self.port = port or free_port()
        self.kwargs = kwargs
        self.controller: Controller | None = None

    def start(self) -> Server:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **self.kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts (appended), stopped after it."""
    made: list[Server] = []
    yield made
    for server in made:
        server.stop()


def smtp_settings(port: int, security: str = "none", extra: str = "", timeout: float = 5) -> str:
    return (f'[notify]\nstatements = "smtp"\n[notify.smtp]\nhost = "127.0.0.1"\nport = {port}\n'
            f'security = "{security}"\nsender = "{SENDER}"\nreply_to = "finance@payhub.example"\n'
            f'timeout_seconds = {timeout}\n{extra}')


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (certificate, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def entries_of(rt: Runtime, payout_id: int) -> list[tuple[str, dict[str, Any]]]:
    with rt.engine.connect() as conn:
        return [(row.action, json.loads(row.detail)) for row in conn.execute(
            select(audit_log).where(audit_log.c.action.startswith("statement."),
                                    audit_log.c.subject_id == str(payout_id)).order_by(audit_log.c.seq))]


# ------------------------------------------------------------------------------------------------ the message


def test_statement_mailed_with_headers_html_text_and_pdf(make_runtime: Any, tmp_path: Path,
                                                         servers: list[Server]) -> None:
    server = Server().start()
    servers.append(server)
    rt = paid_world(make_runtime, tmp_path, smtp_settings(server.port))
    with ManualClock(AFTER):
        results = {r.payout_id: r for r in stage.deliver_batch(rt)}
    assert {n: r.status for n, r in results.items()} == {1: "delivered", 2: "delivered", 3: "delivered",
                                                         4: "skipped"}
    assert results[4].reason == "the payee has no e-mail address in the payee registry"
    assert len(server.inbox.messages) == 3
    [(mail_from, rcpt, msg)] = [m for m in server.inbox.messages if m[2]["X-Payhub-Payout"] == "2"]
    assert (mail_from, rcpt) == ("payments@payhub.example", ["ap@acme.example"])
    assert (msg["From"], msg["To"], msg["Reply-To"]) == (SENDER, "ap@acme.example", "finance@payhub.example")
    assert msg["Subject"] == "Payout statement 2: 127.72 EUR"
    with rt.engine.connect() as conn:
        statement = content.build(conn, 2)
    assert msg["Message-ID"] == delivery.message_id(statement, SENDER)
    assert re.fullmatch(r"<statement\.2\.[0-9a-f]{20}@payhub\.example>", msg["Message-ID"])
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    text_body, html_body = text.get_content(), html.get_content()
    assert "Total paid: 127.72 EUR" in text_body and "reward 5: p s Opportunity c" in text_body
    for amount in ("-912.30", "821.07", "547.38", "-197.06", "-131.37", "127.72 EUR", "0.9123", "per payee us all"):
        assert amount in html_body, amount
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html_body and "<script" not in html_body
    [attachment] = list(msg.iter_attachments())
    pdf = attachment.get_content()
    assert attachment.get_filename() == "statement-2.pdf" and attachment.get_content_type() == "application/pdf"
    assert isinstance(pdf, bytes) and pdf.startswith(b"%PDF-")
    row = deliveries(rt)[2]
    assert (row.channel, row.status, row.attempts, row.sha256) == (
        "smtp", "delivered", 1, hashlib.sha256(pdf).hexdigest())
    assert "127.72" in pdf_text(pdf) and "Acme" in pdf_text(pdf)
    # The address is personal data: stored sealed with the payee's key, opened only for those who may see it.
    assert personal.subject_of(row.destination) == "us" and "acme" not in row.destination
    with rt.engine.connect() as conn:
        assert stage.delivery_row(conn, 2, reveal=True)["destination"] == "ap@acme.example"  # type: ignore[index]
        assert stage.delivery_row(conn, 2, reveal=False)["destination"] == "[sealed]"  # type: ignore[index]
    [(_, sending), (action, detail)] = entries_of(rt, 2)
    assert (sending, action) == ({"attempt": 1, "channel": "smtp"}, "statement.delivered")
    assert detail["message_id"] == msg["Message-ID"] and detail["sha256"] == row.sha256
    assert personal.subject_of(detail["to"]) == "us"
    assert entries_of(rt, 4) == [("statement.skipped", {"attempt": 1, "channel": "smtp", "reason": results[4].reason})]
    verified(rt)


# --------------------------------------------------------------------------------------------------- failures


def test_server_down_then_not_answering_then_delivered(make_runtime: Any, tmp_path: Path,
                                                       servers: list[Server]) -> None:
    port = free_port()  # nothing listens yet
    rt = paid_world(make_runtime, tmp_path, smtp_settings(port, timeout=2))
    with ManualClock(AFTER) as clock:
        [down] = stage.deliver_batch(rt)  # the first failure of the server stops the batch
        assert (down.payout_id, down.status, down.server) == (1, "failed", True)
        assert down.reason is not None and "cannot connect to 127.0.0.1" in down.reason
        assert set(deliveries(rt)) == {1}  # the others were not tried: no attempt of theirs spent
        assert stage.paused_until(rt) is not None and stage.deliver_batch(rt) == []

        server = Server(port).start()
        servers.append(server)
        server.inbox.slow = 5.0  # answers MAIL FROM after the client's timeout
        clock.advance(stage.retry_delay(rt.settings, 1) + timedelta(seconds=1))
        [slow] = stage.deliver_batch(rt)
        assert (slow.payout_id, slow.status, slow.attempt, slow.server) == (1, "failed", 2, True)
        assert slow.reason is not None and "no answer within the timeout" in slow.reason
        assert stage.deliver_batch(rt) == []

        server.inbox.slow = 0
        clock.advance(stage.retry_delay(rt.settings, 2) + timedelta(seconds=1))
        done = {r.payout_id: (r.status, r.attempt) for r in stage.deliver_batch(rt)}
    assert done == {1: ("delivered", 3), 2: ("delivered", 1), 3: ("delivered", 1), 4: ("skipped", 1)}
    assert [len(server.inbox.of(n)) for n in (1, 2, 3)] == [1, 1, 1]
    assert [action for action, _ in entries_of(rt, 1)] == [
        "statement.sending", "statement.failed", "statement.sending", "statement.failed", "statement.sending",
        "statement.delivered"]
    assert [detail.get("server") for action, detail in entries_of(rt, 1) if action == "statement.failed"] == [
        True, True]
    verified(rt)


def test_attempts_stop_at_max_attempts_until_sent_by_hand(make_runtime: Any, tmp_path: Path,
                                                          servers: list[Server]) -> None:
    port = free_port()
    rt = paid_world(make_runtime, tmp_path, smtp_settings(port, extra="") + "")
    rt.settings.notify.max_attempts = 2
    with ManualClock(AFTER) as clock:
        assert [r.attempt for r in stage.deliver_batch(rt)] == [1]
        clock.advance(stage.retry_delay(rt.settings, 1) + timedelta(seconds=1))
        assert [(r.payout_id, r.attempt) for r in stage.deliver_batch(rt)] == [(1, 2)]
        clock.advance(timedelta(days=30))
        # Payout 1 has had its two attempts; the next payouts are tried, and stop the batch the same way.
        assert [(r.payout_id, r.attempt) for r in stage.deliver_batch(rt)] == [(2, 1)]
        server = Server(port).start()
        servers.append(server)
        clock.advance(timedelta(days=30))
        assert {r.payout_id for r in stage.deliver_batch(rt)} == {2, 3, 4}
        assert deliveries(rt)[1].status == "failed"
        assert stage.deliver_one(rt, 1).status == "delivered"
    assert (deliveries(rt)[1].attempts, len(server.inbox.of(1))) == (3, 1)


def test_a_crash_between_sending_and_recording_sends_again_with_the_same_message_id(
        make_runtime: Any, tmp_path: Path, servers: list[Server], monkeypatch: pytest.MonkeyPatch) -> None:
    server = Server().start()
    servers.append(server)
    rt = paid_world(make_runtime, tmp_path, smtp_settings(server.port))
    finish = stage._finish

    def crash(tx: Any, payout_id: int, attempt: int, status: str, **kwargs: Any) -> bool:
        if status == "delivered":
            raise KeyboardInterrupt("killed after the mail left")
        return finish(tx, payout_id, attempt, status, **kwargs)  # type: ignore[arg-type]

    with ManualClock(AFTER) as clock:
        monkeypatch.setattr(stage, "_finish", crash)
        with pytest.raises(KeyboardInterrupt):
            stage.deliver(rt, 1)
        monkeypatch.setattr(stage, "_finish", finish)
        row = deliveries(rt)[1]
        assert (row.status, row.attempts) == ("failed", 1) and row.reason.startswith("in progress: attempt 1")
        assert stage.deliver(rt, 1) is None  # its claim holds until the lease passes
        clock.advance(stage.lease(rt.settings) + timedelta(seconds=1))
        again = stage.deliver(rt, 1)
    assert again is not None and (again.status, again.attempt) == ("delivered", 2)
    first, second = server.inbox.of(1)
    assert first["Message-ID"] == second["Message-ID"]  # the receiver can recognise the copy
    assert [action for action, _ in entries_of(rt, 1)] == [  # the first attempt closed as abandoned
        "statement.sending", "statement.failed", "statement.sending", "statement.delivered"]


# ------------------------------------------------------------------------------------------------------- TLS


def test_starttls_with_login_against_a_self_signed_certificate(make_runtime: Any, tmp_path: Path,
                                                               servers: list[Server],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this certificate only
    server = Server(tls_context=server_context(cert, key), require_starttls=True, auth_required=True,
                    authenticator=authenticator).start()
    plain = Server().start()  # offers no STARTTLS
    servers += [server, plain]
    login = f'username = "{USER}"\npassword = "{PASSWORD}"\n'
    rt = paid_world(make_runtime, tmp_path, smtp_settings(plain.port, "starttls", login))
    with ManualClock(AFTER) as clock:
        [refused] = stage.deliver_batch(rt)
        assert refused.status == "failed" and "STARTTLS extension not supported" in (refused.reason or "")
        assert plain.inbox.messages == []  # never sent in plain text
        assert rt.settings.notify.smtp is not None
        rt.settings.notify.smtp.port = server.port
        rt.settings.notify.smtp.password = type(rt.settings.notify.smtp.password)("wrong")  # type: ignore[misc]
        clock.advance(stage.retry_delay(rt.settings, 1) + timedelta(seconds=1))
        [wrong] = stage.deliver_batch(rt)
        assert wrong.status == "failed" and "SMTPAuthenticationError: 535" in (wrong.reason or "")
        assert PASSWORD not in (wrong.reason or "") and "wrong" not in (wrong.reason or "")
        rt.settings.notify.smtp.password = type(rt.settings.notify.smtp.password)(PASSWORD)  # type: ignore[misc]
        clock.advance(stage.retry_delay(rt.settings, 2) + timedelta(seconds=1))
        assert {r.status for r in stage.deliver_batch(rt)} == {"delivered", "skipped"}
    assert len(server.inbox.messages) == 3
    assert server.inbox.sessions == [{"tls": True, "authenticated": True}] * 3


def test_implicit_tls_checks_the_certificate(make_runtime: Any, tmp_path: Path, servers: list[Server],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    server = Server(ssl_context=server_context(cert, key)).start()
    servers.append(server)
    rt = paid_world(make_runtime, tmp_path, smtp_settings(server.port, "tls"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-file.pem"))  # the certificate is not trusted
    with ManualClock(AFTER) as clock:
        [untrusted] = stage.deliver_batch(rt)
        assert untrusted.status == "failed" and "CERTIFICATE_VERIFY_FAILED" in (untrusted.reason or "")
        assert server.inbox.messages == []
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        clock.advance(stage.retry_delay(rt.settings, 1) + timedelta(seconds=1))
        assert {r.status for r in stage.deliver_batch(rt)} == {"delivered", "skipped"}
    assert server.inbox.sessions == [{"tls": True, "authenticated": None}] * 3
    assert ("statement.failed", "1", "failed") in statement_entries(rt)


class RefusingInbox(Inbox):
    """Refuses every recipient the way Postfix does, quoting the address."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


@pytest.mark.slow  # payouts paid through the pipeline, then mailed to a refusing server
def test_a_refusal_quoting_the_address_is_recorded_without_it(make_runtime: Any, tmp_path: Path,
                                                              servers: list[Server]) -> None:
    server = Server()
    server.inbox = RefusingInbox()
    servers.append(server.start())
    rt = paid_world(make_runtime, tmp_path, smtp_settings(server.port))
    with ManualClock(AFTER):
        results = stage.deliver_batch(rt)
    assert {r.status for r in results} == {"failed", "skipped"}  # the payee without an address is skipped
    with rt.engine.connect() as conn:
        text = " ".join(conn.execute(select(audit_log.c.detail)).scalars())
    assert "Recipient address rejected" in text and "<the payee's address>" in text
    for address in ("ap@acme.example", "billing@de.example"):
        assert address not in text
        assert all(address not in (row.reason or "") for row in deliveries(rt).values())


@pytest.mark.slow  # payouts paid through the pipeline, then mailed by hand
def test_send_by_hand_reads_an_address_just_added_to_the_payees_file(make_runtime: Any, tmp_path: Path,
                                                                      servers: list[Server]) -> None:
    server = Server().start()
    servers.append(server)
    rt = paid_world(make_runtime, tmp_path, smtp_settings(server.port))
    with ManualClock(AFTER):
        assert {r.payout_id: r.status for r in stage.deliver_batch(rt)}[4] == "skipped"
    payees = (tmp_path / "payees.csv").read_text()
    (tmp_path / "payees.csv").write_text(payees.replace("nomail,No Mail Ltd,FR,EUR,,", "nomail,No Mail Ltd,FR,EUR,"
                                                        "ap@nomail.example,"))
    assert "ap@nomail.example" in (tmp_path / "payees.csv").read_text()
    result = CliSite(tmp_path).cli("statements", "send", "--payout", "4")
    assert result.exit_code == 0, result.output
    assert deliveries(rt)[4].status == "delivered" and len(server.inbox.of(4)) == 1
