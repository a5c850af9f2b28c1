"""The database URL as payhub shows it (``config show``): no password, in the user part or the query, survives."""

from __future__ import annotations

import pytest

from payhub.db.engine import MASK, shown_url

SECRET = "qpSECRET"


@pytest.mark.parametrize(("url", "expected"), [
    (f"postgresql+psycopg://u@127.0.0.1/x?password={SECRET}1", "postgresql+psycopg://u@127.0.0.1/x?password=***"),
    (f"postgresql+psycopg:///x?host=/tmp&password={SECRET}4", "postgresql+psycopg:///x?host=/tmp&password=***"),
    (f"postgresql+psycopg://u:pa@ss{SECRET}3@host/x", MASK),
    (f"postgresql+psycopg://u:{SECRET}@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
    (f"postgresql+psycopg://u:p%40{SECRET}@h/db", "postgresql+psycopg://u:***@h/db"),
    (f"postgresql+psycopg://u:pa/{SECRET}@h/db", "postgresql+psycopg://u:***@h/db"),
    (f"postgresql+psycopg://h/db?sslmode=require&sslpassword={SECRET}&sslkey=/k/{SECRET}.key",
     "postgresql+psycopg://h/db?sslmode=require&sslpassword=***&sslkey=***"),
    (f"postgresql+psycopg://h/db?PassWd={SECRET}&api_token={SECRET}&client_secret={SECRET}",
     "postgresql+psycopg://h/db?PassWd=***&api_token=***&client_secret=***"),
    (f"postgresql+psycopg://h/db?password=a{SECRET}&password=b{SECRET}",
     "postgresql+psycopg://h/db?password=***&password=***"),
    (f"postgresql+psycopg://h/db?pass%77ord={SECRET}", "postgresql+psycopg://h/db?password=***"),
    ("sqlite:///payhub.db", "sqlite:///payhub.db"),
    ("postgresql+psycopg://payhub@db.internal:5432/payhub?connect_timeout=5",
     "postgresql+psycopg://payhub@db.internal:5432/payhub?connect_timeout=5"),
    (f"not a url {SECRET}", MASK),
    (f"://{SECRET}", MASK),
], ids=["query-password", "socket-query-password", "unescaped-at", "user-password", "escaped-at",
        "slash-in-password", "ssl-secrets", "secret-like-names",
        "repeated", "encoded-name", "sqlite", "no-secret", "unparseable", "no-scheme"])
def test_no_secret_is_shown(url: str, expected: str) -> None:
    shown = shown_url(url)
    assert shown == expected
    assert SECRET not in shown
