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


def test_a_lookup_taken_once_shares_and_is_bounded_by_trim_for_good() -> None:
    interner: Interner[tuple[int, ...]] = Interner(limit=3)
    lookup = interner.lookup  # as a hot path keeps it, for the interner's life
    for _ in range(2):
        values = [tuple(range(n)) for n in range(1, 6)]
        for value in values:
            assert lookup(value, value) is value
        assert len(interner) == 5  # no bound check: the owner trims
        again = tuple(range(2))
        assert lookup(again, again) is values[1]
        interner.trim()
        assert len(interner) == 0
