"""broker.tune_malloc: glibc's large-block threshold pinned, and a no-op elsewhere."""

from __future__ import annotations

import ctypes
import os

import pytest

import broker


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mapped_blocks() -> int:
    """Blocks glibc serves with their own mapping (``mallinfo2().hblks``)."""
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().hblks)


def test_large_blocks_keep_their_own_mapping_after_a_larger_one_was_freed() -> None:
    # Freeing an 8 MiB mapped block would raise glibc's threshold to 8 MiB, and a 1 MiB
    # block would then come from the heap; once tuned, it still gets its own mapping.
    freed = bytearray(8 << 20)
    del freed
    assert broker.tune_malloc()
    before = mapped_blocks()
    block = bytearray(1 << 20)
    assert mapped_blocks() == before + 1
    del block
    assert mapped_blocks() == before  # and it went back to the system


def test_it_does_nothing_and_says_so_outside_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(os, "confstr", no_such_name)
    assert broker.tune_malloc() is False
