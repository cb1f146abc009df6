"""Dynamic configs by resource, and client quotas by entity."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from immutables import Map

from broker.metadata._maps import EMPTY_MAP, NestedMapChanges, sorted_items
from broker.metadata._records import (
    ClientQuotaEntity,
    ClientQuotaRecord,
    ConfigRecord,
    ConfigResourceType,
    MetadataRecord,
)

__all__ = [
    "ClientQuotasDelta",
    "ClientQuotasImage",
    "ConfigResource",
    "ConfigurationsDelta",
    "ConfigurationsImage",
    "QuotaEntityKey",
]


class ConfigResource(NamedTuple):
    type: ConfigResourceType
    name: str


@dataclass(frozen=True, slots=True)
class ConfigurationsImage:
    resources: Map[ConfigResource, Map[str, str]]

    EMPTY: ClassVar[ConfigurationsImage]

    def configs(self, resource_type: ConfigResourceType, name: str) -> Map[str, str]:
        return self.resources.get(ConfigResource(resource_type, name), EMPTY_MAP)

    def write(self) -> Iterator[MetadataRecord]:
        for resource, configs in sorted_items(self.resources):
            for key, value in sorted_items(configs):
                yield ConfigRecord(
                    resource_type=resource.type, resource_name=resource.name, name=key, value=value
                )


ConfigurationsImage.EMPTY = ConfigurationsImage(EMPTY_MAP)


class ConfigurationsDelta:
    __slots__ = ("changes", "image")

    def __init__(self, image: ConfigurationsImage) -> None:
        self.image = image
        self.changes: NestedMapChanges[ConfigResource, str, str] = NestedMapChanges(image.resources)

    @classmethod
    def creating(cls, image: ConfigurationsImage) -> ConfigurationsDelta:
        delta = cls(ConfigurationsImage.EMPTY)
        delta.changes = NestedMapChanges.creating(image.resources)
        return delta

    def replay_config(self, record: ConfigRecord) -> None:
        resource = ConfigResource(record.resource_type, record.resource_name)
        if record.value is None:
            self.changes.delete(resource, record.name)
        else:
            self.changes.set(resource, record.name, record.value)

    def delete_resource(self, resource: ConfigResource) -> None:
        self.changes.delete_all(resource)

    def finish_snapshot(self) -> None:
        self.changes.finish_snapshot()

    def apply(self) -> ConfigurationsImage:
        resources = self.changes.apply()
        return self.image if resources is self.image.resources else ConfigurationsImage(resources)


QuotaEntityKey = tuple[tuple[str, str | None], ...]
"""A quota entity as sorted ``(entity_type, entity_name)`` pairs; ``None`` = default."""


def _entity_order(part: tuple[str, str | None]) -> tuple[str, bool, str]:
    entity_type, name = part
    return entity_type, name is not None, name or ""


def quota_entity_key(entity: tuple[ClientQuotaEntity, ...]) -> QuotaEntityKey:
    return tuple(sorted(((e.entity_type, e.entity_name) for e in entity), key=_entity_order))


@dataclass(frozen=True, slots=True)
class ClientQuotasImage:
    entities: Map[QuotaEntityKey, Map[str, float]]

    EMPTY: ClassVar[ClientQuotasImage]

    def write(self) -> Iterator[MetadataRecord]:
        # Default entities (name None) sort before named ones.
        for entity, quotas in sorted_items(
            self.entities, key=lambda e: tuple(map(_entity_order, e))
        ):
            for key, value in sorted_items(quotas):
                yield ClientQuotaRecord(
                    entity=tuple(
                        ClientQuotaEntity(entity_type=t, entity_name=n) for t, n in entity
                    ),
                    key=key,
                    value=value,
                )


ClientQuotasImage.EMPTY = ClientQuotasImage(EMPTY_MAP)


class ClientQuotasDelta:
    __slots__ = ("changes", "image")

    def __init__(self, image: ClientQuotasImage) -> None:
        self.image = image
        self.changes: NestedMapChanges[QuotaEntityKey, str, float] = NestedMapChanges(
            image.entities
        )

    @classmethod
    def creating(cls, image: ClientQuotasImage) -> ClientQuotasDelta:
        delta = cls(ClientQuotasImage.EMPTY)
        delta.changes = NestedMapChanges.creating(image.entities)
        return delta

    def replay_client_quota(self, record: ClientQuotaRecord) -> None:
        entity = quota_entity_key(record.entity)
        if record.remove:
            self.changes.delete(entity, record.key)
        else:
            self.changes.set(entity, record.key, record.value)

    def finish_snapshot(self) -> None:
        self.changes.finish_snapshot()

    def apply(self) -> ClientQuotasImage:
        entities = self.changes.apply()
        return self.image if entities is self.image.entities else ClientQuotasImage(entities)
