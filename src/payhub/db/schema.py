"""The database schema. The state columns are the work list: each stage reads rows in one state and moves them on.

Amounts of rewards and payouts are integer minor units of their currency (see :mod:`payhub.money`); event amounts
are the exact decimal text the source sent. Times are aware UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

from payhub.states import (
    CLAIMABLE_PAYOUT_WHERE,
    AttemptKind,
    AttemptOutcome,
    CalculationStatus,
    EventStatus,
    HoldCode,
    PayoutStatus,
    RewardStatus,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


def one_of(column: str, enum: type[StrEnum]) -> CheckConstraint:
    """A CHECK that ``column`` holds one of ``enum``'s values (or NULL), named ``ck_<table>_<column>``."""
    listed = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({listed})", name=column)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no offset, so it is restored on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use payhub.clock.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@lru_cache(maxsize=8)
def bind_time(dialect: Any) -> Callable[[datetime | None], Any]:
    """The function that turns an aware datetime into what the driver receives for a :class:`UTCDateTime` column on
    ``dialect``, exactly as SQLAlchemy statements bind it (text on SQLite): for statements run at the driver level."""
    processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    return processor if processor is not None else (lambda value: value)


@lru_cache(maxsize=8)
def read_time(dialect: Any) -> Callable[[Any], datetime | None]:
    """The function that turns what the driver returns for a :class:`UTCDateTime` column on ``dialect`` into an aware
    UTC datetime, exactly as SQLAlchemy statements read it: for statements run at the driver level."""
    processor = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    return processor if processor is not None else (lambda value: value)


