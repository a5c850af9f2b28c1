"""Python's cyclic garbage collector, set for work in batches: the pipeline's (set by the worker) and the audit
commands' chunks of rows.

A batch holds tens of thousands of container objects (rows, events, reward lines, audit entries) until it commits;
nearly all are freed by reference counting, not by the collector. With the interpreter's default threshold of 700
allocations the collector walked each batch's objects dozens of times while the batch was built, promoted them to
older generations, and so set off full passes over the whole heap (about 60 ms each), finding almost nothing to
free: about 1.0 of the 7.4 CPU seconds of 20,000 events through the pipeline (1.7 of 11.6 for the program mix), and
0.6 of 4.4 CPU seconds of ``audit verify`` over 300,000 entries.
"""

from __future__ import annotations

import gc

BATCH_THRESHOLD = 50_000
"""Net allocations of container objects between two passes over the youngest generation during pipeline work: a
batch's objects are freed before the collector looks at them. Cyclic garbage waits at most this many allocations."""


def tune_for_batches() -> None:
    """Raise the youngest generation's threshold to :data:`BATCH_THRESHOLD` for this process (the older generations'
    thresholds are kept). A threshold already higher, or 0 (the collector switched off by ``gc.set_threshold(0)``),
    is left as it is."""
    young, *older = gc.get_threshold()
    if 0 < young < BATCH_THRESHOLD:
        gc.set_threshold(BATCH_THRESHOLD, *older)
