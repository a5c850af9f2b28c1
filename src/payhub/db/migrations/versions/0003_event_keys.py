"""event keys: unambiguous encoding of their parts, normalised identities

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-12 09:00:00.000000

An event key was ``source:object_type:object_id:transition`` joined raw, so ``record`` + ``a:b`` and ``record:a`` +
``b`` made the same key. From this revision ``%`` and ``:`` are percent-encoded in the first three parts (the
transition, last, stays as it is), and the identity parts are normalised (Unicode NFC; BOM and zero-width characters
removed; outer white space stripped). Ordinary keys, Salesforce and HubSpot ones included, are unchanged.

The upgrade rewrites the stored keys (and identity columns) that the new rules change. Two stored events whose keys
become equal (the same CRM id once with an invisible character) were already two events: the lowest id takes the
key and the other keeps a key that ingest can never produce, ``%superseded:<event id>:<sha256 of its old key>``;
likewise for a key that would exceed the column. The encoding here is a frozen copy of
:mod:`payhub.pipeline.identity` at this revision, so that later changes there do not change this migration.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

KEY_LENGTH = 600
PAGE = 5000
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"))
_MALFORMED = re.compile(r"malformed:[0-9a-f]{64}")

events = sa.table(
    "events",
    sa.column("id", sa.Integer), sa.column("key", sa.String), sa.column("source", sa.String),
    sa.column("object_type", sa.String), sa.column("object_id", sa.String), sa.column("transition", sa.String),
)


def _encode(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A")


def _normal(value: str) -> str:
    return unicodedata.normalize("NFC", value).translate(_INVISIBLE).strip()


def _old_key(source: str, object_type: str, object_id: str, transition: str) -> str:
    return f"{source}:{object_type}:{object_id}:{transition}"


def _new_key(source: str, object_type: str, object_id: str, transition: str) -> str:
    return f"{_encode(source)}:{_encode(object_type)}:{_encode(object_id)}:{transition}"


def _rows() -> Iterator[Any]:
    """Every event, in id order, a page at a time."""
    bind = op.get_bind()
    last = 0
    while True:
        page = bind.execute(sa.select(events).where(events.c.id > last).order_by(events.c.id).limit(PAGE)).all()
        yield from page
        if len(page) < PAGE:
            return
        last = page[-1].id


def _upgrade_target(row: Any) -> tuple[str, dict[str, str]] | None:
    """The new key and identity columns of ``row``, or None when it keeps both."""
    parts = (row.source, row.object_type, row.object_id, row.transition)
    if row.key == _old_key(*parts):
        normal = [_normal(part) for part in parts[1:]]
        if not all(normal):  # an identity part that was only invisible characters: leave the row as it was
            return None
        columns = {name: value for name, value, old in zip(("object_type", "object_id", "transition"), normal,
                                                            parts[1:], strict=True) if value != old}
        key = _new_key(row.source, *normal)
    elif row.key.startswith(f"{row.source}:") and _MALFORMED.fullmatch(row.key[len(row.source) + 1:]):
        columns, key = {}, f"{_encode(row.source)}:{row.key[len(row.source) + 1:]}"
    else:
        return None
    return (key, columns) if key != row.key or columns else None


def _downgrade_target(row: Any) -> tuple[str, dict[str, str]] | None:
    parts = (row.source, row.object_type, row.object_id, row.transition)
    if row.key == _new_key(*parts):
        key = _old_key(*parts)
    elif row.key.startswith(f"{_encode(row.source)}:") and _MALFORMED.fullmatch(
            row.key[len(_encode(row.source)) + 1:]):
        key = f"{row.source}:{row.key[len(_encode(row.source)) + 1:]}"
    else:
        return None
    return (key, {}) if key != row.key else None


def _rewrite(target: Callable[[Any], tuple[str, dict[str, str]] | None], *, supersede: bool) -> None:
    """Give each event its target key; a key that is taken (or too long) leaves the row superseded or as it was."""
    kept: set[str] = set()
    changes: list[tuple[int, str, str, dict[str, str]]] = []
    for row in _rows():
        found = target(row)
        if found is None:
            kept.add(row.key)
        else:
            changes.append((row.id, row.key, *found))
    # Upgrading, a row that moves frees its old key; downgrading, a row may stay, so no current key is given away.
    taken = kept if supersede else kept | {old for _id, old, _key, _columns in changes}
    final: list[tuple[int, str, dict[str, str]]] = []
    for event_id, old, key, columns in changes:  # in id order: the oldest event takes a contested key
        if key in taken or len(key) > KEY_LENGTH:
            if not supersede:
                log.warning("event %s keeps its key %r: %r is taken", event_id, old, key)
                continue
            replacement = f"%superseded:{event_id}:{hashlib.sha256(old.encode()).hexdigest()}"
            log.warning("event %s: key %r would be %r, which is taken or too long; it becomes %r",
                        event_id, old, key, replacement)
            key = replacement
        taken.add(key)
        final.append((event_id, key, columns))
    bind = op.get_bind()
    # two passes, so that a key freed by one row and taken by another never clashes mid-way
    for event_id, _key, _columns in final:
        bind.execute(sa.update(events).where(events.c.id == event_id).values(key=f"%migrating:{event_id}"))
    for event_id, key, columns in final:
        bind.execute(sa.update(events).where(events.c.id == event_id).values(key=key, **columns))


def upgrade() -> None:
    _rewrite(_upgrade_target, supersede=True)


def downgrade() -> None:
    """Keys go back to the raw joining where that is still unique; identity normalisation is not undone."""
    _rewrite(_downgrade_target, supersede=False)
