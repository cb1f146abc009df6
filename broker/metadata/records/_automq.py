"""AutoMQ's metadata record types, with our own stable ids in the 500s.

AutoMQ renumbered its record types between releases, so we assign our own ids (listed in
``AUTOMQ_RECORD_IDS`` and the README).
"""

from __future__ import annotations

import enum
from typing import ClassVar

from pydantic import Field

from broker.metadata.records._base import Id32, Id64, Int32, Int64, MetadataRecord, _Model

__all__ = [
    "AssignedS3ObjectIdRecord",
    "AssignedStreamIdRecord",
    "KVRecord",
    "KeyValue",
    "NodeWALMetadataRecord",
    "RangeRecord",
    "RemoveKVRecord",
    "RemoveRangeRecord",
    "RemoveS3ObjectRecord",
    "RemoveS3StreamObjectRecord",
    "RemoveS3StreamRecord",
    "S3ObjectRecord",
    "S3ObjectState",
    "S3StreamObjectRecord",
    "S3StreamRecord",
    "StreamState",
]


class StreamState(enum.IntEnum):
    """AutoMQ stream state: a stream is written only while OPENED by its owner."""

    OPENED = 0
    CLOSED = 1


class S3ObjectState(enum.IntEnum):
    """Lifecycle of an object in object storage."""

    UNINITIALIZED = 0
    PREPARED = 1
    COMMITTED = 2
    MARK_DESTROYED = 3
    DESTROYED = 4


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
    """A stream is deleted with its ranges and objects."""

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
    """A range of a stream is dropped (retention)."""

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
    """An object no longer holds data of a stream."""

    api_key: ClassVar[int] = 506
    version: ClassVar[int] = 0

    stream_id: Id64
    object_id: Id64


class S3ObjectRecord(MetadataRecord):
    """An object in object storage is created or changes state."""

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
    """An object is deleted from the metadata."""

    api_key: ClassVar[int] = 508
    version: ClassVar[int] = 0

    object_id: Id64


class NodeWALMetadataRecord(MetadataRecord):
    """A node's write-ahead log: its epoch, and whether another node is failing it over."""

    api_key: ClassVar[int] = 509
    version: ClassVar[int] = 0

    node_id: Int32
    node_epoch: Int64
    failover_mode: bool = False
    """True while another node takes over this node's write-ahead log."""


class AssignedStreamIdRecord(MetadataRecord):
    """The stream id allocator moved its high-water mark."""

    api_key: ClassVar[int] = 510
    version: ClassVar[int] = 0

    assigned_stream_id: Id64
    """High-water mark of the stream id allocator."""


class AssignedS3ObjectIdRecord(MetadataRecord):
    """The object id allocator moved its high-water mark."""

    api_key: ClassVar[int] = 511
    version: ClassVar[int] = 0

    assigned_s3_object_id: Id64


class KeyValue(_Model):
    """One key and its value bytes in a KVRecord."""

    key: str = Field(min_length=1)
    value: bytes


class KVRecord(MetadataRecord):
    """Sets keys of the cluster's KV map (AutoMQ stores meta stream ids and plans there)."""

    api_key: ClassVar[int] = 512
    version: ClassVar[int] = 0

    key_values: tuple[KeyValue, ...] = Field(min_length=1)


class RemoveKVRecord(MetadataRecord):
    """Deletes keys of the cluster's KV map."""

    api_key: ClassVar[int] = 513
    version: ClassVar[int] = 0

    keys: tuple[str, ...] = Field(min_length=1)
