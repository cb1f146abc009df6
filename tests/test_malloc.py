"""broker.tune_malloc: glibc's large-block threshold pinned, and a no-op elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import broker

# In a fresh process: freeing a 16 MiB mapped block raises glibc's threshold to 16 MiB,
# so a smaller block that the heap's free memory cannot hold then grows the heap, unless
# the threshold was pinned. The block is sized past all the heap's free memory (which
# varies with what the imports freed), so the rule is what decides. Prints how many
# mappings the block added.
NEW_MAPPINGS = """
import ctypes, sys
import broker

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
freed = bytearray(16 << 20)
del freed
if sys.argv[1] == "tuned":
    assert broker.tune_malloc()
before = mallinfo2()
size = before.fordblks + (1 << 20)
assert size < 15 << 20, f"the heap holds {before.fordblks} free bytes"
block = bytearray(size)
print(mallinfo2().hblks - before.hblks)
"""


def new_mappings(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", NEW_MAPPINGS, mode], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr  # e.g. the heap held too much free memory
    return int(done.stdout)


def test_large_blocks_get_their_own_mapping_even_after_a_larger_one_was_freed() -> None:
    assert new_mappings("untuned") == 0  # glibc's own rule: the heap grows
    assert new_mappings("tuned") == 1


def test_it_does_nothing_and_says_so_outside_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(os, "confstr", no_such_name)
    assert broker.tune_malloc() is False
