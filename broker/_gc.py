"""Keeping CPython's cyclic GC off the big, long-lived image heap.

Two ways, both here: the managed collection that loaders (and the file log's decode)
use by default, described below, and :func:`tune_gc`, thresholds an application may
choose for the whole process instead.

An image of 100k partitions is a million small objects that live long and are replaced
a few at a time. CPython's generational collector walks them: every young collection
walks the partitions, map nodes and records a delta just made (about 0.3 µs each, since
each walk touches what they point to across the heap), and every full collection walks
the whole image. That measured as more than half of replay's time, and as pauses of a
second and more that stall every reader. Images hold no reference cycles (reference
counting frees them), so walking them finds nothing.

The loader therefore *freezes* what it allocated (``gc.freeze()``: the collector ignores
those objects from then on) as it goes: after each batch it replays and after each image
it applies, with the collector paused during the apply itself. A freeze without a
collection moves a few list links, whatever the heap's size. Where a collection is due
anyway (once caught up, after a snapshot load) the young generations are collected
first.

Frozen objects are still freed by reference counting; only reference *cycles* wait.
Young collections still run between freezes (an application that allocates heavily
reaches the young threshold between two batches), so what a freeze catches of an
application's cyclic garbage is what became garbage since the last young collection.
That waits for the next collection of the whole heap (unfreeze, collect, freeze). One
runs once the heap (``sys.getallocatedblocks()``) doubled since the last one, or since
a loader caught up (``HEAP_GROWTH``; CPython's own rule for full collections, with a
wider margin), and at the latest every ``UNFREEZE_AFTER`` seconds. So a steady heap is
walked every ten minutes, and a growing one as often as it doubles; a catch-up, which
grows the heap with the image, does not count.

Process-wide by nature (the collector is): several loaders share one schedule. Turn it
off with ``MetadataLoader(manage_gc=False)`` (or ``MetadataPipeline``), or globally
with :func:`set_gc_management`.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

from broker._logging import get_logger

__all__ = [
    "IMAGE_FRIENDLY_GC_THRESHOLDS",
    "GcStatistics",
    "collection_paused",
    "freeze_new",
    "freeze_now",
    "gc_management",
    "gc_statistics",
    "set_gc_management",
    "tune_gc",
]

logger = get_logger(__name__)

HEAP_GROWTH = 1.0
"""Growth of the heap (allocated blocks) since the last whole-heap collection that calls
for the next one."""
UNFREEZE_AFTER = 600.0
"""Seconds after which the whole heap is collected (unfreeze, collect, freeze) anyway."""
CHECK_EVERY = 0.1
"""Seconds between two looks at the heap's size (a look costs about 30 µs at 100k
partitions; a freeze, next to nothing)."""


@dataclass(frozen=True, slots=True)
class GcStatistics:
    """What the managed collection did in this process."""

    enabled: bool
    freezes: int
    full_collections: int
    """Collections of the whole heap (after an unfreeze)."""
    last_pause: float
    """Seconds the last collection before a freeze (young or whole heap) took."""
    longest_pause: float
    heap_blocks_at_full_collection: int
    """Allocated blocks after the last whole-heap collection (``sys.getallocatedblocks``)."""


class _Schedule:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enabled = True
        self.freezes = 0
        self.full = 0
        self.last_pause = 0.0
        self.longest = 0.0
        self.last_full = time.monotonic()
        self.last_check = self.last_full
        self.blocks_at_full = sys.getallocatedblocks()
        self.paused = 0
        self.reenable = False


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
    return GcStatistics(s.enabled, s.freezes, s.full, s.last_pause, s.longest, s.blocks_at_full)


def _collect_and_freeze(s: _Schedule, whole_heap: bool) -> None:
    """Collect (the young generations, or everything), then freeze; ``s.lock`` held."""
    started = time.monotonic()
    if whole_heap:
        gc.unfreeze()
    # Young generations only, unless the whole heap is due: collecting the old one
    # would walk the whole image, the very pause this avoids.
    gc.collect(2 if whole_heap else 1)
    gc.freeze()
    finished = time.monotonic()
    pause = finished - started
    if whole_heap:
        s.full += 1
        s.last_full = s.last_check = finished
        s.blocks_at_full = sys.getallocatedblocks()
    s.freezes += 1
    s.last_pause = pause
    s.longest = max(s.longest, pause)
    logger.debug("gc_frozen", seconds=round(pause, 4), whole_heap=whole_heap)


def _whole_heap_due(s: _Schedule, now: float, *, growth: bool) -> bool:
    if now - s.last_full >= UNFREEZE_AFTER:
        return True
    return growth and sys.getallocatedblocks() > s.blocks_at_full * (1 + HEAP_GROWTH)


def freeze_now() -> None:
    """Collect the young generations, then freeze what is alive (the whole heap instead,
    when the timer says so).

    For the moments an image was just built in bulk (a catch-up, a snapshot load): the
    heap grew with the image, not with garbage, so its size now is the baseline the
    next whole-heap collection waits to see doubled.
    """
    s = _schedule
    with s.lock:
        if s.enabled:
            _collect_and_freeze(s, _whole_heap_due(s, time.monotonic(), growth=False))
            s.blocks_at_full = max(s.blocks_at_full, sys.getallocatedblocks())


def freeze_new(*, catching_up: bool = False) -> None:
    """Freeze what was allocated since the last freeze, without a collection; now and
    then, collect the whole heap first when it is due. A loader still catching up
    grows the heap with its image: its freezes do not count that as growth."""
    s = _schedule
    with s.lock:
        if not s.enabled:
            return
        now = time.monotonic()
        if now - s.last_check >= CHECK_EVERY:
            s.last_check = now
            if _whole_heap_due(s, now, growth=not catching_up):
                _collect_and_freeze(s, True)
                return
        gc.freeze()
        s.freezes += 1


def collection_paused(*, catching_up: bool = False) -> AbstractContextManager[None]:
    """No collection while the block runs, and what it allocated frozen when it ends.

    For an apply: a few milliseconds of allocating long-lived image objects, which a
    young collection would walk for nothing. The collector is turned back on only if it
    was on when the first of several concurrent blocks began. ``catching_up`` as for
    :func:`freeze_new`.
    """
    return _PausedCollection(catching_up=catching_up)


class _PausedCollection:
    """:func:`collection_paused`'s block. A class, not a ``@contextmanager`` generator:
    a loader enters one per image, and the generator's machinery cost about a
    microsecond each time."""

    __slots__ = ("_catching_up", "_managed")

    def __init__(self, *, catching_up: bool = False) -> None:
        self._catching_up = catching_up
        self._managed = False

    def __enter__(self) -> None:
        s = _schedule
        with s.lock:
            if s.enabled:
                self._managed = True
                if s.paused == 0:
                    s.reenable = gc.isenabled()
                    gc.disable()
                s.paused += 1

    def __exit__(self, *exc_info: object) -> None:
        if not self._managed:
            return
        self._managed = False
        s = _schedule
        try:
            freeze_new(catching_up=self._catching_up)
        finally:
            with s.lock:
                s.paused -= 1
                if s.paused == 0 and s.reenable:
                    gc.enable()


# Thresholds, an application's choice -----------------------------------------------------
# With CPython's default thresholds every young collection promotes new partitions into
# the oldest generation, so full collections (which walk the whole heap) run every few
# thousand records and dominate replay time. Images hold no reference cycles, so
# collecting young garbage less often loses nothing. ``benchmarks/delta_apply.py``
# measures both settings.

IMAGE_FRIENDLY_GC_THRESHOLDS = (50_000, 20, 100)
"""Thresholds that keep young collections from promoting image parts into full ones."""


def tune_gc(
    thresholds: tuple[int, int, int] = IMAGE_FRIENDLY_GC_THRESHOLDS,
) -> tuple[int, int, int]:
    """Apply ``thresholds`` (an application's choice, never a library default).

    Returns the previous thresholds so a caller can restore them.
    """
    previous = gc.get_threshold()
    gc.set_threshold(*thresholds)
    return previous
