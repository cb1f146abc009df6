"""Keeping CPython's cyclic GC off the big, long-lived image heap.

An image of 100k partitions is a million small objects that live long and are replaced
a few at a time. CPython's generational collector walks all of them in every full
collection (and, with larger young thresholds, in every young one): pauses of a second
and more that stall every reader. Images hold no reference cycles (reference counting
frees them), so walking them finds nothing.

The loader therefore *freezes* what is alive (``gc.freeze()``: the collector ignores
those objects from then on) once it has caught up, after each snapshot load, and again
whenever enough records were applied since the last time; each time right after a
collection of the young generations, so young garbage is not frozen. Full collections
then walk only what was allocated since, and nobody has to change the interpreter's
thresholds.

Frozen objects are still freed by reference counting; only a reference *cycle* that
was already in the old generation at a freeze waits for the next unfreeze. So every
``UNFREEZE_AFTER`` seconds the whole heap is unfrozen and collected once (one full
pause, at a known rhythm), which bounds how long an application's cyclic garbage can
linger.

Process-wide by nature (the collector is): several loaders share one schedule. Turn it
off with ``MetadataLoader(manage_gc=False)`` (or ``MetadataPipeline``), or globally
with :func:`set_gc_management`.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass

from broker._logging import get_logger

__all__ = [
    "GcStatistics",
    "gc_management",
    "gc_statistics",
    "set_gc_management",
]

logger = get_logger(__name__)

REFREEZE_RECORDS = 2_000
"""Records applied between two freezes (each freeze collects what was allocated since)."""
UNFREEZE_AFTER = 600.0
"""Seconds between two collections of the whole heap (unfreeze, collect, freeze)."""


@dataclass(frozen=True, slots=True)
class GcStatistics:
    """What the managed collection did in this process."""

    enabled: bool
    freezes: int
    full_collections: int
    """Collections of the whole heap (after an unfreeze)."""
    last_pause: float
    """Seconds the last freeze (or full collection) took."""
    longest_pause: float
    records_since_freeze: int


class _Schedule:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enabled = True
        self.records = 0
        self.freezes = 0
        self.full = 0
        self.last_pause = 0.0
        self.longest = 0.0
        self.last_full = time.monotonic()


_schedule = _Schedule()


def set_gc_management(enabled: bool) -> bool:
    """Turn managed collection on or off for the whole process; returns the previous
    setting. Turning it off unfreezes what was frozen."""
    with _schedule.lock:
        previous, _schedule.enabled = _schedule.enabled, enabled
    if previous and not enabled:
        gc.unfreeze()
    return previous


def gc_management() -> bool:
    """Whether loaders manage the collector (see the module docstring)."""
    return _schedule.enabled


def gc_statistics() -> GcStatistics:
    """Counters of the managed collection in this process."""
    s = _schedule
    return GcStatistics(s.enabled, s.freezes, s.full, s.last_pause, s.longest, s.records)


def freeze_now() -> None:
    """Collect the young generations, then freeze what is alive (and, every
    ``UNFREEZE_AFTER`` seconds, unfreeze and collect the whole heap first)."""
    s = _schedule
    with s.lock:
        if not s.enabled:
            return
        started = time.monotonic()
        full = started - s.last_full >= UNFREEZE_AFTER
        if full:
            gc.unfreeze()
            s.full += 1
            s.last_full = started
        # Young generations only: collecting the old one would walk the whole heap,
        # the very pause this avoids. Cyclic garbage already old is frozen with the
        # rest and freed at the next whole-heap collection.
        gc.collect(2 if full else 1)
        gc.freeze()
        pause = time.monotonic() - started
        s.freezes += 1
        s.records = 0
        s.last_pause = pause
        s.longest = max(s.longest, pause)
    logger.debug("gc_frozen", seconds=round(pause, 4), whole_heap=full)


def records_applied(count: int) -> None:
    """Count records applied into images; freeze once ``REFREEZE_RECORDS`` accumulated."""
    s = _schedule
    if not s.enabled:
        return
    with s.lock:
        s.records += count
        due = s.records >= REFREEZE_RECORDS
    if due:
        freeze_now()
