"""Bounded integer parameters of the CLI: a number the database cannot hold is a usage error (exit 2)."""

from __future__ import annotations

import click

MAX_ID = 2**63 - 1
"""The largest row id (ids are 64-bit integers in the database)."""

MAX_LIMIT = 1_000_000
"""The largest ``--limit``."""

ROW_ID = click.IntRange(1, MAX_ID)
"""A row id: an event, reward or payout number."""

LIMIT = click.IntRange(1, MAX_LIMIT)
"""How many rows a listing shows at most."""
