"""A statement as HTML (its own Jinja2 template, autoescaped), as PDF (WeasyPrint) and as plain text (the mail's
text part).

The PDF is made offline: the URL fetcher refuses every URL (:class:`RefusingFetcher`), so nothing in a document,
hostile or not, makes WeasyPrint open a file or a connection; fonts come from the system's fontconfig. The same
statement gives the same bytes on the same machine (no creation date or random id is written), so a PDF's SHA-256
identifies what was delivered.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from payhub.clock import isoformat
from payhub.statements.content import Statement

if TYPE_CHECKING:
    from jinja2 import Environment

log = logging.getLogger(__name__)

KIND_LABELS = {"reward": "Reward", "clawback": "Clawback", "withholding": "Tax withheld"}


def when(value: Any) -> str:
    """An instant as ``2026-01-31 09:00 UTC`` ('' for None)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return isoformat(value)[:16].replace("T", " ") + " UTC"
    return str(value)


@functools.cache
def templates() -> Environment:
    """The statements' Jinja2 environment (autoescaped, strict), built on first use."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("payhub.statements", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when)
    env.globals.update(KIND_LABELS=KIND_LABELS)
    return env


def html(statement: Statement) -> str:
    """The statement as a self-contained HTML document (inline style, no external reference)."""
    return templates().get_template("statement.html").render(s=statement)


def _fetcher() -> Any:
    from weasyprint.urls import URLFetcher  # imported when a PDF is made: WeasyPrint is slow to import

    class RefusingFetcher(URLFetcher):  # type: ignore[misc]  # untyped base
        """Refuses every URL WeasyPrint asks for (images, style sheets, fonts), logging it."""

        def __init__(self) -> None:
            super().__init__(allowed_protocols=())

        def fetch(self, url: str, headers: Any = None) -> Any:
            log.warning("statement PDF: refused to fetch %r", url[:200])
            raise ValueError(f"statements fetch nothing: {url[:200]!r} refused")

    return RefusingFetcher()


def pdf(statement: Statement, document: str | None = None) -> bytes:
    """The statement as PDF (from ``document``, its :func:`html`, when already made)."""
    from weasyprint import HTML

    source = document if document is not None else html(statement)
    data: bytes = HTML(string=source, base_url=None, url_fetcher=_fetcher()).write_pdf()
    return data


def text(statement: Statement) -> str:
    """The statement as plain text (the mail's text part): the payout and one line per item."""
    s = statement
    out = [f"Payout statement {s.payout_id}", "",
           f"Payee: {s.payee_name} ({s.payee_id})",
           f"Status: {s.status}",
           f"Sent: {when(s.sent_at) or 'not sent yet'}",
           f"Paid: {when(s.paid_at) or 'not reported paid yet'}",
           f"Rail: {s.rail}",
           f"Provider reference: {s.provider_ref or 'none'}",
           f"Total: {s.total} {s.currency}", "", "Lines:"]
    for line in s.lines:
        label = "" if line.kind == "reward" else f"[{KIND_LABELS[line.kind]}] "
        fx = f" (from {line.fx.from_amount} {line.fx.from_currency} at {line.fx.rate})" if line.fx else ""
        out.append(f"- reward {line.reward_id}: {label}{line.program} {line.source} {line.object_type} "
                   f"{line.object_id}: {line.description} gross {line.gross} {line.gross_currency}{fx} = "
                   f"{line.amount} {s.currency}")
    out += ["", f"Rewards: {s.rewards} {s.currency}", f"Clawbacks netted: {s.clawbacks} {s.currency}",
            f"Tax withheld: {s.withholding} {s.currency}", f"Total paid: {s.total} {s.currency}",
            "", "The PDF attached is the statement with every detail (caps, clawbacks, FX)."]
    return "\n".join(out) + "\n"
