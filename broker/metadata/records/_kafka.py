"""Kafka's core metadata record types, with Apache Kafka's apiKeys."""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import Field

from broker.metadata.records._base import (
    NO_LEADER,
    NO_LEADER_CHANGE,
    Id32,
    Id64,
    Int8,
    Int16,
    Int32,
    Int32s,
    Int64,
    Level16,
    MetadataRecord,
    UInt16,
    _Model,
)

__all__ = [
    "AbortTransactionRecord",
    "AccessControlEntryRecord",
    "BeginTransactionRecord",
    "BrokerEndpoint",
    "BrokerFeature",
    "BrokerRegistrationChangeRecord",
    "ClientQuotaEntity",
    "ClientQuotaRecord",
    "ConfigRecord",
    "ConfigResourceType",
    "DelegationTokenRecord",
    "EndTransactionRecord",
    "FeatureLevelRecord",
    "FenceBrokerRecord",
    "LeaderRecoveryState",
    "NoOpRecord",
    "PartitionChangeRecord",
    "PartitionRecord",
    "ProducerIdsRecord",
    "RegisterBrokerRecord",
    "RegisterControllerRecord",
    "RemoveAccessControlEntryRecord",
    "RemoveDelegationTokenRecord",
    "RemoveTopicRecord",
    "RemoveUserScramCredentialRecord",
    "ScramMechanism",
    "TopicRecord",
    "UnfenceBrokerRecord",
    "UnregisterBrokerRecord",
    "UserScramCredentialRecord",
]


class ConfigResourceType(enum.IntEnum):
    """Kafka's ConfigResource.Type ids as stored in ConfigRecord."""

    UNKNOWN = 0
    TOPIC = 2
    BROKER = 4
    BROKER_LOGGER = 8
    CLIENT_METRICS = 16
    GROUP = 32


class LeaderRecoveryState(enum.IntEnum):
    """Whether a partition's leader finished recovering after an unclean election."""

    RECOVERED = 0
    RECOVERING = 1


class ScramMechanism(enum.IntEnum):
    """The SCRAM hash of a user credential."""

    SCRAM_SHA_256 = 1
    SCRAM_SHA_512 = 2


class BrokerEndpoint(_Model):
    """One listener a broker or controller accepts connections on."""

    name: str
    """Listener name, e.g. ``PLAINTEXT``."""
    host: str
    port: UInt16
    security_protocol: Int16 = 0
    """Kafka SecurityProtocol id (0 = PLAINTEXT)."""


class BrokerFeature(_Model):
    """A feature a broker supports, with the range of levels it can run."""

    name: str
    min_supported_version: Int16
    max_supported_version: Int16


class RegisterBrokerRecord(MetadataRecord):
    """A broker registers (or re-registers with a new epoch); it starts fenced."""

    api_key: ClassVar[int] = 0
    version: ClassVar[int] = 3

    broker_id: Int32
    incarnation_id: UUID
    broker_epoch: Int64
    """Epoch the controller assigned to this registration; later records must match it."""
    end_points: tuple[BrokerEndpoint, ...] = ()
    features: tuple[BrokerFeature, ...] = ()
    rack: str | None = None
    fenced: bool = True
    """A newly registered broker is fenced until the controller unfences it."""
    in_controlled_shutdown: bool = False
    log_dirs: tuple[UUID, ...] = ()


class UnregisterBrokerRecord(MetadataRecord):
    """A broker leaves the cluster."""

    api_key: ClassVar[int] = 1
    version: ClassVar[int] = 0

    broker_id: Int32
    broker_epoch: Int64
    """Must equal the registered epoch, or the record is rejected."""


class TopicRecord(MetadataRecord):
    """A topic is created (its partitions follow as PartitionRecords)."""

    api_key: ClassVar[int] = 2
    version: ClassVar[int] = 0

    name: str = Field(min_length=1, max_length=249)
    topic_id: UUID


class PartitionRecord(MetadataRecord):
    """A partition's whole state: replicas, ISR, leader and epochs."""

    api_key: ClassVar[int] = 3
    version: ClassVar[int] = 2

    partition_id: Id32
    topic_id: UUID
    replicas: Int32s = ()
    isr: Int32s = ()
    removing_replicas: Int32s = ()
    adding_replicas: Int32s = ()
    leader: Int32 = NO_LEADER
    """The leader broker id, or -1 for none."""
    leader_recovery_state: LeaderRecoveryState = LeaderRecoveryState.RECOVERED
    leader_epoch: Int32 = -1
    partition_epoch: Int32 = -1
    directories: tuple[UUID, ...] = ()
    eligible_leader_replicas: Int32s = ()
    last_known_elr: Int32s = ()


class ConfigRecord(MetadataRecord):
    """Sets (or, with ``value=None``, deletes) one dynamic config of a resource."""

    api_key: ClassVar[int] = 4
    version: ClassVar[int] = 0

    resource_type: ConfigResourceType
    resource_name: str
    name: str
    value: str | None
    """``None`` deletes the key."""


class PartitionChangeRecord(MetadataRecord):
    """A change to one partition; every ``None`` field means "unchanged"."""

    api_key: ClassVar[int] = 5
    version: ClassVar[int] = 2

    partition_id: Id32
    topic_id: UUID
    isr: Int32s | None = None
    leader: Annotated[int, Field(ge=NO_LEADER_CHANGE, le=2**31 - 1)] = NO_LEADER_CHANGE
    """-2: leader unchanged; -1: no leader any more; otherwise the new leader."""
    replicas: Int32s | None = None
    removing_replicas: Int32s | None = None
    adding_replicas: Int32s | None = None
    leader_recovery_state: Annotated[int, Field(ge=-1, le=1)] = -1
    """-1: unchanged; otherwise a LeaderRecoveryState."""
    directories: tuple[UUID, ...] | None = None
    eligible_leader_replicas: Int32s | None = None
    last_known_elr: Int32s | None = None


