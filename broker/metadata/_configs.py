"""Dynamic configs by resource, and client quotas by entity."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from immutables import Map

from broker.metadata._maps import EMPTY_MAP, MapDelta, NestedMapChanges, sorted_items
from broker.metadata.records import (
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
    """A config resource: its type and name (a topic, a broker id, ...)."""

    type: ConfigResourceType
    name: str


@dataclass(frozen=True, slots=True)
class ConfigurationsImage:
    """Dynamic configs by resource; each resource maps config names to values."""

    resources: Map[ConfigResource, Map[str, str]]

    EMPTY: ClassVar[ConfigurationsImage]

    def configs(self, resource_type: ConfigResourceType, name: str) -> Map[str, str]:
        """The dynamic configs of one resource (empty if it has none)."""
        return self.resources.get(ConfigResource(resource_type, name), EMPTY_MAP)

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        for resource, configs in sorted_items(self.resources):
            for key, value in sorted_items(configs):
                yield ConfigRecord(
                    resource_type=resource.type, resource_name=resource.name, name=key, value=value
                )


ConfigurationsImage.EMPTY = ConfigurationsImage(EMPTY_MAP)


class ConfigurationsDelta(
    MapDelta[ConfigurationsImage, NestedMapChanges[ConfigResource, str, str]]
):
    """Changes to dynamic configs."""

    __slots__ = ()
    image_type = ConfigurationsImage
    field = "resources"
    changes_type = NestedMapChanges

    def replay_config(self, record: ConfigRecord) -> None:
        """Fold a ``ConfigRecord`` into this delta."""
        resource = ConfigResource(record.resource_type, record.resource_name)
        if record.value is None:
            self.changes.delete(resource, record.name)
        else:
            self.changes.set(resource, record.name, record.value)

    def delete_resource(self, resource: ConfigResource) -> None:
        """Forget every config of ``resource`` (its topic was removed)."""
        self.changes.delete_all(resource)


QuotaEntityKey = tuple[tuple[str, str | None], ...]
"""A quota entity as sorted ``(entity_type, entity_name)`` pairs; ``None`` = default."""


def _entity_order(part: tuple[str, str | None]) -> tuple[str, bool, str]:
    entity_type, name = part
    return entity_type, name is not None, name or ""


def quota_entity_key(entity: tuple[ClientQuotaEntity, ...]) -> QuotaEntityKey:
    return tuple(sorted(((e.entity_type, e.entity_name) for e in entity), key=_entity_order))


@dataclass(frozen=True, slots=True)
class ClientQuotasImage:
    """Client quotas by entity; each entity maps quota keys to values."""

    entities: Map[QuotaEntityKey, Map[str, float]]

    EMPTY: ClassVar[ClientQuotasImage]

    def write(self) -> Iterator[MetadataRecord]:
        # Default entities (name None) sort before named ones.
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
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


class ClientQuotasDelta(MapDelta[ClientQuotasImage, NestedMapChanges[QuotaEntityKey, str, float]]):
    """Changes to client quotas."""

    __slots__ = ()
    image_type = ClientQuotasImage
    field = "entities"
    changes_type = NestedMapChanges

    def replay_client_quota(self, record: ClientQuotaRecord) -> None:
        """Fold a ``ClientQuotaRecord`` into this delta."""
        entity = quota_entity_key(record.entity)
        if record.remove:
            self.changes.delete(entity, record.key)
        else:
            self.changes.set(entity, record.key, record.value)
