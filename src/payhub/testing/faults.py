"""The fault vocabulary shared by the kit's fake rail, its fault-injecting HTTP provider and the contract suites.

Each planned fault is consumed by one call (a send, or a lookup for ``lookup_fails``), in the order planned.

:data:`Fault` is the base vocabulary every fault controller is expected to know. :data:`ExtraFault` names faults a
controller simulates only when its ``supported`` lists them (the kit's
:class:`~payhub.testing.provider.FaultProvider` does); the contract checks that need one skip otherwise.
"""

from __future__ import annotations

from typing import Literal, get_args

Fault = Literal[
    "retryable",  # refused before anything was accepted; safe to send again (HTTP 503)
    "permanent",  # refused for good for the whole batch (HTTP 400/403)
    "reject",  # answered, each payout refused (invalid beneficiary)
    "timeout_after_accept",  # accepted, then the answer was lost (read timeout)
    "timeout_before_accept",  # no answer and nothing accepted (connect or read timeout)
    "duplicate",  # accepted, every result answered twice plus one for a key never sent
    "hang",  # blocks until released, then accepts
    "lookup_fails",  # the next lookup cannot answer (HTTP 503)
]
FAULTS: tuple[Fault, ...] = get_args(Fault)
"""Every fault of the base vocabulary, in the order above."""

SEND_FAULTS: tuple[Fault, ...] = tuple(f for f in FAULTS if f != "lookup_fails")
"""The faults a send consumes."""

ExtraFault = Literal[
    "error_after_accept",  # the next send is accepted, then answered HTTP 500 (the outcome is unknown)
    "lookup_timeout",  # the next lookup is not answered within the client's read timeout
    "unreachable",  # the provider refuses every connection (it stops listening) until release()
]
EXTRA_FAULTS: tuple[ExtraFault, ...] = get_args(ExtraFault)
"""The faults beyond the base vocabulary, in the order above; a controller opts in by listing them in
``supported``."""
