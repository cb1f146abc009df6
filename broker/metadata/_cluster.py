"""Brokers and controllers: registrations, fencing, controlled shutdown."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar
from uuid import UUID

from immutables import Map

from broker.metadata._maps import EMPTY_MAP, MapChanges, Reject, sorted_items
from broker.metadata.records import (
    BrokerEndpoint,
    BrokerFeature,
    BrokerRegistrationChangeRecord,
    FenceBrokerRecord,
    MetadataRecord,
    RegisterBrokerRecord,
    RegisterControllerRecord,
    UnfenceBrokerRecord,
    UnregisterBrokerRecord,
)

__all__ = ["BrokerRegistration", "ClusterDelta", "ClusterImage", "ControllerRegistration"]


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    """One broker's registration: epoch, listeners, features, rack, fencing and log dirs."""

    id: int
    epoch: int
    incarnation_id: UUID
    listeners: tuple[BrokerEndpoint, ...]
    supported_features: tuple[BrokerFeature, ...]
    rack: str | None
    fenced: bool
    in_controlled_shutdown: bool
    log_dirs: tuple[UUID, ...]

    @classmethod
    def from_record(cls, record: RegisterBrokerRecord) -> BrokerRegistration:
        """The registration a RegisterBrokerRecord describes."""
        return cls(
            id=record.broker_id,
            epoch=record.broker_epoch,
            incarnation_id=record.incarnation_id,
            listeners=record.end_points,
            supported_features=record.features,
            rack=record.rack,
            fenced=record.fenced,
            in_controlled_shutdown=record.in_controlled_shutdown,
            log_dirs=record.log_dirs,
        )

    def to_record(self) -> RegisterBrokerRecord:
        """The RegisterBrokerRecord that recreates this registration (snapshots)."""
        return RegisterBrokerRecord(
            broker_id=self.id,
            broker_epoch=self.epoch,
            incarnation_id=self.incarnation_id,
            end_points=self.listeners,
            features=self.supported_features,
            rack=self.rack,
            fenced=self.fenced,
            in_controlled_shutdown=self.in_controlled_shutdown,
            log_dirs=self.log_dirs,
        )

    def listener(self, name: str) -> BrokerEndpoint | None:
        """The endpoint of listener ``name``, or None if the broker has none."""
        for endpoint in self.listeners:
            if endpoint.name == name:
                return endpoint
        return None


@dataclass(frozen=True, slots=True)
class ControllerRegistration:
    """One KRaft controller's registration."""

    id: int
    incarnation_id: UUID
    listeners: tuple[BrokerEndpoint, ...]
    supported_features: tuple[BrokerFeature, ...]

    def to_record(self) -> RegisterControllerRecord:
        """The RegisterControllerRecord that recreates this registration (snapshots)."""
        return RegisterControllerRecord(
            controller_id=self.id,
            incarnation_id=self.incarnation_id,
            end_points=self.listeners,
            features=self.supported_features,
        )


@dataclass(frozen=True, slots=True)
class ClusterImage:
    """Registered brokers and controllers, by id."""

    brokers: Map[int, BrokerRegistration]
    controllers: Map[int, ControllerRegistration]

    EMPTY: ClassVar[ClusterImage]

    def broker(self, broker_id: int) -> BrokerRegistration | None:
        """The registration of broker ``broker_id``, or None."""
        return self.brokers.get(broker_id)

    def alive_broker_ids(self) -> list[int]:
        """Registered, unfenced brokers, sorted by id."""
        return sorted(b.id for b in self.brokers.values() if not b.fenced)

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        for _, broker in sorted_items(self.brokers):
            yield broker.to_record()
        for _, controller in sorted_items(self.controllers):
            yield controller.to_record()


ClusterImage.EMPTY = ClusterImage(EMPTY_MAP, EMPTY_MAP)


class ClusterDelta:
    """Changes to broker and controller registrations."""

    __slots__ = ("brokers", "controllers", "image")

    def __init__(self, image: ClusterImage) -> None:
        self.image = image
        self.brokers: MapChanges[int, BrokerRegistration] = MapChanges(image.brokers)
        self.controllers: MapChanges[int, ControllerRegistration] = MapChanges(image.controllers)

    @classmethod
    def creating(cls, image: ClusterImage) -> ClusterDelta:
        """A delta that builds ``image`` from nothing (a snapshot load): every entry is new."""
        delta = cls(ClusterImage.EMPTY)
        delta.brokers = MapChanges.creating(image.brokers)
        delta.controllers = MapChanges.creating(image.controllers)
        return delta

    def _registered(self, broker_id: int, epoch: int) -> BrokerRegistration:
        broker = self.brokers.get(broker_id)
        if broker is None:
            raise Reject(f"broker {broker_id} is not registered")
        if broker.epoch != epoch:
            raise Reject(
                f"broker {broker_id} epoch mismatch: record has {epoch}, "
                f"registration has {broker.epoch}"
            )
        return broker

    def replay_register_broker(self, record: RegisterBrokerRecord) -> None:
        """Fold a ``RegisterBrokerRecord`` into this delta."""
        self.brokers.set(record.broker_id, BrokerRegistration.from_record(record))

    def replay_unregister_broker(self, record: UnregisterBrokerRecord) -> None:
        """Fold a ``UnregisterBrokerRecord`` into this delta."""
        self._registered(record.broker_id, record.broker_epoch)
        self.brokers.delete(record.broker_id)

    def replay_fence_broker(self, record: FenceBrokerRecord) -> None:
        """Fold a ``FenceBrokerRecord`` into this delta."""
        broker = self._registered(record.id, record.epoch)
        self.brokers.set(record.id, dataclasses.replace(broker, fenced=True))

    def replay_unfence_broker(self, record: UnfenceBrokerRecord) -> None:
        """Fold a ``UnfenceBrokerRecord`` into this delta."""
        broker = self._registered(record.id, record.epoch)
        self.brokers.set(record.id, dataclasses.replace(broker, fenced=False))

    def replay_registration_change(self, record: BrokerRegistrationChangeRecord) -> None:
        """Fold a ``BrokerRegistrationChangeRecord`` into this delta."""
        broker = self._registered(record.broker_id, record.broker_epoch)
        fenced = {-1: False, 0: broker.fenced, 1: True}[record.fenced]
        in_controlled_shutdown = broker.in_controlled_shutdown or record.in_controlled_shutdown == 1
        log_dirs = broker.log_dirs if record.log_dirs is None else record.log_dirs
        self.brokers.set(
            record.broker_id,
            dataclasses.replace(
                broker,
                fenced=fenced,
                in_controlled_shutdown=in_controlled_shutdown,
                log_dirs=log_dirs,
            ),
        )

    def replay_register_controller(self, record: RegisterControllerRecord) -> None:
        """Fold a ``RegisterControllerRecord`` into this delta."""
        self.controllers.set(
            record.controller_id,
            ControllerRegistration(
                record.controller_id, record.incarnation_id, record.end_points, record.features
            ),
        )

    def finish_snapshot(self) -> None:
        """End of a snapshot: delete every base entry the snapshot did not mention."""
        self.brokers.finish_snapshot()
        self.controllers.finish_snapshot()

    def apply(self) -> ClusterImage:
        """The image with these changes (the base image itself when nothing changed)."""
        brokers = self.brokers.apply()
        controllers = self.controllers.apply()
        if brokers is self.image.brokers and controllers is self.image.controllers:
            return self.image
        return ClusterImage(brokers, controllers)
