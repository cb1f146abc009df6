"""The interner: one object per value among recent ones, and bounded."""

from __future__ import annotations

from broker._intern import Interner


def test_equal_values_get_the_first_object_and_the_table_stays_bounded() -> None:
    interner: Interner[tuple[int, ...]] = Interner(limit=3)
    first = tuple(range(1, 3))  # built at run time: not a shared constant
    assert interner(first) is first
    assert interner(tuple(range(1, 3))) is first
    for n in range(3, 6):  # the fourth distinct value clears the table
        interner((n,))
        assert len(interner) <= 3
    again = tuple(range(1, 3))
    assert interner(again) is again  # forgotten: a new first
