"""The in-process Prometheus instruments: what this process did, counted as it does it.

The pipeline increments them (the worker, disbursement, the audit writer, plugin loading); ``GET /metrics``
(:mod:`payhub.http.metrics`) shows them beside the values read from the database. They live in :data:`REGISTRY`,
one per process, never in prometheus-client's global default registry, and start at zero with the process: a
process that does no pipeline work (``payhub serve``) shows only what it did itself (its audit entries).

The registry and its instruments are made, all at once, when one of them is first used (``metrics.STAGE_ITEMS``,
``metrics.REGISTRY``): a process that counts nothing, such as ``payhub run --once`` with nothing to do, does not
import prometheus-client. Made later, they are as they would have been: every instrument starts at zero.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY: CollectorRegistry
"""The in-process instruments of this process."""
RAIL_CALL_SECONDS: Histogram
PAYOUT_ATTEMPTS: Counter
PAYOUT_RETRIES: Counter
STAGE_ITEMS: Counter
AUDIT_ENTRIES: Counter
PLUGIN_FAILURES: Counter
PAYOUTS_BLOCKED: Gauge

_NAMES = frozenset({"REGISTRY", "RAIL_CALL_SECONDS", "PAYOUT_ATTEMPTS", "PAYOUT_RETRIES", "STAGE_ITEMS",
                    "AUDIT_ENTRIES", "PLUGIN_FAILURES", "PAYOUTS_BLOCKED"})
_MAKING = threading.Lock()

RAIL_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

def _make() -> None:
    """Make the registry and its instruments (see the module docstring)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry(auto_describe=True)
    made = {
        "RAIL_CALL_SECONDS": Histogram(
            "payhub_rail_call_seconds",
            "Duration of rail calls (send, lookup) made by this process, abandoned ones included.",
            ["rail", "call"], buckets=RAIL_CALL_BUCKETS, registry=registry),
        "PAYOUT_ATTEMPTS": Counter(
            "payhub_payout_attempts", "Payouts handed to a rail by this process: kind send (a send attempt) or lookup.",
            ["rail", "kind"], registry=registry),
        "PAYOUT_RETRIES": Counter(
            "payhub_payout_retries",
            "Send attempts of this process that were not a payout's first (same idempotency key).",
            ["rail"], registry=registry),
        "STAGE_ITEMS": Counter(
            "payhub_stage_items", "Items the worker of this process moved through a stage (ingested, calculated, ...).",
            ["stage"], registry=registry),
        "AUDIT_ENTRIES": Counter(
            "payhub_audit_entries", "Audit entries written by this process.", registry=registry),
        "PLUGIN_FAILURES": Counter(
            "payhub_plugin_failures",
            "Plugin failures in this process: reason load (failed to import, start or register), error (raised "
            "outside its contract) or timeout (call abandoned).",
            ["kind", "section", "reason"], registry=registry),
        "PAYOUTS_BLOCKED": Gauge(
            "payhub_payouts_blocked",
            "1 while a payhub_payouts_blocked hook gives a reason (or fails), so that no payout is sent; else 0. Set "
            "at each disbursement round and each /readyz of this process.", registry=registry),
    }
    globals().update(made)
    globals()["REGISTRY"] = registry  # last: its presence says all are made


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        with _MAKING:
            if "REGISTRY" not in globals():
                _make()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def plugin_failed(kind: str, section: str, reason: str) -> None:
    """Count one failure of the plugin of settings section ``section`` (``kind``: source, calculator, rail, hook)."""
    __getattr__("PLUGIN_FAILURES").labels(kind, section, reason).inc()


def set_payouts_blocked(blocked: bool) -> None:
    """Set ``payhub_payouts_blocked``. Nothing to do while the instruments are not made and it stays 0: it is made
    at 0."""
    if blocked or "REGISTRY" in globals():
        __getattr__("PAYOUTS_BLOCKED").set(1 if blocked else 0)
