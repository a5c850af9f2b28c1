"""Delivering a rendered statement: a mail through the configured SMTP server, or two files in the outbox.

A mail (:func:`send_mail`) has the HTML statement as its body (with a plain-text alternative) and the PDF
attached. Its ``Message-ID`` is fixed per payout (:func:`message_id`): a statement sent again after a crash (the
mail left, its delivery was not recorded) carries the same id, so the receiving side can recognise the copy.
The connection uses ``[notify.smtp] security``: ``starttls`` refuses a server that does not offer STARTTLS (it
never falls back to plain text), ``tls`` is TLS from the first byte; both check the server's certificate and name
against the system's trust store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` name others). Every exchange with the
server waits at most ``timeout_seconds``.

The outbox (:func:`write_outbox`) gets ``statement-<payout>.html`` and ``statement-<payout>.pdf``, each written
atomically (:func:`payhub.files.write_atomic`) with the private file mode (0600, or 0640 with
``[files] group_readable``); a statement written again replaces its files with the same content.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from pathlib import Path

from payhub.clock import utcnow
from payhub.errors import PayhubError
from payhub.files import write_atomic
from payhub.settings import Settings, SmtpSettings
from payhub.statements import render
from payhub.statements.addresses import mail_address as mail_address  # re-exported
from payhub.statements.content import Statement


class DeliveryError(PayhubError):
    """A statement could not be delivered this time (the reason says why); a later attempt may succeed.

    ``server`` says whether the failure is the server's or the outbox's (unreachable, timing out, TLS, login,
    an unwritable directory), so that the statements after it would fail the same way, rather than this
    statement's own (its recipient or its message refused)."""

    def __init__(self, message: str, *, server: bool = True) -> None:
        super().__init__(message)
        self.server = server


@dataclass(frozen=True, slots=True)
class Rendered:
    """A statement with its HTML, its PDF and the PDF's SHA-256 (hex)."""

    statement: Statement
    html: str
    pdf: bytes
    sha256: str


def rendered(statement: Statement) -> Rendered:
    """Render ``statement`` as HTML and PDF."""
    document = render.html(statement)
    data = render.pdf(statement, document)
    return Rendered(statement, document, data, hashlib.sha256(data).hexdigest())


def _domain(sender: str) -> str:
    address = mail_address(parseaddr(sender)[1])
    return address.rpartition("@")[2].lower() if address else "payhub.invalid"


def message_id(statement: Statement, sender: str) -> str:
    """The ``Message-ID`` of the payout's statement: the same for every send of it (its payout id and a hash of
    its idempotency key, at the sender's domain)."""
    digest = hashlib.sha256(statement.idempotency_key.encode()).hexdigest()[:20]
    return f"<statement.{statement.payout_id}.{digest}@{_domain(sender)}>"


def message(doc: Rendered, smtp: SmtpSettings, to: str) -> EmailMessage:
    """The mail of ``doc`` to ``to`` (an address checked by :func:`mail_address`): text and HTML alternatives, the
    PDF attached as ``statement-<payout>.pdf``."""
    s = doc.statement
    msg = EmailMessage(policy=SMTP)
    msg["From"] = smtp.sender
    msg["To"] = to
    if smtp.reply_to:
        msg["Reply-To"] = smtp.reply_to
    msg["Subject"] = f"Payout statement {s.payout_id}: {s.total} {s.currency}"
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = message_id(s, smtp.sender)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Payhub-Payout"] = str(s.payout_id)
    msg.set_content(render.text(s), cte="quoted-printable")
    msg.add_alternative(doc.html, subtype="html", cte="quoted-printable")
    msg.add_attachment(doc.pdf, maintype="application", subtype="pdf", filename=f"statement-{s.payout_id}.pdf")
    return msg


def _envelope_sender(smtp: SmtpSettings) -> str:
    return parseaddr(smtp.sender)[1] or smtp.sender


def send_mail(msg: EmailMessage, smtp: SmtpSettings, to: str) -> None:
    """Send ``msg`` to ``to`` through ``smtp``; raise :class:`DeliveryError` naming the failure (connection, TLS,
    login, refusal, timeout). The password never appears in the reason."""
    context = ssl.create_default_context()
    timeout = smtp.timeout_seconds
    try:
        client: smtplib.SMTP = (smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=context)
                                if smtp.security == "tls" else smtplib.SMTP(smtp.host, smtp.port, timeout=timeout))
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"cannot connect to {smtp.host}:{smtp.port}: {_reason(exc)}") from exc
    try:
        client.ehlo()
        if smtp.security == "starttls":
            client.starttls(context=context)  # SMTPNotSupportedError when not offered: never sent in plain text
            client.ehlo()
        if smtp.username:
            password = smtp.password.get_secret_value() if smtp.password is not None else ""
            client.login(smtp.username, password)
        client.send_message(msg, from_addr=_envelope_sender(smtp), to_addrs=[to])
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        own = isinstance(exc, smtplib.SMTPRecipientsRefused | smtplib.SMTPDataError)
        raise DeliveryError(f"{smtp.host}:{smtp.port}: {_reason(exc)}", server=not own) from exc
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refusals = "; ".join(f"{code} {_text(answer)}" for code, answer in exc.recipients.values())
        return f"recipient refused: {refusals}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):  # smtplib wraps some timeouts
        return f"no answer within the timeout ({type(exc).__name__}: {exc})"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


def _text(value: bytes | str) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else value)[:300]


def outbox_dir(settings: Settings) -> Path:
    """``[notify] outbox_dir`` made absolute (:meth:`Settings.resolve`: ``~`` expanded, a relative path against
    the settings file's directory)."""
    return settings.resolve(settings.notify.outbox_dir)


def write_outbox(doc: Rendered, directory: Path) -> Path:
    """Write ``statement-<payout>.html`` and ``.pdf`` into ``directory`` (created 0700 if missing); return the PDF's
    path. Raises :class:`DeliveryError` when the directory or a file cannot be written."""
    payout = doc.statement.payout_id
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(directory / f"statement-{payout}.html", doc.html.encode("utf-8"))
        target = write_atomic(directory / f"statement-{payout}.pdf", doc.pdf)
    except OSError as exc:
        raise DeliveryError(f"cannot write statement files into {directory}: {exc}") from exc
    return target
