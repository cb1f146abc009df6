"""Metadata records: the entries of the metadata log.

Each record type is a frozen pydantic model that knows its Kafka ``api_key`` and
``version``. Kafka's core types keep Apache Kafka's apiKeys; AutoMQ's types get our own
stable ids in the 500s (AutoMQ renumbered them between releases), listed in
``AUTOMQ_RECORD_IDS`` and the README.

Field names are Kafka's, in snake case. Lists are tuples so records are hashable values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AUTOMQ_RECORD_IDS",
    "METADATA_VERSION_FEATURE",
    "NO_LEADER",
    "NO_LEADER_CHANGE",
    "RECORD_TYPES",
    "AbortTransactionRecord",
    "AccessControlEntryRecord",
    "AssignedS3ObjectIdRecord",
    "AssignedStreamIdRecord",
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
    "KVRecord",
    "KeyValue",
    "LeaderRecoveryState",
    "MetadataRecord",
    "NoOpRecord",
    "NodeWALMetadataRecord",
    "PartitionChangeRecord",
    "PartitionRecord",
    "ProducerIdsRecord",
    "RangeRecord",
    "RecordBatch",
    "RegisterBrokerRecord",
    "RegisterControllerRecord",
    "RemoveAccessControlEntryRecord",
    "RemoveDelegationTokenRecord",
    "RemoveKVRecord",
    "RemoveRangeRecord",
    "RemoveS3ObjectRecord",
    "RemoveS3StreamObjectRecord",
    "RemoveS3StreamRecord",
    "RemoveTopicRecord",
    "RemoveUserScramCredentialRecord",
    "S3ObjectRecord",
    "S3ObjectState",
    "S3StreamObjectRecord",
    "S3StreamRecord",
    "ScramMechanism",
    "StreamState",
    "TopicRecord",
    "UnfenceBrokerRecord",
    "UnregisterBrokerRecord",
    "UserScramCredentialRecord",
]

Int8 = Annotated[int, Field(ge=-(2**7), le=2**7 - 1)]
Int16 = Annotated[int, Field(ge=-(2**15), le=2**15 - 1)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
UInt16 = Annotated[int, Field(ge=0, le=2**16 - 1)]
# Non-negative ids and offsets (constraints inside Annotated win over an outer Field).
Id32 = Annotated[int, Field(ge=0, le=2**31 - 1)]
Id64 = Annotated[int, Field(ge=0, le=2**63 - 1)]
Level16 = Annotated[int, Field(ge=0, le=2**15 - 1)]
Int32s = tuple[Int32, ...]

NO_LEADER = -1
"""``leader`` value meaning the partition has no leader."""
NO_LEADER_CHANGE = -2
"""``PartitionChangeRecord.leader`` value meaning the leader did not change."""
METADATA_VERSION_FEATURE = "metadata.version"


class ConfigResourceType(enum.IntEnum):
    """Kafka's ConfigResource.Type ids as stored in ConfigRecord."""

    UNKNOWN = 0
    TOPIC = 2
    BROKER = 4
    BROKER_LOGGER = 8
    CLIENT_METRICS = 16
    GROUP = 32


class LeaderRecoveryState(enum.IntEnum):
    RECOVERED = 0
    RECOVERING = 1


class ScramMechanism(enum.IntEnum):
    SCRAM_SHA_256 = 1
    SCRAM_SHA_512 = 2


class StreamState(enum.IntEnum):
    """AutoMQ stream state: a stream is written only while OPENED by its owner."""

    OPENED = 0
    CLOSED = 1


class S3ObjectState(enum.IntEnum):
    UNINITIALIZED = 0
    PREPARED = 1
    COMMITTED = 2
    MARK_DESTROYED = 3
    DESTROYED = 4


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class MetadataRecord(_Model):
    """Base of every record type; ``api_key`` and ``version`` identify the schema."""

    api_key: ClassVar[int]
    version: ClassVar[int]

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


# --- Kafka core records ------------------------------------------------------------


class BrokerEndpoint(_Model):
    name: str
    """Listener name, e.g. ``PLAINTEXT``."""
    host: str
    port: UInt16
    security_protocol: Int16 = 0
    """Kafka SecurityProtocol id (0 = PLAINTEXT)."""


