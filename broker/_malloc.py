"""The C allocator's threshold for large blocks: an application's choice, like ``tune_gc``.

A broker allocates and frees large buffers all the time: an all-topics METADATA answer
is megabytes at 100k partitions, a snapshot's frames are 15 MB, a log chunk read back is
decompressed whole. When a block above ``M_MMAP_THRESHOLD`` (128 KiB) does not fit in
the heap's free memory, glibc gives it a mapping of its own, returned to the system when
freed, instead of growing the heap; but every such block freed raises the threshold to
its size (up to 32 MiB), after which large blocks grow the heap, where the holes freed
ones leave are rarely given back. In the simulated broker at 100k partitions under
churn (``benchmarks/soak.py``) that was about 40 MiB of resident memory after four
minutes, and still growing. Pinning the threshold turns that adjustment off.

Process-wide, so the library never does it on its own: ``broker-sim`` does at start, and
an embedding application may call :func:`tune_malloc` likewise. Elsewhere than glibc
(musl, macOS) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["MMAP_THRESHOLD", "tune_malloc"]

MMAP_THRESHOLD = 128 * 1024
"""glibc's default threshold, kept from moving."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Give a block of ``mmap_threshold`` bytes or more that the heap's free memory
    cannot hold a mapping of its own rather than grow the heap, and give free memory at
    the heap's top back beyond twice that, whatever was freed before (glibc's
    ``mallopt``). Returns whether the allocator took the setting: False where the C
    library is not glibc."""
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # no such name outside glibc
        glibc = False
    if not glibc:
        return False
    libc = ctypes.CDLL(None)  # the process's own symbols: glibc's mallopt among them
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        and libc.mallopt(_M_TRIM_THRESHOLD, 2 * mmap_threshold)
    )
