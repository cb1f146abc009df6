"""broker.tune_malloc: glibc's large-block threshold pinned, and a no-op elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import broker

# In a fresh process, whose heap has no free block of 1 MiB: freeing an 8 MiB mapped
# block raises glibc's threshold to 8 MiB, so a 1 MiB block then grows the heap, unless
# the threshold was pinned. Prints how many mappings the 1 MiB block added.
NEW_MAPPINGS = """
import ctypes, sys
import broker

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
freed = bytearray(8 << 20)
del freed
if sys.argv[1] == "tuned":
    assert broker.tune_malloc()
before = mallinfo2().hblks
block = bytearray(1 << 20)
print(mallinfo2().hblks - before)
"""


def new_mappings(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", NEW_MAPPINGS, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_large_blocks_get_their_own_mapping_even_after_a_larger_one_was_freed() -> None:
    assert new_mappings("untuned") == 0  # glibc's own rule: the heap grows
    assert new_mappings("tuned") == 1


def test_it_does_nothing_and_says_so_outside_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(os, "confstr", no_such_name)
    assert broker.tune_malloc() is False
