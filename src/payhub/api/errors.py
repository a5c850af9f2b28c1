"""The error tree, re-exported from :mod:`payhub.errors`, whose docstring draws it: the one implementation."""

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