payees = Table(
    "payees",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("name", String(400), nullable=False),
    Column("country", String(2)),
    Column("currency", String(3)),
    Column("email", String(400)),
    Column("rail", String(100)),
    Column("min_payout", String(60)),  # exact decimal text, in the payee's currency
    Column("details", Text, nullable=False, default="{}"),  # JSON object of payout details
    Column("fingerprint", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("aliases", Text, nullable=False, server_default="[]"),  # JSON list of other names (screened too)
    Column("flags", Text, nullable=False, server_default="[]"),  # JSON list: government_official, hcp, custom flags
    Column("tax_form", String(10)),  # a TaxForm: W-9, W-8BEN, W-8BEN-E; NULL when none is on file
    Column("form_signed_on", Date),
    Column("tin_kind", String(20)),  # what the TIN was read as: ssn, ein, itin, vat, other
    Column("tin_status", String(20)),  # a TinStatus: valid, invalid, missing
    Column("tin_sealed", Text),  # the TIN, sealed with the payee's personal key (payhub.compliance.personal)
    Column("erased_at", UTCDateTime),  # set by `payhub payees erase`: personal values are gone
)

sources = Table(
    "sources",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("cursor", Text),
    Column("status", String(20), nullable=False, default="ok"),  # ok | failed
    Column("reason", Text),
    Column("last_polled_at", UTCDateTime),
    Column("lease_owner", String(64)),
    Column("lease_token", String(32)),  # fencing token of the current claim (see payhub.store.leases)
    Column("lease_until", UTCDateTime),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("key", String(600), nullable=False, unique=True),
    Column("source", String(200), nullable=False),
    Column("object_type", String(200), nullable=False),
    Column("object_id", String(200), nullable=False),
    Column("transition", String(100), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("occurred_at", UTCDateTime),
    Column("payee_id", String(200)),
    Column("partner_id", String(200)),
    Column("amount", String(60)),  # exact decimal text
    Column("currency", String(3)),
    Column("attributes", Text, nullable=False, default="{}"),
    Column("status", String(20), nullable=False),  # an EventStatus
    Column("reason", Text),
    Column("raw", Text),
    Column("ingested_at", UTCDateTime, nullable=False),
    Column("calculated_at", UTCDateTime),
    Column("waits_for_payee", String(200)),  # a waiting event whose payee must be in the registry first
    Index("ix_events_status_id", "status", "id"),
    Index("ix_events_status_occurred", "status", "occurred_at"),  # future-dated events wait for their date
    Index("ix_events_object", "source", "object_type", "object_id"),
    Index("ix_events_partner", "partner_id", "occurred_at"),
    Index("ix_events_source_id", "source", "id"),  # listings by source, paged by id
    Index("ix_events_object_id", "object_id"),  # the console's search by CRM object id alone
    one_of("status", EventStatus),
)

program_versions = Table(
    "program_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("program", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("calculator", String(200), nullable=False),
    Column("params", Text, nullable=False),  # canonical JSON of the program's section
    Column("fingerprint", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("program", "fingerprint"),
    UniqueConstraint("program", "version"),
)

calculations = Table(
    "calculations",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", ForeignKey("events.id"), nullable=False),
    Column("program", String(200), nullable=False),
    Column("program_version_id", ForeignKey("program_versions.id"), nullable=False),
    Column("status", String(20), nullable=False),  # a CalculationStatus
    Column("reason", Text),
    Column("calculated_at", UTCDateTime, nullable=False),
    UniqueConstraint("program", "event_id"),  # invariant 2: calculated once per (program, event)
    Index("ix_calculations_event", "event_id"),
    Index("ix_calculations_status_id", "status", "id"),  # what paid nothing, paged by id
    one_of("status", CalculationStatus),
)

rewards = Table(
    "rewards",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", ForeignKey("events.id"), nullable=False),
    Column("program", String(200), nullable=False),
    Column("payee_id", String(200), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("details", Text, nullable=False, default="{}"),
    Column("status", String(20), nullable=False),  # a RewardStatus
    Column("hold_code", String(40)),  # a HoldCode, for a held reward
    Column("hold_reason", Text),
    Column("approvals_needed", Integer, nullable=False, default=0),
    Column("budget_key", String(400)),  # the budget pool the reward draws on: program:period[:partner]
    Column("fx_mode", String(10)),  # convert to the payee's currency at the rate of the "event" or "payout" date
    Column("payout_id", ForeignKey("payouts.id")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("kind", String(20), nullable=False, server_default="reward"),  # a RewardKind: reward, withholding
    # the calculation that produced the reward: one per (program, event)
    ForeignKeyConstraint(["program", "event_id"], ["calculations.program", "calculations.event_id"],
                         name="fk_rewards_calculation"),
    Index("ix_rewards_status_payee", "status", "payee_id"),
    Index("ix_rewards_event", "event_id"),
    Index("ix_rewards_payout", "payout_id"),
    Index("ix_rewards_budget", "budget_key"),
    # listings by status, payee or program, paged by id
    Index("ix_rewards_status_id", "status", "id"),
    Index("ix_rewards_payee_id", "payee_id", "id"),  # and a payee's sums in a program (payhub.db.queries.unindexed)
    Index("ix_rewards_program_id", "program", "id"),
    one_of("status", RewardStatus),
    one_of("hold_code", HoldCode),
)

approvals = Table(
    "approvals",
    metadata,
    Column("reward_id", ForeignKey("rewards.id"), primary_key=True),
    Column("approver", String(200), primary_key=True),  # one approval per person
    Column("approved_at", UTCDateTime, nullable=False),
)

fund_entries = Table(
    "fund_entries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", ForeignKey("events.id"), nullable=False),
    Column("program", String(200), nullable=False),
    Column("holder_id", String(200), nullable=False),
    Column("unit", String(10), nullable=False),  # a currency code, or "points"
    Column("amount", String(60), nullable=False),  # exact decimal text; credits positive, spending negative
    Column("occurred_at", UTCDateTime, nullable=False),  # the event's time
    Column("expires_at", UTCDateTime),
    Column("description", Text, nullable=False, default=""),
    Column("details", Text, nullable=False, default="{}"),
    Column("created_at", UTCDateTime, nullable=False),
    ForeignKeyConstraint(["program", "event_id"], ["calculations.program", "calculations.event_id"],
                         name="fk_fund_entries_calculation"),
    Index("ix_fund_entries_holder", "program", "holder_id", "unit"),
)

# Running totals kept by triggers (revision 0010) in the statement that changes a reward or its event: the live
# rewards (not cancelled, not withholding lines) per program, currency, scope and UTC month ("YYYY-MM" of the event's
# occurred_at, "" without one); per is "payee", "partner" or "program" (scope_id "" for the program). Each total is
# spread over slots (a PostgreSQL transaction writes to its own, so writers never wait on each other): readers sum
# over the slots of a key.
reward_totals = Table(
    "reward_totals",
    metadata,
    Column("program", String(200), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("per", String(10), primary_key=True),
    Column("scope_id", String(200), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("slot", SmallInteger, primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),
    Index("ix_reward_totals_scope", "per", "scope_id", "currency", "month"),  # flag caps: payees across programs
)

# What each budget pool has given out (rewards not cancelled and not held for the budget), kept by triggers too,
# summed over its slots as reward_totals.
budget_totals = Table(
    "budget_totals",
    metadata,
    Column("budget_key", String(400), primary_key=True),
    Column("slot", SmallInteger, primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),
)

# Each fund's state after all its entries in time order (payhub.store.funds), written with the entries.
fund_states = Table(
    "fund_states",
    metadata,
    Column("program", String(200), primary_key=True),
    Column("holder_id", String(200), primary_key=True),
    Column("unit", String(10), primary_key=True),
    Column("last_entry_id", BigInteger),  # the entry applied last (in time order, ties by id); NULL: no state yet
    Column("state", Text),  # JSON: credits left (amount, expiry), overspent, latest time, credits per month
)

# The amounts of the events each program decided (rewarded or not eligible), per partner, currency, UTC month and
# event type, as exact decimal text (payhub.store.volumes), written with the calculations.
volume_totals = Table(
    "volume_totals",
    metadata,
    Column("program", String(200), primary_key=True),
    Column("partner_id", String(200), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("event_type", String(100), primary_key=True),
    Column("amount", Text, nullable=False),
)

payouts = Table(
    "payouts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("idempotency_key", String(100), nullable=False, unique=True),
    Column("payee_id", String(200), nullable=False),
    Column("rail", String(100), nullable=False),
    Column("route_reason", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("status", String(20), nullable=False),  # a PayoutStatus (payhub.states.PAYOUT_TRANSITIONS)
    Column("reason", Text),
    Column("provider_ref", String(200)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("released_by", String(200)),  # who released it from its last hold, shown only (the audit log decides)
    Column("lease_owner", String(64)),
    Column("lease_token", String(32)),  # fencing token of the current claim (see payhub.store.leases)
    Column("lease_until", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("checked_at", UTCDateTime),
    Column("hold_code", String(40)),  # a PayoutHold, for a held payout
    Column("first_sent_at", UTCDateTime),  # when it was first recorded sent or paid: its payment date (tax year)
    Index("ix_payouts_status_rail", "status", "rail"),
    # a rail's payouts to claim, by id: only those in a claimable status (on PostgreSQL: POSTGRESQL_INDEX_OPTIONS)
    Index("ix_payouts_claimable", "rail", "id", sqlite_where=text(CLAIMABLE_PAYOUT_WHERE)),
    Index("ix_payouts_status_rail_updated", "status", "rail", "updated_at"),  # paid within a rail's return window
    # listings by status, rail or payee, paged by id
    Index("ix_payouts_status_id", "status", "id"),
    Index("ix_payouts_rail_id", "rail", "id"),
    Index("ix_payouts_payee_id", "payee_id", "id"),
    # the console's search by rail reference, and by a bank file's name: the prefix of its lines' references
    # (LIKE 'file:%' on PostgreSQL needs the pattern operator class whatever the database's collation: see
    # POSTGRESQL_INDEX_OPTIONS)
    Index("ix_payouts_provider_ref", "provider_ref"),
    one_of("status", PayoutStatus),
)

payout_items = Table(
    "payout_items",
    metadata,
    Column("payout_id", ForeignKey("payouts.id"), primary_key=True),
    Column("reward_id", ForeignKey("rewards.id"), primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),  # in the payout's currency
    Column("fx", Text),  # JSON of the conversion when the reward is in another currency: rate, source, date
    Index("ix_payout_items_reward", "reward_id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("payout_id", ForeignKey("payouts.id"), nullable=False),
    Column("kind", String(10), nullable=False),  # an AttemptKind
    Column("number", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("outcome", String(20)),  # an AttemptOutcome; NULL while the attempt runs
    Column("detail", Text),
    Index("ix_attempts_payout", "payout_id"),
    one_of("kind", AttemptKind),
    one_of("outcome", AttemptOutcome),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("at", String(32), nullable=False),  # canonical UTC text, hashed as stored
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("subject_type", String(50), nullable=False),
    Column("subject_id", String(600), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("origin", String(200), nullable=False),
    Column("detail", Text, nullable=False),  # canonical JSON
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_subject", "subject_type", "subject_id"),
    Index("ix_audit_at", "at"),
    Index("ix_audit_actor", "actor", "seq"),
    Index("ix_audit_action", "action", "seq"),
    Index("ix_audit_subject_seq", "subject_id", "seq"),  # by subject (type:id or a bare id), in chain order
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)


api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),  # auditor, operator, admin
    Column("token_hash", String(64), nullable=False, unique=True),  # SHA-256 hex of the token; the token is not kept
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("expires_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Column("last_used_at", UTCDateTime),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("source", String(100), primary_key=True),
    Column("delivery_id", String(200), primary_key=True),  # the sender's message id: a second delivery is refused
    Column("received_at", UTCDateTime, nullable=False),
    Index("ix_webhook_deliveries_received", "received_at"),
)

webhook_objects = Table(
    "webhook_objects",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(100), nullable=False),
    Column("object_id", String(500), nullable=False),  # an object a webhook named, read by the source's next fetch
    Column("received_at", UTCDateTime, nullable=False),
    UniqueConstraint("source", "object_id"),
)


# ------------------------------------------------------------------------------------------------- compliance

personal_keys = Table(
    "personal_keys",
    metadata,
    Column("subject", String(200), primary_key=True),  # a payee id
    Column("key", String(64), nullable=False),  # base64 of the AES-256 key; erasure deletes the row
    Column("created_at", UTCDateTime, nullable=False),
)

screening_lists = Table(
    "screening_lists",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),  # the list's name in the sanctions settings
    Column("format", String(40), nullable=False),
    Column("published_on", Date),  # the list's own date (or its files' modification date)
    Column("sha256", String(64), nullable=False),  # over the files as loaded
    Column("entries", Integer, nullable=False),
    Column("loaded_at", UTCDateTime, nullable=False),
    Column("loaded_by", String(200), nullable=False),
    Column("current", Boolean, nullable=False),  # the version screening uses; older ones are kept as evidence
    Column("data", LargeBinary, nullable=False),  # the parsed entries, gzipped JSON
    Index("ix_screening_lists_name_current", "name", "current"),
)

payee_screenings = Table(
    "payee_screenings",
    metadata,
    Column("payee_id", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False),  # of the names screened and the list versions used
    Column("status", String(20), nullable=False),  # clear | hit
    Column("detail", Text, nullable=False),  # JSON: lists, dates, matched entries and scores
    Column("screened_at", UTCDateTime, nullable=False),
)

release_requests = Table(
    "release_requests",
    metadata,
    Column("payout_id", ForeignKey("payouts.id"), primary_key=True),
    Column("operator", String(200), primary_key=True),  # the first of the two operators a screening release needs
    Column("justification", Text, nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
)

audit_cut = Table(
    "audit_cut",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: the latest retention cut
    Column("seq", BigInteger, nullable=False),  # entries up to and including seq were archived and deleted
    Column("hash", String(64), nullable=False),  # the hash of entry seq: entry seq+1 links to it
    Column("at", UTCDateTime, nullable=False),
    Column("archive", Text, nullable=False),  # the archive file's name
    Column("archive_sha256", String(64), nullable=False),
    Column("top_payout", BigInteger, nullable=False),  # highest payout id with archived entries (0: none)
    Column("top_reward", BigInteger, nullable=False),  # highest reward id with archived entries (0: none)
    Column("signature", Text, nullable=False),  # Ed25519 over the cut's canonical text (payhub.checkpoints key)
    Column("key_id", String(64), nullable=False),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 hex of the session cookie; the cookie is not kept
    Column("token_id", ForeignKey("api_tokens.id"), nullable=False),  # the token signed in with: its role applies
    Column("csrf", String(64), nullable=False),  # the session's CSRF token, sent back in every form
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),  # for the idle expiry
    Column("ended_at", UTCDateTime),  # signed out, or expired when next seen
    Column("ended_why", String(20)),  # signed_out, idle, too_old, token, replaced
    Column("notice", Text),  # the outcome of the last action, shown once on the next page
    Index("ix_console_sessions_token", "token_id"),
)

statement_deliveries = Table(
    "statement_deliveries",
    metadata,
    Column("payout_id", ForeignKey("payouts.id"), primary_key=True),  # one statement per payout
    Column("channel", String(10), nullable=False),  # smtp | outbox
    Column("status", String(10), nullable=False),  # delivered | failed | skipped
    Column("destination", String(400)),  # the address or the outbox file
    Column("sha256", String(64)),  # of the PDF delivered
    Column("attempts", Integer, nullable=False, default=0),
    Column("reason", Text),  # why it failed or was skipped
    Column("updated_at", UTCDateTime, nullable=False),
)

POSTGRESQL_INDEX_OPTIONS: dict[str, dict[str, Any]] = {
    "ix_payouts_provider_ref": {"ops": {"provider_ref": "varchar_pattern_ops"}},
    "ix_payouts_claimable": {"where": text(CLAIMABLE_PAYOUT_WHERE)},
}
"""PostgreSQL options of indexes (index name -> option -> value: ``ops``, the columns' operator classes; ``where``,
a partial index's condition), the indexes' ``postgresql_<option>``. They are set by :func:`use_postgresql_options`
(:func:`payhub.db.engine.make_engine` calls it for a PostgreSQL URL), not declared in the ``Index`` itself:
declaring a dialect's option makes SQLAlchemy import that dialect (all of ``sqlalchemy.dialects.postgresql`` and its
drivers' modules) when this module is imported, on SQLite too. The migrations create the indexes with them
(0009_console, 0011_settle_window)."""


def use_postgresql_options() -> None:
    """Give the indexes of :data:`POSTGRESQL_INDEX_OPTIONS` their PostgreSQL options (idempotent)."""
    for table in metadata.tables.values():
        for index in table.indexes:
            for option, value in POSTGRESQL_INDEX_OPTIONS.get(str(index.name), {}).items():
                if index.dialect_options["postgresql"][option] is not value:
                    index.dialect_options["postgresql"][option] = value
