"""The in-process Prometheus instruments: what this process did, counted as it does it.

The pipeline increments them (the worker, disbursement, the audit writer, plugin loading); ``GET /metrics``
(:mod:`payhub.http.metrics`) shows them beside the values read from the database. They live in :data:`REGISTRY`,
one per process, never in prometheus-client's global default registry, and start at zero with the process: a
process that does no pipeline work (``payhub serve``) shows only what it did itself (its audit entries).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
"""The in-process instruments of this process."""

RAIL_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

RAIL_CALL_SECONDS = Histogram(
    "payhub_rail_call_seconds", "Duration of rail calls (send, lookup) made by this process, abandoned ones included.",
    ["rail", "call"], buckets=RAIL_CALL_BUCKETS, registry=REGISTRY)
PAYOUT_ATTEMPTS = Counter(
    "payhub_payout_attempts", "Payouts handed to a rail by this process: kind send (a send attempt) or lookup.",
    ["rail", "kind"], registry=REGISTRY)
PAYOUT_RETRIES = Counter(
    "payhub_payout_retries", "Send attempts of this process that were not a payout's first (same idempotency key).",
    ["rail"], registry=REGISTRY)
STAGE_ITEMS = Counter(
    "payhub_stage_items", "Items the worker of this process moved through a stage (ingested, calculated, ...).",
    ["stage"], registry=REGISTRY)
AUDIT_ENTRIES = Counter(
    "payhub_audit_entries", "Audit entries written by this process.", registry=REGISTRY)
PLUGIN_FAILURES = Counter(
    "payhub_plugin_failures",
    "Plugin failures in this process: reason load (failed to import, start or register), error (raised outside "
    "its contract) or timeout (call abandoned).",
    ["kind", "section", "reason"], registry=REGISTRY)

PAYOUTS_BLOCKED = Gauge(
    "payhub_payouts_blocked",
    "1 while a payhub_payouts_blocked hook gives a reason (or fails), so that no payout is sent; else 0. Set at each "
    "disbursement round and each /readyz of this process.", registry=REGISTRY)


def plugin_failed(kind: str, section: str, reason: str) -> None:
    """Count one failure of the plugin of settings section ``section`` (``kind``: source, calculator, rail, hook)."""
    PLUGIN_FAILURES.labels(kind, section, reason).inc()