class BrokerFeature(_Model):
    name: str
    min_supported_version: Int16
    max_supported_version: Int16


class RegisterBrokerRecord(MetadataRecord):
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
    api_key: ClassVar[int] = 1
    version: ClassVar[int] = 0

    broker_id: Int32
    broker_epoch: Int64
    """Must equal the registered epoch, or the record is rejected."""


class TopicRecord(MetadataRecord):
    api_key: ClassVar[int] = 2
    version: ClassVar[int] = 0

    name: str = Field(min_length=1, max_length=249)
    topic_id: UUID


class PartitionRecord(MetadataRecord):
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
    api_key: ClassVar[int] = 7
    version: ClassVar[int] = 0

    id: Int32
    epoch: Int64


class UnfenceBrokerRecord(MetadataRecord):
    api_key: ClassVar[int] = 8
    version: ClassVar[int] = 0

    id: Int32
    epoch: Int64


class RemoveTopicRecord(MetadataRecord):
    api_key: ClassVar[int] = 9
    version: ClassVar[int] = 0

    topic_id: UUID


class DelegationTokenRecord(MetadataRecord):
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
    api_key: ClassVar[int] = 11
    version: ClassVar[int] = 0

    name: str
    mechanism: ScramMechanism
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: Int32


class FeatureLevelRecord(MetadataRecord):
    api_key: ClassVar[int] = 12
    version: ClassVar[int] = 0

    name: str = Field(min_length=1)
    feature_level: Level16
    """Level 0 removes the feature."""


class ClientQuotaEntity(_Model):
    entity_type: str
    entity_name: str | None = None
    """``None`` is the default entity."""


class ClientQuotaRecord(MetadataRecord):
    api_key: ClassVar[int] = 14
    version: ClassVar[int] = 0

    entity: tuple[ClientQuotaEntity, ...]
    key: str
    value: float
    remove: bool = False


class ProducerIdsRecord(MetadataRecord):
    api_key: ClassVar[int] = 15
    version: ClassVar[int] = 0

    broker_id: Int32
    broker_epoch: Int64 = -1
    next_producer_id: Id64


class BrokerRegistrationChangeRecord(MetadataRecord):
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
    api_key: ClassVar[int] = 19
    version: ClassVar[int] = 0

    id: UUID


class NoOpRecord(MetadataRecord):
    api_key: ClassVar[int] = 20
    version: ClassVar[int] = 0


class RemoveUserScramCredentialRecord(MetadataRecord):
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
    api_key: ClassVar[int] = 24
    version: ClassVar[int] = 0


class AbortTransactionRecord(MetadataRecord):
    api_key: ClassVar[int] = 25
    version: ClassVar[int] = 0

    reason: str | None = None


class RemoveDelegationTokenRecord(MetadataRecord):
    api_key: ClassVar[int] = 26
    version: ClassVar[int] = 0

    token_id: str


class RegisterControllerRecord(MetadataRecord):
    api_key: ClassVar[int] = 27
    version: ClassVar[int] = 0

    controller_id: Int32
    incarnation_id: UUID
    end_points: tuple[BrokerEndpoint, ...] = ()
    features: tuple[BrokerFeature, ...] = ()


# --- AutoMQ records (our own stable ids) -------------------------------------------


class S3StreamRecord(MetadataRecord):
    """Creates a stream or updates its epoch, current range index, start offset, state.

    In a log an update keeps the stream's ranges and objects; a snapshot lists them
    after the stream (see ``MetadataDelta.finish_snapshot``).
    """

    api_key: ClassVar[int] = 501
    version: ClassVar[int] = 0

    stream_id: Id64
    epoch: Id64
    range_index: Int32 = -1
    start_offset: Id64 = 0
    state: StreamState = StreamState.OPENED


class RemoveS3StreamRecord(MetadataRecord):
    api_key: ClassVar[int] = 502
    version: ClassVar[int] = 0

    stream_id: Id64


class RangeRecord(MetadataRecord):
    """A range of a stream written by one node during one stream epoch."""

    api_key: ClassVar[int] = 503
    version: ClassVar[int] = 0

    stream_id: Id64
    epoch: Id64
    range_index: Id32
    start_offset: Id64
    end_offset: Id64
    node_id: Int32
    """The node that owns (writes) this range."""


