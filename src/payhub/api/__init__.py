"""The public API of payhub: everything a plugin may use, and nothing else.

Plugins import from ``payhub.api`` (or one of its submodules), :mod:`payhub.hookspecs` and, in their tests,
:mod:`payhub.testing`; every other ``payhub`` module is internal and may change in any release. The names are
grouped in submodules, all re-exported here:

* :mod:`payhub.api.versions`    ``API_VERSION`` and the deprecation warning
* :mod:`payhub.api.settings`    settings models and their field types (paths, amounts, currencies, countries, URLs)
* :mod:`payhub.api.sources`     ``Source`` and its records and webhook types
* :mod:`payhub.api.calculators` ``Calculator``, ``Event``, ``RewardLine``, ``FundMovement``, ``History``
* :mod:`payhub.api.rails`       ``Rail``, ``PayoutInstruction``, ``Payee``, ``RailResult``, ``RailCapabilities``
* :mod:`payhub.api.hooks`       ``hookimpl`` and the values hooks return
* :mod:`payhub.api.errors`      the error tree
* :mod:`payhub.api.money`       currencies, minor units and the one rounding rule
* :mod:`payhub.api.clock`       the clock (aware UTC)
* :mod:`payhub.api.states`      the named states of events, rewards and payouts
* :mod:`payhub.api.files`       private files for plugins that write them

A plugin is an ordinary pip package that registers a class in one of the entry-point groups

* ``payhub.sources``     -> a :class:`Source` subclass
* ``payhub.calculators`` -> a :class:`Calculator` subclass
* ``payhub.rails``       -> a :class:`Rail` subclass
* ``payhub.hooks``       -> an object or module with ``@hookimpl`` functions (see :mod:`payhub.hookspecs`)

and is enabled by naming it in the settings file. Each class declares a pydantic ``settings_model`` (sources, rails)
or ``params_model`` (calculators); the core validates the plugin's settings section against it at start-up.

Contracts are synchronous and batch-shaped. The core owns threads, transactions, retries and the audit log;
a plugin only talks to its system. Anything a plugin raises other than the errors of :mod:`payhub.api.errors` is
treated as a bug in that plugin and isolated to its own work: a source's fetch is narrowed down to the record that
sets it off (the records before it are stored) and the error is recorded and retried at the next poll, a calculation
is recorded as failed, and a rail call that raised has an unknown outcome (looked up before any new attempt). The
rest of payhub goes on. Calls that run longer than their timeout are abandoned: transient for a source, unknown for
a rail.
"""

from __future__ import annotations

from payhub.api.calculators import (
    Calculator,
    Event,
    FundMovement,
    History,
    NotEligible,
    RewardLine,
)
from payhub.api.clock import (
    isoformat,
    parse_instant,
    utcnow,
)
from payhub.api.errors import (
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
from payhub.api.files import (
    prepare_sqlite_file,
    private_file_mode,
    private_mkstemp,
)
from payhub.api.hooks import (
    FxRate,
    SanctionsEntry,
    SanctionsList,
    ScreenDecision,
    hookimpl,
)
from payhub.api.money import (
    ROUNDING,
    check_currency,
    format_money,
    from_minor,
    minor_units,
    parse_amount,
    quantize,
    split,
    to_minor,
)
from payhub.api.rails import (
    Outcome,
    Payee,
    PayoutInstruction,
    Rail,
    RailCapabilities,
    RailResult,
)
from payhub.api.settings import (
    MAX_AMOUNT,
    Amount,
    ConfigPath,
    Country,
    Currency,
    FileNamePart,
    NoSettings,
    PluginSettings,
    Url,
)
from payhub.api.sources import (
    FetchResult,
    Source,
    SourceRecord,
    WebhookRefused,
    WebhookRequest,
    WebhookResult,
)
from payhub.api.states import (
    EventStatus,
    HoldCode,
    PayoutStatus,
    RewardStatus,
)
from payhub.api.versions import (
    API_VERSION,
    PayhubDeprecationWarning,
)

__all__ = [
    "API_VERSION",
    "Amount",
    "CalculationError",
    "Calculator",
    "ConfigError",
    "ConfigPath",
    "Country",
    "Currency",
    "Event",
    "EventStatus",
    "FetchResult",
    "FileNamePart",
    "FundMovement",
    "FxRate",
    "History",
    "HoldCode",
    "InvalidRecord",
    "MAX_AMOUNT",
    "NoSettings",
    "NotEligible",
    "Outcome",
    "Payee",
    "PayhubDeprecationWarning",
    "PayhubError",
    "PayoutInstruction",
    "PayoutStatus",
    "PermanentRailError",
    "PermanentSourceError",
    "PluginError",
    "PluginSettings",
    "PluginTimeout",
    "ROUNDING",
    "Rail",
    "RailCapabilities",
    "RailError",
    "RailResult",
    "RetryableRailError",
    "RewardLine",
    "RewardStatus",
    "SanctionsEntry",
    "SanctionsList",
    "SchemaOutOfDateError",
    "ScreenDecision",
    "Source",
    "SourceError",
    "SourceRecord",
    "TransientSourceError",
    "UnknownOutcomeError",
    "Url",
    "WebhookRefused",
    "WebhookRequest",
    "WebhookResult",
    "check_currency",
    "format_money",
    "from_minor",
    "hookimpl",
    "isoformat",
    "minor_units",
    "parse_amount",
    "parse_instant",
    "prepare_sqlite_file",
    "private_file_mode",
    "private_mkstemp",
    "quantize",
    "split",
    "to_minor",
    "utcnow",
]