class AccessControlEntryRecord(MetadataRecord):
    """An ACL is created."""

    api_key: ClassVar[int] = 18
    version: ClassVar[int] = 0

    id: UUID
    resource_type: Int8
    resource_name: str
    pattern_type: Int8
    principal: str
    host: str
    operation: Int8
    permission_type: Int8


class FenceBrokerRecord(MetadataRecord):
    """A broker is fenced: it may not lead or serve until unfenced."""

    api_key: ClassVar[int] = 7
    version: ClassVar[int] = 0

    id: Int32
    epoch: Int64


class UnfenceBrokerRecord(MetadataRecord):
    """A fenced broker is unfenced."""

    api_key: ClassVar[int] = 8
    version: ClassVar[int] = 0

    id: Int32
    epoch: Int64


class RemoveTopicRecord(MetadataRecord):
    """A topic is deleted, with its partitions and configs."""

    api_key: ClassVar[int] = 9
    version: ClassVar[int] = 0

    topic_id: UUID


class DelegationTokenRecord(MetadataRecord):
    """A delegation token is created or renewed."""

    api_key: ClassVar[int] = 10
    version: ClassVar[int] = 0

    owner: str
    requester: str
    renewers: tuple[str, ...] = ()
    issue_timestamp: Int64
    max_timestamp: Int64
    expiration_timestamp: Int64
    token_id: str


class UserScramCredentialRecord(MetadataRecord):
    """A user's SCRAM credential for one mechanism is set."""

    api_key: ClassVar[int] = 11
    version: ClassVar[int] = 0

    name: str
    mechanism: ScramMechanism
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: Int32


class FeatureLevelRecord(MetadataRecord):
    """A finalized feature level is set (level 0 removes the feature)."""

    api_key: ClassVar[int] = 12
    version: ClassVar[int] = 0

    name: str = Field(min_length=1)
    feature_level: Level16
    """Level 0 removes the feature."""


class ClientQuotaEntity(_Model):
    """One part of a quota entity (user, client id, ip), or its default."""

    entity_type: str
    entity_name: str | None = None
    """``None`` is the default entity."""


class ClientQuotaRecord(MetadataRecord):
    """Sets or removes one quota value of a client quota entity."""

    api_key: ClassVar[int] = 14
    version: ClassVar[int] = 0

    entity: tuple[ClientQuotaEntity, ...]
    key: str
    value: float
    remove: bool = False


class ProducerIdsRecord(MetadataRecord):
    """A block of producer ids was handed out: the next free id moves on."""

    api_key: ClassVar[int] = 15
    version: ClassVar[int] = 0

    broker_id: Int32
    broker_epoch: Int64 = -1
    next_producer_id: Id64


class BrokerRegistrationChangeRecord(MetadataRecord):
    """Fences, unfences or marks a broker in controlled shutdown, or moves its log dirs."""

    api_key: ClassVar[int] = 17
    version: ClassVar[int] = 2

    broker_id: Int32
    broker_epoch: Int64
    fenced: Literal[-1, 0, 1] = 0
    """-1: unfenced, 0: no change, 1: fenced."""
    in_controlled_shutdown: Literal[0, 1] = 0
    """0: no change, 1: the broker is in controlled shutdown."""
    log_dirs: tuple[UUID, ...] | None = None
    """``None``: unchanged."""


class RemoveAccessControlEntryRecord(MetadataRecord):
    """An ACL is deleted."""

    api_key: ClassVar[int] = 19
    version: ClassVar[int] = 0

    id: UUID


class NoOpRecord(MetadataRecord):
    """Carries nothing: the controller appends it to advance the log."""

    api_key: ClassVar[int] = 20
    version: ClassVar[int] = 0


class RemoveUserScramCredentialRecord(MetadataRecord):
    """A user's SCRAM credential for one mechanism is deleted."""

    api_key: ClassVar[int] = 22
    version: ClassVar[int] = 0

    name: str
    mechanism: ScramMechanism


class BeginTransactionRecord(MetadataRecord):
    """Records up to the matching End are applied atomically, or not at all on Abort."""

    api_key: ClassVar[int] = 23
    version: ClassVar[int] = 0

    name: str | None = None


class EndTransactionRecord(MetadataRecord):
    """Ends the open metadata transaction: its records apply together."""

    api_key: ClassVar[int] = 24
    version: ClassVar[int] = 0


class AbortTransactionRecord(MetadataRecord):
    """Aborts the open metadata transaction: its records are discarded."""

    api_key: ClassVar[int] = 25
    version: ClassVar[int] = 0

    reason: str | None = None


class RemoveDelegationTokenRecord(MetadataRecord):
    """A delegation token is deleted."""

    api_key: ClassVar[int] = 26
    version: ClassVar[int] = 0

    token_id: str


class RegisterControllerRecord(MetadataRecord):
    """A KRaft controller registers its endpoints and features."""

    api_key: ClassVar[int] = 27
    version: ClassVar[int] = 0

    controller_id: Int32
    incarnation_id: UUID
    end_points: tuple[BrokerEndpoint, ...] = ()
    features: tuple[BrokerFeature, ...] = ()
