"""The ``sanctions`` hook plugin: payees and payouts screened against the sanctions lists stored in payhub's
database (docs/compliance.md#sanctions-screening).

* ``payhub_screen_payout``: before a payout's first send, the payee's name and aliases are screened; a hit denies
  it with a reason naming each list, its date, the matched entry (id and name) and the score, and payhub holds it.
* ``payhub_screen_payee``: the same check when the payees file adds or changes a payee.
* ``payhub_payouts_blocked``: a configured list never loaded, a current list without entries, one dated in the
  future, or one whose date and last confirmation are more than ``max_list_age_days`` ago, stops every send until
  ``payhub screening refresh`` loads (or confirms) a fresh one. Only the lists configured, or given by a provider
  plugin, count (:meth:`Screener.lists`).

A denial's reason is built from the list's side only (:func:`describe`: the list, its date, the entry's id and
name, the list's alias that matched, the score): the payee's own name and aliases are never written into it.

The lists come from the database (``payhub screening refresh`` stores them), so every replica and the command line
screen against the same versions. payhub gives the plugin its database URL through the settings' validation
context (:class:`~payhub.compliance.sanctions.config.SanctionsSettings.database_url`); without one, the plugin
fails to start, and a failed hook plugin stops all sends. Any error reading the lists denies (fails closed).
"""

from __future__ import annotations

import threading
import weakref

from sqlalchemy import Engine

from payhub.api import Payee, PayoutInstruction, ScreenDecision, hookimpl
from payhub.clock import utcnow
from payhub.compliance.sanctions.config import SanctionsSettings
from payhub.compliance.sanctions.matcher import Hit
from payhub.compliance.sanctions.screener import NoListsLoaded, Screener
from payhub.db.engine import make_engine
from payhub.errors import ConfigError


class Sanctions:
    """Sanctions screening against the lists in payhub's database."""

    settings_model = SanctionsSettings
    reasons_quote_list_data_only = True
    """Its denial reasons quote list entries only (:func:`describe`), never the payee's values: stored unsealed
    (:data:`payhub.compliance.sanctions.payee_screening.LIST_DATA_ONLY`)."""

    def __init__(self, settings: SanctionsSettings) -> None:
        if settings.database_url is None:
            raise ConfigError([("database.url", "the sanctions plugin reads its lists from payhub's database, and "
                                                "none was given to it")])
        self.settings = settings
        self._url = settings.database_url
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._screener: Screener | None = None

    @property
    def screener(self) -> Screener:
        """The screener on payhub's database (its engine made on first use, disposed with the plugin)."""
        with self._lock:
            if self._screener is None:
                engine = make_engine(self._url)
                weakref.finalize(self, engine.dispose)
                self._engine, self._screener = engine, Screener(engine, self.settings)
            return self._screener

    def decide(self, names: tuple[str, ...], country: str | None) -> ScreenDecision | None:
        """None when no listed entry matches; a denial naming the hits otherwise, or why screening failed."""
        try:
            hits = self.screener.screen(names, country)
        except NoListsLoaded as exc:
            return ScreenDecision(False, f"sanctions screening: {exc}")
        except Exception as exc:  # noqa: BLE001 - fail closed: the payee waits until screening works
            return ScreenDecision(False, f"sanctions screening failed: {type(exc).__name__}: {exc}")
        if not hits:
            return None
        return ScreenDecision(False, describe(hits, self.settings.max_hits_shown))

    @hookimpl
    def payhub_screen_payout(self, payout: PayoutInstruction) -> ScreenDecision | None:
        payee = payout.payee
        return self.decide((payee.name, *payee.aliases), payee.country)

    @hookimpl
    def payhub_screen_payee(self, payee: Payee) -> ScreenDecision | None:
        return self.decide((payee.name, *payee.aliases), payee.country)

    @hookimpl
    def payhub_payouts_blocked(self) -> str | None:
        try:
            return self.screener.blocked(utcnow().date())
        except Exception as exc:  # noqa: BLE001 - fail closed: no send while the lists cannot be read
            return f"sanctions lists cannot be read: {type(exc).__name__}: {exc}"


def describe(hits: list[Hit], shown: int) -> str:
    """A denial reason: the number of hits and the best ``shown`` of them (list, date, entry, score); list data
    only, never a value of the payee's."""
    more = f"; and {len(hits) - shown} more" if len(hits) > shown else ""
    return (f"sanctions: possible match on {len(hits)} listed "
            f"{'entry' if len(hits) == 1 else 'entries'}: " + "; ".join(h.describe() for h in hits[:shown]) + more)
