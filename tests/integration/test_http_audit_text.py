"""Paths and refusals holding characters a database text column refuses (NUL, lone surrogates) are still audited,
escaped, and answered, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from console_client import Console
from sqlalchemy import select

from payhub.db.schema import audit_log


@pytest.mark.parametrize("path", ["/api/v1/payouts/1%00", "/console/payouts/1%00", "/api/v1/explain/%ED%B0%80",
                                  "/console/search?q=a%00b"])
def test_nul_and_invalid_utf8_in_a_request_are_audited_escaped(make_runtime: Any, path: str) -> None:
    rt = make_runtime("")
    console = Console(rt)
    answer = console.get(path)
    assert answer.status_code != 503 and answer.status_code < 500
    with rt.engine.connect() as conn:
        last = conn.execute(select(audit_log.c.subject_id, audit_log.c.detail)
                            .order_by(audit_log.c.seq.desc())).first()
    assert last is not None and "\x00" not in last.subject_id
    assert last.subject_id.startswith(path.split("?")[0].split("%")[0])
