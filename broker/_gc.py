"""Cyclic-GC settings for a process that holds large metadata images.

An image of a million partitions is a million small objects that live long and are
replaced a few at a time. With CPython's default thresholds every young collection
promotes new partitions into the oldest generation, so full collections (which walk the
whole heap) run every few thousand records and dominate replay time. Images hold no
reference cycles - they are freed by reference counting - so collecting young garbage
less often loses nothing. ``benchmarks/delta_apply.py`` measures both settings.
"""

from __future__ import annotations

import gc

__all__ = ["IMAGE_FRIENDLY_GC_THRESHOLDS", "tune_gc"]

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
