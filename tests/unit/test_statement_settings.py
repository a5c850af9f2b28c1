"""The [notify] settings of partner statements: sender and reply_to are one plain address, no plain-text login
to a remote server, outbox_dir bounded and resolved like every path, since a plausible day."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from payhub.settings import NotifySettings, Settings, SmtpSettings
from payhub.statements import delivery

SMTP: dict[str, Any] = {"host": "mail.example.com", "sender": "statements@example.com"}


@pytest.mark.parametrize("value", [
    "statements@example.com", "Payhub <statements@example.com>", "statements@bücher.example",
])
def test_sender_and_reply_to_take_one_address(value: str) -> None:
    smtp = SmtpSettings(**{**SMTP, "sender": value, "reply_to": value})
    assert (smtp.sender, smtp.reply_to) == (value, value)


@pytest.mark.parametrize("value", [
    "a@example.com, b@example.com", "a@example.com\r\nBcc: victim@example.com", "a@example.com\nX: y",
    "not an address", "Payhub <>", "<a@example.com> <b@example.com>", "a b@example.com", "a@exa mple.com",
    "a@example.com\x00", "@example.com", "a@",
])
@pytest.mark.parametrize("key", ["sender", "reply_to"])
def test_sender_and_reply_to_refuse_lists_line_breaks_and_garbage(key: str, value: str) -> None:
    with pytest.raises(ValidationError, match="one e-mail address|at least 3 characters"):
        SmtpSettings(**{**SMTP, key: value})


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "LOCALHOST"])
def test_plain_text_login_only_on_this_host(host: str) -> None:
    assert SmtpSettings(**{**SMTP, "host": host, "security": "none", "username": "u"}).username == "u"


def test_plain_text_login_to_a_remote_server_is_refused() -> None:
    with pytest.raises(ValidationError, match="password in plain text to mail.example.com"):
        SmtpSettings(**{**SMTP, "security": "none", "username": "u"})
    assert SmtpSettings(**{**SMTP, "security": "none"}).username is None  # a relay without login
    assert SmtpSettings(**{**SMTP, "security": "starttls", "username": "u"}).username == "u"


@pytest.mark.parametrize(("value", "problem"), [("out\x00put", "NUL"), ("x" * 4097, "at most 4096")])
def test_outbox_dir_is_bounded(value: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        NotifySettings(outbox_dir=value)


def test_outbox_dir_is_resolved_like_every_path(tmp_path: Path) -> None:
    settings = Settings(notify=NotifySettings(outbox_dir="~/statements"))
    assert delivery.outbox_dir(settings) == Path.home() / "statements"
    settings = Settings(notify=NotifySettings(outbox_dir="out"))
    assert delivery.outbox_dir(settings) == settings.base_dir / "out"


@pytest.mark.parametrize("day", [date(1, 1, 1), date(1999, 12, 31)])
def test_since_is_a_plausible_day(day: date) -> None:
    with pytest.raises(ValidationError, match="years 2000 to 9999"):
        NotifySettings(since=day)
    assert NotifySettings(since=date(2026, 12, 1)).since == date(2026, 12, 1)


@pytest.mark.parametrize(("security", "username", "exchanges"), [
    ("starttls", "u", 14), ("starttls", None, 12), ("tls", "u", 12), ("none", None, 9),
])
def test_a_mail_is_bounded_by_its_real_number_of_exchanges(security: str, username: str | None,
                                                           exchanges: int) -> None:
    from payhub.statements import stage

    host = "127.0.0.1" if security == "none" else "mail.example.com"
    smtp = SmtpSettings(**{**SMTP, "host": host, "security": security, "username": username, "timeout_seconds": 5})
    settings = Settings(notify=NotifySettings(statements="smtp", smtp=smtp))
    assert stage.attempt_seconds(settings) == exchanges * 5
    assert stage.lease(settings).total_seconds() == exchanges * 5 + 60
