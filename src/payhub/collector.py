"""Python's cyclic garbage collector: paused while start-up makes its long-lived objects (:func:`paused`), and set for
work in batches (:func:`tune_for_batches`): the pipeline's (set by the worker) and the audit commands' chunks of rows.

A batch holds tens of thousands of container objects (rows, events, reward lines, audit entries) until it commits;
nearly all are freed by reference counting, not by the collector. With the interpreter's default threshold of 700
allocations the collector walked each batch's objects dozens of times while the batch was built, promoted them to
older generations, and so set off full passes over the whole heap (about 60 ms each), finding almost nothing to
free: about 1.0 of the 7.4 CPU seconds of 20,000 events through the pipeline (1.7 of 11.6 for the program mix), and
0.6 of 4.4 CPU seconds of ``audit verify`` over 300,000 entries.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def paused() -> Iterator[None]:
    """Run the body without the cyclic garbage collector, then hand what it made to the collector's oldest
    generation.

    Importing and start-up make many long-lived objects and next to no garbage: the collector would walk them again
    and again while they are made, and, once it runs again, once more in its young generations (before this, those
    two passes took about 60 ms of ``run --once``'s CPU time, finding nothing). ``gc.freeze()`` then
    ``gc.unfreeze()`` moves every tracked object into the oldest generation, which only the collector's full passes
    walk: nothing stays frozen, and garbage made in the body (a failed plugin's traceback frames) is freed by the next
    full pass. The collector is enabled afterwards as it was before, whatever the body did."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()
