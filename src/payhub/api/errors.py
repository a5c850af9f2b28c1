"""The error tree, re-exported from :mod:`payhub.errors` (the one implementation)::

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
        └── UnknownOutcomeError   the request may have been accepted (timeout after sending)
"""

from __future__ import annotations

from payhub.errors import (
    CalculationError,
    ConfigError,
    InvalidRecord,
    PayhubError,
    PermanentRailError,
    PermanentSourceError,
    PluginError,
    PluginTimeout,
    RailError,
    RetryableRailError,
    SchemaOutOfDateError,
    SourceError,
    TransientSourceError,
    UnknownOutcomeError,
)

__all__ = [
    "CalculationError",
    "ConfigError",
    "InvalidRecord",
    "PayhubError",
    "PermanentRailError",
    "PermanentSourceError",
    "PluginError",
    "PluginTimeout",
    "RailError",
    "RetryableRailError",
    "SchemaOutOfDateError",
    "SourceError",
    "TransientSourceError",
    "UnknownOutcomeError",
]
