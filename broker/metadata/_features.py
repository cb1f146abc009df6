"""Finalized feature levels (``metadata.version`` among them) and producer id allocation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from immutables import Map

from broker.metadata._maps import EMPTY_MAP, MapChanges, sorted_items
from broker.metadata._records import (
    METADATA_VERSION_FEATURE,
    FeatureLevelRecord,
    MetadataRecord,
    ProducerIdsRecord,
)

__all__ = ["FeaturesDelta", "FeaturesImage", "ProducerIdsDelta", "ProducerIdsImage"]


@dataclass(frozen=True, slots=True)
class FeaturesImage:
    levels: Map[str, int]
    """Finalized level by feature name; a feature at level 0 is absent."""

    EMPTY: ClassVar[FeaturesImage]

    @property
    def metadata_version(self) -> int | None:
        return self.levels.get(METADATA_VERSION_FEATURE)

    def write(self) -> Iterator[MetadataRecord]:
        # metadata.version first: it decides how every later record is read.
        if (version := self.metadata_version) is not None:
            yield FeatureLevelRecord(name=METADATA_VERSION_FEATURE, feature_level=version)
        for name, level in sorted_items(self.levels):
            if name != METADATA_VERSION_FEATURE:
                yield FeatureLevelRecord(name=name, feature_level=level)


FeaturesImage.EMPTY = FeaturesImage(EMPTY_MAP)


class FeaturesDelta:
    __slots__ = ("image", "levels")

    def __init__(self, image: FeaturesImage) -> None:
        self.image = image
        self.levels: MapChanges[str, int] = MapChanges(image.levels)

    @classmethod
    def creating(cls, image: FeaturesImage) -> FeaturesDelta:
        """The delta from EMPTY to ``image`` (see ``MetadataDelta.creating``)."""
        delta = cls(FeaturesImage.EMPTY)
        delta.levels = MapChanges.creating(image.levels)
        return delta

    def replay_feature_level(self, record: FeatureLevelRecord) -> None:
        if record.feature_level == 0:
            self.levels.delete(record.name)
        else:
            self.levels.set(record.name, record.feature_level)

    def finish_snapshot(self) -> None:
        self.levels.finish_snapshot()

    def apply(self) -> FeaturesImage:
        levels = self.levels.apply()
        return self.image if levels is self.image.levels else FeaturesImage(levels)


@dataclass(frozen=True, slots=True)
class ProducerIdsImage:
    next_producer_id: int
    """Next producer id the cluster hands out; -1 before any block was allocated."""

    EMPTY: ClassVar[ProducerIdsImage]

    def write(self) -> Iterator[MetadataRecord]:
        if self.next_producer_id >= 0:
            yield ProducerIdsRecord(broker_id=-1, next_producer_id=self.next_producer_id)


ProducerIdsImage.EMPTY = ProducerIdsImage(-1)


class ProducerIdsDelta:
    __slots__ = ("image", "next_producer_id")

    def __init__(self, image: ProducerIdsImage) -> None:
        self.image = image
        self.next_producer_id: int | None = None

    @classmethod
    def creating(cls, image: ProducerIdsImage) -> ProducerIdsDelta:
        delta = cls(ProducerIdsImage.EMPTY)
        delta.next_producer_id = image.next_producer_id if image.next_producer_id >= 0 else None
        return delta

    def replay_producer_ids(self, record: ProducerIdsRecord) -> None:
        self.next_producer_id = record.next_producer_id

    def finish_snapshot(self) -> None:
        if self.next_producer_id is None:
            self.next_producer_id = -1

    def apply(self) -> ProducerIdsImage:
        value = self.next_producer_id
        if value is None or value == self.image.next_producer_id:
            return self.image
        return ProducerIdsImage(value)
