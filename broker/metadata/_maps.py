"""Change sets over persistent maps: what most sub-deltas are made of.

A sub-delta never copies its image's map. It records changes in a small dict and, on
apply, folds them into the persistent map with one ``mutate()`` pass, so the cost is
O(changed · log N) and every untouched node is shared with the previous image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from immutables import Map

__all__ = [
    "EMPTY_MAP",
    "MapChanges",
    "MapDelta",
    "NestedMapChanges",
    "Reject",
    "sorted_items",
]

K = TypeVar("K")
K2 = TypeVar("K2")
V = TypeVar("V")
I = TypeVar("I")  # noqa: E741 - the image type of a MapDelta

EMPTY_MAP: Map[Any, Any] = Map()


class Reject(Exception):
    """A record cannot apply; raised before anything was changed."""


def sorted_items(mapping: Map[K, V], key: Callable[[K], Any] | None = None) -> list[tuple[K, V]]:
    """Items in a stable order, for ``write()`` and responses."""
    if not mapping:  # most streams have no stream objects: 100k calls per snapshot
        return []
    order: Callable[[tuple[K, V]], Any] = (
        (lambda kv: key(kv[0])) if key is not None else (lambda kv: kv[0])
    )
    return sorted(mapping.items(), key=order)


class MapChanges(Generic[K, V]):
    """Pending sets and deletes over a base map; ``None`` in ``changes`` means deleted."""

    __slots__ = ("base", "changes")

    def __init__(self, base: Map[K, V]) -> None:
        self.base = base
        self.changes: dict[K, V | None] = {}

    @classmethod
    def creating(cls, target: Map[K, V]) -> MapChanges[K, V]:
        """Changes that turn an empty map into ``target``."""
        changes: MapChanges[K, V] = cls(EMPTY_MAP)
        changes.changes = dict(target.items())
        return changes

    def get(self, key: K) -> V | None:
        changes = self.changes
        if key in changes:
            return changes[key]
        return self.base.get(key)

    def __contains__(self, key: K) -> bool:
        return self.get(key) is not None

    def set(self, key: K, value: V) -> None:
        self.changes[key] = value

    def delete(self, key: K) -> None:
        if key in self.base:
            self.changes[key] = None
        else:
            self.changes.pop(key, None)

    def mentioned(self, key: K) -> bool:
        return key in self.changes

    def keys(self) -> Iterator[K]:
        """Keys of the current view (base plus changes)."""
        changes = self.changes
        for key in self.base:
            if key not in changes:
                yield key
        for key, value in changes.items():
            if value is not None:
                yield key

    def finish_snapshot(self) -> None:
        """Delete every base key the snapshot did not mention."""
        for key in self.base:
            if key not in self.changes:
                self.changes[key] = None

    def apply(self) -> Map[K, V]:
        if not self.changes:
            return self.base
        mutation = self.base.mutate()
        for key, value in self.changes.items():
            if value is None:
                mutation.pop(key, None)
            else:
                mutation[key] = value
        result: Map[K, V] = mutation.finish()
        return result


class NestedMapChanges(Generic[K, K2, V]):
    """Changes to a map of maps (configs by resource, quotas by entity).

    An inner map that becomes empty is removed from the outer map.
    """

    __slots__ = ("base", "inner")

    def __init__(self, base: Map[K, Map[K2, V]]) -> None:
        self.base = base
        self.inner: dict[K, MapChanges[K2, V]] = {}

    @classmethod
    def creating(cls, target: Map[K, Map[K2, V]]) -> NestedMapChanges[K, K2, V]:
        changes: NestedMapChanges[K, K2, V] = cls(EMPTY_MAP)
        changes.inner = {key: MapChanges.creating(inner) for key, inner in target.items()}
        return changes

    def _changes(self, key: K) -> MapChanges[K2, V]:
        changes = self.inner.get(key)
        if changes is None:
            changes = self.inner[key] = MapChanges(self.base.get(key, EMPTY_MAP))
        return changes

    def get(self, key: K, inner_key: K2) -> V | None:
        changes = self.inner.get(key)
        if changes is not None:
            return changes.get(inner_key)
        return self.base.get(key, EMPTY_MAP).get(inner_key)

    def set(self, key: K, inner_key: K2, value: V) -> None:
        self._changes(key).set(inner_key, value)

    def delete(self, key: K, inner_key: K2) -> None:
        self._changes(key).delete(inner_key)

    def delete_all(self, key: K) -> None:
        """Forget the whole inner map of ``key``."""
        changes = self._changes(key)
        changes.changes = dict.fromkeys(changes.base)

    def finish_snapshot(self) -> None:
        for key in self.base:
            self._changes(key).finish_snapshot()

    def apply(self) -> Map[K, Map[K2, V]]:
        if not self.inner:
            return self.base
        mutation = self.base.mutate()
        for key, changes in self.inner.items():
            if not changes.changes:
                continue
            value = changes.apply()
            if len(value):
                mutation[key] = value
            else:
                mutation.pop(key, None)
        result: Map[K, Map[K2, V]] = mutation.finish()
        return result


class _Changes(Protocol):
    def finish_snapshot(self) -> None: ...
    def apply(self) -> Any: ...


C = TypeVar("C", bound=_Changes)


class MapDelta(Generic[I, C]):
    """The skeleton every sub-delta over one persistent map shares.

    A subclass names its image type and the image's map field; it adds only its replay
    rules, which record into ``changes``. Applying reuses the image as is when nothing
    changed, and otherwise builds ``image_type(new_map)``.
    """

    __slots__ = ("changes", "image")

    image_type: ClassVar[Any]
    """The sub-image class: built from its one map, with an ``EMPTY`` instance."""
    field: ClassVar[str]
    """The name of the image's map field."""
    changes_type: ClassVar[Any] = MapChanges

    def __init__(self, image: I) -> None:
        self.image = image
        self.changes: C = self.changes_type(getattr(image, self.field))

    @classmethod
    def creating(cls, image: I) -> Self:
        """The delta from EMPTY to ``image`` (see ``MetadataDelta.creating``)."""
        delta = cls(cls.image_type.EMPTY)
        delta.changes = cls.changes_type.creating(getattr(image, cls.field))
        return delta

    def finish_snapshot(self) -> None:
        """Delete every entry of the base image the snapshot did not mention."""
        self.changes.finish_snapshot()

    def apply(self) -> I:
        """The next sub-image; the base image itself when nothing changed."""
        mapping = self.changes.apply()
        if mapping is getattr(self.image, self.field):
            return self.image
        image: I = self.image_type(mapping)
        return image
