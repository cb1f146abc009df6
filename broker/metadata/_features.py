"""Finalized feature levels (``metadata.version`` among them) and producer id allocation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from immutables import Map

from broker.metadata._maps import EMPTY_MAP, MapChanges, MapDelta, sorted_items
from broker.metadata.records import (
    METADATA_VERSION_FEATURE,
    FeatureLevelRecord,
    MetadataRecord,
    ProducerIdsRecord,
)

__all__ = ["FeaturesDelta", "FeaturesImage", "ProducerIdsDelta", "ProducerIdsImage"]


@dataclass(frozen=True, slots=True)
class FeaturesImage:
    """Finalized feature levels, ``metadata.version`` among them."""

    levels: Map[str, int]
    """Finalized level by feature name; a feature at level 0 is absent."""

    EMPTY: ClassVar[FeaturesImage]

    @property
    def metadata_version(self) -> int | None:
        """The ``metadata.version`` feature level, or None before it is set."""
        return self.levels.get(METADATA_VERSION_FEATURE)

    def write(self) -> Iterator[MetadataRecord]:
        # metadata.version first: it decides how every later record is read.
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        if (version := self.metadata_version) is not None:
            yield FeatureLevelRecord(name=METADATA_VERSION_FEATURE, feature_level=version)
        for name, level in sorted_items(self.levels):
            if name != METADATA_VERSION_FEATURE:
                yield FeatureLevelRecord(name=name, feature_level=level)


FeaturesImage.EMPTY = FeaturesImage(EMPTY_MAP)


class FeaturesDelta(MapDelta[FeaturesImage, MapChanges[str, int]]):
    """Changes to finalized feature levels."""

    __slots__ = ()
    image_type = FeaturesImage
    field = "levels"

    def replay_feature_level(self, record: FeatureLevelRecord) -> None:
        """Fold a ``FeatureLevelRecord`` into this delta."""
        if record.feature_level == 0:
            self.changes.delete(record.name)
        else:
            self.changes.set(record.name, record.feature_level)


@dataclass(frozen=True, slots=True)
class ProducerIdsImage:
    """The producer id allocator: the next id it hands out."""

    next_producer_id: int
    """Next producer id the cluster hands out; -1 before any block was allocated."""

    EMPTY: ClassVar[ProducerIdsImage]

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        if self.next_producer_id >= 0:
            yield ProducerIdsRecord(broker_id=-1, next_producer_id=self.next_producer_id)


ProducerIdsImage.EMPTY = ProducerIdsImage(-1)


class ProducerIdsDelta:
    """A change to the producer id allocator."""

    __slots__ = ("image", "next_producer_id")

    def __init__(self, image: ProducerIdsImage) -> None:
        self.image = image
        self.next_producer_id: int | None = None

    @classmethod
    def creating(cls, image: ProducerIdsImage) -> ProducerIdsDelta:
        """A delta that builds ``image`` from nothing (a snapshot load): every entry is new."""
        delta = cls(ProducerIdsImage.EMPTY)
        delta.next_producer_id = image.next_producer_id if image.next_producer_id >= 0 else None
        return delta

    def replay_producer_ids(self, record: ProducerIdsRecord) -> None:
        """Fold a ``ProducerIdsRecord`` into this delta."""
        self.next_producer_id = record.next_producer_id

    def finish_snapshot(self) -> None:
        """End of a snapshot: delete every base entry the snapshot did not mention."""
        if self.next_producer_id is None:
            self.next_producer_id = -1

    def apply(self) -> ProducerIdsImage:
        """The image with these changes (the base image itself when nothing changed)."""
        value = self.next_producer_id
        if value is None or value == self.image.next_producer_id:
            return self.image
        return ProducerIdsImage(value)
