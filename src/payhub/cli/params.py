"""Checked parameters of the CLI: a number the database cannot hold, or an actor name that would not print as
itself, is a usage error (exit 2)."""

from __future__ import annotations

import unicodedata
from typing import Any

import click

from payhub.errors import InvalidRecord
from payhub.pipeline.identity import normalise_id

MAX_ID = 2**63 - 1
"""The largest row id (ids are 64-bit integers in the database)."""

MAX_LIMIT = 1_000_000
"""The largest ``--limit``."""

ROW_ID = click.IntRange(1, MAX_ID)
"""A row id: an event, reward or payout number."""

LIMIT = click.IntRange(1, MAX_LIMIT)
"""How many rows a listing shows at most."""


def row_id(text: str) -> int | None:
    """``text`` as a row id (ASCII digits, 1 to :data:`MAX_ID`), or None."""
    if not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


RESERVED_ACTOR_PREFIXES = ("token:", "webhook:")
"""Actors the HTTP face signs with: an ``--actor`` may not take them, so a command line cannot sign as a token."""


class Actor(click.ParamType[str]):
    """A name for the audit log, under the rule for ids (:func:`payhub.pipeline.identity.normalise_id`): returned in
    NFC; refused when empty, with white space around it, or holding a control, format (bidi, zero-width) or
    separator character, so that two actors that print the same are the same actor."""

    name = "TEXT"

    def __init__(self, *, signing: bool = False) -> None:
        self.signing = signing  # the name entries are signed with: the HTTP face's prefixes are refused

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            actor = normalise_id(text, "the name")
        except InvalidRecord as exc:
            self.fail(str(exc), param, ctx)
        if actor != unicodedata.normalize("NFC", text):
            self.fail(f"the name {ascii(text)} has white space or invisible characters around or in it", param, ctx)
        if not actor:
            self.fail("the name is empty", param, ctx)
        if self.signing and actor.casefold().startswith(RESERVED_ACTOR_PREFIXES):
            self.fail(f"names starting with {' or '.join(RESERVED_ACTOR_PREFIXES)} are the HTTP face's (API tokens, "
                      "webhook senders); choose another", param, ctx)
        return actor


ACTOR = Actor()
"""An actor name to look for (``audit query --actor``)."""

SIGNING_ACTOR = Actor(signing=True)
"""The global ``--actor``: the name this command's audit entries are signed with."""