class RemoveRangeRecord(MetadataRecord):
    api_key: ClassVar[int] = 504
    version: ClassVar[int] = 0

    stream_id: Id64
    range_index: Id32


class S3StreamObjectRecord(MetadataRecord):
    """An object in object storage that holds ``[start_offset, end_offset)`` of a stream."""

    api_key: ClassVar[int] = 505
    version: ClassVar[int] = 0

    object_id: Id64
    stream_id: Id64
    start_offset: Id64
    end_offset: Id64
    data_time_ms: Int64 = 0


class RemoveS3StreamObjectRecord(MetadataRecord):
    api_key: ClassVar[int] = 506
    version: ClassVar[int] = 0

    stream_id: Id64
    object_id: Id64


class S3ObjectRecord(MetadataRecord):
    api_key: ClassVar[int] = 507
    version: ClassVar[int] = 0

    object_id: Id64
    object_size: Id64 = 0
    state: S3ObjectState
    prepared_timestamp: Int64 = 0
    committed_timestamp: Int64 = 0
    expired_timestamp: Int64 = 0
    mark_destroyed_timestamp: Int64 = 0


class RemoveS3ObjectRecord(MetadataRecord):
    api_key: ClassVar[int] = 508
    version: ClassVar[int] = 0

    object_id: Id64


class NodeWALMetadataRecord(MetadataRecord):
    api_key: ClassVar[int] = 509
    version: ClassVar[int] = 0

    node_id: Int32
    node_epoch: Int64
    failover_mode: bool = False
    """True while another node takes over this node's write-ahead log."""


class AssignedStreamIdRecord(MetadataRecord):
    api_key: ClassVar[int] = 510
    version: ClassVar[int] = 0

    assigned_stream_id: Id64
    """High-water mark of the stream id allocator."""


class AssignedS3ObjectIdRecord(MetadataRecord):
    api_key: ClassVar[int] = 511
    version: ClassVar[int] = 0

    assigned_s3_object_id: Id64


class KeyValue(_Model):
    key: str = Field(min_length=1)
    value: bytes


class KVRecord(MetadataRecord):
    api_key: ClassVar[int] = 512
    version: ClassVar[int] = 0

    key_values: tuple[KeyValue, ...] = Field(min_length=1)


class RemoveKVRecord(MetadataRecord):
    api_key: ClassVar[int] = 513
    version: ClassVar[int] = 0

    keys: tuple[str, ...] = Field(min_length=1)


def _registry() -> Mapping[int, type[MetadataRecord]]:
    types: dict[int, type[MetadataRecord]] = {}
    pending: list[type[MetadataRecord]] = list(MetadataRecord.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.api_key in types:  # a duplicate id would silently decode as the wrong type
            raise AssertionError(f"api_key {cls.api_key} used twice")
        types[cls.api_key] = cls
    return MappingProxyType(dict(sorted(types.items())))


RECORD_TYPES: Mapping[int, type[MetadataRecord]] = _registry()
"""Every record type by api key."""

AUTOMQ_RECORD_IDS: Mapping[str, int] = MappingProxyType(
    {cls.__name__: key for key, cls in RECORD_TYPES.items() if key >= 500}
)
"""The ids we assigned to AutoMQ's record types (AutoMQ itself renumbered them)."""


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Records appended together; record ``i`` has offset ``base_offset + i``."""

    base_offset: int
    epoch: int
    append_time_ms: int
    records: tuple[MetadataRecord, ...]
    encoded_size: int | None = field(default=None, compare=False)
    """Bytes of the batch's frame, when it was read from an encoding (None otherwise)."""

    def __post_init__(self) -> None:
        if self.base_offset < 0:
            raise ValueError(f"base_offset must be >= 0, got {self.base_offset}")
        if not self.records:
            raise ValueError("a record batch holds at least one record")

    @property
    def last_offset(self) -> int:
        return self.base_offset + len(self.records) - 1

    @property
    def next_offset(self) -> int:
        return self.base_offset + len(self.records)
