"""One shared object per value, for small immutable values a large cluster repeats.

At 100k partitions, most partitions' registrations and METADATA answers equal another
partition's (the same replicas, leader and epochs; an answer's partition index repeats
in every topic): the simulated broker held 111k registrations of 290 distinct values
and 219k partition answers of 6.5k. Sharing one object per value keeps memory with the
values, not with the partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Interner"]

T = TypeVar("T", bound=Hashable)


class Interner(Generic[T]):
    """``interner(value)``: an object equal to ``value``, the same one for every equal
    value while it is remembered (``value`` itself the first time).

    Bounded, not an LRU: the table is cleared when it holds ``limit`` values, so values
    that never repeat cost a lookup and at most ``limit`` kept references, never a leak.
    Safe from several threads (a ``dict.setdefault`` and a ``clear``, each atomic).
    Only for immutable values whose equality means interchangeable (tuples and frozen
    dataclasses of ints, strings and such).
    """

    __slots__ = ("_table", "limit")

    def __init__(self, limit: int = 1 << 14) -> None:
        self._table: dict[T, T] = {}
        self.limit = limit

    def __call__(self, value: T) -> T:
        table = self._table
        found = table.setdefault(value, value)
        if len(table) > self.limit:
            table.clear()
        return found

    @property
    def lookup(self) -> Callable[[T, T], T]:
        """``lookup(value, value)``, the same as a call without the bound check: for a
        hot path whose owner calls :meth:`trim` at the end of each unit of work (replay
        shares registrations this way; the delta's apply trims). The same callable for
        the interner's whole life: its table is cleared, never replaced."""
        return self._table.setdefault

    def trim(self) -> None:
        """Clear the table if it holds more than ``limit`` values."""
        if len(self._table) > self.limit:
            self._table.clear()

    def __len__(self) -> int:
        return len(self._table)
