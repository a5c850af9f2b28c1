"""The payhub exception tree.

Plugins raise these; the core maps each to a state change (retry, quarantine, failure) and an audit entry.

    PayhubError
    ├── ConfigError               settings are invalid; start-up stops
    ├── SchemaOutOfDateError      the database needs `payhub db upgrade`
    ├── PluginError               a plugin failed to load, raised or hung
    │   └── PluginTimeout
    ├── InvalidRecord             one input record is malformed; it is quarantined
    ├── CalculationError          a calculator rejected an event for a program
    ├── SourceError               a source could not fetch
    │   ├── TransientSourceError  try again on the next poll
    │   └── PermanentSourceError  needs an admin (bad credentials, missing permission)
    └── RailError                 a rail could not disburse
        ├── RetryableRailError    nothing was accepted; the core retries with backoff
        ├── PermanentRailError    the rail refused; never retried
        └── UnknownOutcomeError   the request may have been accepted (timeout after sending);
                                  the core looks the payout up by its key before any new attempt
"""

from __future__ import annotations


class PayhubError(Exception):
    """Base of every error payhub raises on purpose."""


class ConfigError(PayhubError):
    """The settings are invalid. ``problems`` lists ``(key, message)`` pairs, keys dotted."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {msg}" if key else msg for key, msg in problems))


class SchemaOutOfDateError(PayhubError):
    """The database schema is not at the revision this payhub needs."""


class PluginError(PayhubError):
    """A plugin failed to load, raised, or did not answer in time."""


class PluginTimeout(PluginError):
    """A plugin call did not return within its timeout; the call is abandoned."""


class InvalidRecord(PayhubError):
    """One input record is malformed. The message is the quarantine reason shown to admins."""


class CalculationError(PayhubError):
    """A calculator could not produce rewards for an event under a program (the reason is recorded)."""


class SourceError(PayhubError):
    """A source could not fetch events."""


class TransientSourceError(SourceError):
    """A passing problem (network, 5xx, rate limit); the next poll tries again from the same cursor."""


class PermanentSourceError(SourceError):
    """A problem only an admin can fix (credentials, permissions, quota); the source stops until restarted."""


class RailError(PayhubError):
    """A rail could not disburse. ``reason`` is shown to admins and audited."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RetryableRailError(RailError):
    """The rail did not accept the request and says trying again may succeed."""


class PermanentRailError(RailError):
    """The rail refused the request; sending it again will not help."""


class UnknownOutcomeError(RailError):
    """The request may have reached the rail (timeout, dropped connection after sending)."""
