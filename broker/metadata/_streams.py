"""AutoMQ's parts of the image: streams and their ranges, objects, node WALs, KV."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, NamedTuple
from zlib import crc32

from immutables import Map

from broker._intern import Interner
from broker.metadata._maps import EMPTY_MAP, MapChanges, MapDelta, Reject, sorted_items
from broker.metadata._pieces import (
    ImagePiece,
    MapPiece,
    Part,
    RecordFields,
    encoded_from,
    records_from,
    records_of,
)
from broker.metadata.records import (
    AssignedS3ObjectIdRecord,
    AssignedStreamIdRecord,
    KeyValue,
    KVRecord,
    MetadataRecord,
    NodeWALMetadataRecord,
    RangeRecord,
    RemoveKVRecord,
    RemoveRangeRecord,
    RemoveS3ObjectRecord,
    RemoveS3StreamObjectRecord,
    RemoveS3StreamRecord,
    S3ObjectRecord,
    S3StreamObjectRecord,
    S3StreamRecord,
    StreamState,
    record_encoder,
)

__all__ = [
    "KVDelta",
    "KVImage",
    "NodeWALDelta",
    "NodeWALImage",
    "ObjectsDelta",
    "ObjectsImage",
    "RangeMetadata",
    "StreamMetadata",
    "StreamObject",
    "StreamsDelta",
    "StreamsImage",
]


class RangeMetadata(NamedTuple):
    """A range of a stream: the offsets one node wrote during one stream epoch.

    A NamedTuple, as ``PartitionRegistration``: replay builds one per RangeRecord, and
    a tuple is built and hashed in C (images share one object per value, see
    ``_shared_range``).
    """

    range_index: int
    epoch: int
    start_offset: int
    end_offset: int
    node_id: int


class StreamObject(NamedTuple):
    """An object in object storage holding a range of offsets of one stream (a
    NamedTuple: replay builds one per S3StreamObjectRecord)."""

    object_id: int
    start_offset: int
    end_offset: int
    data_time_ms: int


class StreamMetadata(NamedTuple):
    """One stream: its epoch, state, ranges and objects.

    A NamedTuple, as ``RangeMetadata``: replay builds a new one for every stream, range
    and stream-object record, and a frozen dataclass's ``__init__`` cost several times
    what ``tuple.__new__`` does.
    """

    stream_id: int
    epoch: int
    range_index: int
    start_offset: int
    state: StreamState
    ranges: tuple[RangeMetadata, ...] = ()
    """Sorted by range index; the last one is the range being written."""
    objects: Map[int, StreamObject] = EMPTY_MAP
    """Objects holding committed data of this stream, by object id."""

    @property
    def last_range(self) -> RangeMetadata | None:
        """The newest range of the stream, or None."""
        return self.ranges[-1] if self.ranges else None

    @property
    def end_offset(self) -> int:
        """Offset after the newest data the metadata knows of."""
        ends = [r.end_offset for r in self.ranges]
        ends.extend(o.end_offset for o in self.objects.values())
        return max(ends, default=self.start_offset)

    def objects_overlapping(self, start: int, end: int) -> list[StreamObject]:
        """Objects holding any of ``[start, end)``, in offset order."""
        return sorted(
            (o for o in self.objects.values() if o.start_offset < end and o.end_offset > start),
            key=lambda o: (o.start_offset, o.object_id),
        )

    def with_parts(
        self,
        ranges: tuple[RangeMetadata, ...] | None = None,
        objects: Map[int, StreamObject] | None = None,
    ) -> StreamMetadata:
        """A copy with new ranges and/or objects (cheaper than ``_replace``)."""
        stream_id, epoch, range_index, start_offset, state, old_ranges, old_objects = self
        return _new_tuple(
            StreamMetadata,
            (
                stream_id,
                epoch,
                range_index,
                start_offset,
                state,
                old_ranges if ranges is None else ranges,
                old_objects if objects is None else objects,
            ),
        )

    def ranges_overlapping(self, start: int, end: int) -> list[RangeMetadata]:
        """The ranges that hold offsets in [``start``, ``end``)."""
        return [r for r in self.ranges if r.start_offset < end and r.end_offset > start]

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        return records_from(self._record_fields())

    def encoded(self) -> tuple[bytes, int]:
        """:meth:`write`'s records encoded, without building them (snapshots)."""
        return encoded_from(self._record_fields())

    def _record_fields(self) -> Iterator[RecordFields]:
        stream_id = self.stream_id
        yield (
            S3StreamRecord,
            {
                "stream_id": stream_id,
                "epoch": self.epoch,
                "range_index": self.range_index,
                "start_offset": self.start_offset,
                "state": self.state,
            },
        )
        for r in self.ranges:
            yield (
                RangeRecord,
                {
                    "stream_id": stream_id,
                    "epoch": r.epoch,
                    "range_index": r.range_index,
                    "start_offset": r.start_offset,
                    "end_offset": r.end_offset,
                    "node_id": r.node_id,
                },
            )
        for _, o in sorted_items(self.objects):
            yield (
                S3StreamObjectRecord,
                {
                    "object_id": o.object_id,
                    "stream_id": stream_id,
                    "start_offset": o.start_offset,
                    "end_offset": o.end_offset,
                    "data_time_ms": o.data_time_ms,
                },
            )


_new_tuple = tuple.__new__
_shared_range: Interner[RangeMetadata] = Interner()
_share_range = _shared_range.lookup
"""One range object per value in images: streams' ranges repeat each other (the
simulated broker at 100k partitions held 199k ranges of 8k values)."""


def _with_range(ranges: tuple[RangeMetadata, ...], new: RangeMetadata) -> tuple[RangeMetadata, ...]:
    # Fast paths: the writer updates its current (last) range, or opens the next one.
    if ranges:
        last = ranges[-1].range_index
        if new.range_index == last:
            return (*ranges[:-1], new)
        if new.range_index > last:
            return (*ranges, new)
    else:
        return (new,)
    indexes = [r.range_index for r in ranges]
    at = bisect.bisect_left(indexes, new.range_index)
    if at < len(ranges) and ranges[at].range_index == new.range_index:
        return (*ranges[:at], new, *ranges[at + 1 :])
    return (*ranges[:at], new, *ranges[at:])


@dataclass(frozen=True, slots=True)
class StreamsImage:
    """Streams by id, and the stream id allocator."""

    streams: Map[int, StreamMetadata]
    assigned_stream_id: int
    """High-water mark of the stream id allocator (-1: none assigned yet)."""

    EMPTY: ClassVar[StreamsImage]

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        return records_of(self.write_pieces())

    def write_pieces(self) -> Iterator[Part]:
        """:meth:`write` with the streams as a map piece (see ``_pieces``)."""
        if self.assigned_stream_id >= 0:
            yield AssignedStreamIdRecord(assigned_stream_id=self.assigned_stream_id)
        yield MapPiece("streams", self.streams, _stream_records, _stream_encoded)


StreamsImage.EMPTY = StreamsImage(EMPTY_MAP, -1)


def _stream_records(stream_id: int, stream: StreamMetadata) -> Iterator[MetadataRecord]:
    return stream.write()


def _stream_encoded(stream_id: int, stream: StreamMetadata) -> tuple[bytes, int]:
    return stream.encoded()


def _mention(
    mentioned: dict[int, tuple[set[int], set[int]]], stream_id: int
) -> tuple[set[int], set[int]]:
    """The range indexes and object ids named for ``stream_id`` so far (see
    StreamsDelta.mentioned)."""
    named = mentioned.get(stream_id)
    if named is None:
        named = mentioned[stream_id] = (set(), set())
    return named


class StreamsDelta:
    """Changes to streams, their ranges and objects."""

    __slots__ = ("assigned_stream_id", "image", "mentioned", "streams")

    def __init__(self, image: StreamsImage, *, snapshot: bool = False) -> None:
        self.image = image
        self.streams: MapChanges[int, StreamMetadata] = MapChanges(image.streams)
        self.assigned_stream_id: int | None = None
        self.mentioned: dict[int, tuple[set[int], set[int]]] | None = {} if snapshot else None
        """Per stream: range indexes and object ids records of this delta named, for
        :meth:`finish_snapshot`. Kept by a snapshot's delta only (None otherwise): in a
        log's replay it cost a tenth of the time."""

    @classmethod
    def creating(cls, image: StreamsImage) -> StreamsDelta:
        """A delta that builds ``image`` from nothing (a snapshot load): every entry is new."""
        delta = cls(StreamsImage.EMPTY)
        delta.streams = MapChanges.creating(image.streams)
        delta.assigned_stream_id = (
            image.assigned_stream_id if image.assigned_stream_id >= 0 else None
        )
        # No names kept (not a snapshot's delta): finish_snapshot keeps what it changed,
        # which is everything, as a snapshot naming every range and object would.
        return delta

    def _stream(self, stream_id: int) -> StreamMetadata:
        # MapChanges.get inline: every stream rule but one starts here
        changes = self.streams.changes
        stream = changes[stream_id] if stream_id in changes else self.streams.base.get(stream_id)
        if stream is None:
            raise Reject(f"stream {stream_id} does not exist")
        return stream

    def replay_stream(self, record: S3StreamRecord) -> None:
        # An update keeps the stream's ranges and objects.
        """Fold a ``S3StreamRecord`` into this delta."""
        current = self.streams.get(record.stream_id)
        self.streams.set(
            record.stream_id,
            _new_tuple(
                StreamMetadata,
                (
                    record.stream_id,
                    record.epoch,
                    record.range_index,
                    record.start_offset,
                    record.state,
                    current.ranges if current is not None else (),
                    current.objects if current is not None else EMPTY_MAP,
                ),
            ),
        )
        if self.mentioned is not None:  # a snapshot's delta
            _mention(self.mentioned, record.stream_id)

    def replay_remove_stream(self, record: RemoveS3StreamRecord) -> None:
        """Fold a ``RemoveS3StreamRecord`` into this delta."""
        self._stream(record.stream_id)
        self.streams.delete(record.stream_id)
        if self.mentioned is not None:  # a snapshot's delta
            self.mentioned.pop(record.stream_id, None)

    def replay_range(self, record: RangeRecord) -> None:
        """Fold a ``RangeRecord`` into this delta."""
        stream = self._stream(record.stream_id)
        new = _new_tuple(
            RangeMetadata,
            (
                record.range_index,
                record.epoch,
                record.start_offset,
                record.end_offset,
                record.node_id,
            ),
        )
        new = _share_range(new, new)
        # MapChanges.set inline: the most frequent record of a controller's log
        self.streams.changes[record.stream_id] = stream.with_parts(_with_range(stream.ranges, new))
        if self.mentioned is not None:  # a snapshot's delta
            _mention(self.mentioned, record.stream_id)[0].add(record.range_index)

    def replay_remove_range(self, record: RemoveRangeRecord) -> None:
        """Fold a ``RemoveRangeRecord`` into this delta."""
        stream = self._stream(record.stream_id)
        ranges = tuple(r for r in stream.ranges if r.range_index != record.range_index)
        if len(ranges) == len(stream.ranges):
            raise Reject(f"stream {record.stream_id} has no range {record.range_index}")
        self.streams.set(record.stream_id, stream.with_parts(ranges=ranges))
        if self.mentioned is not None:  # a snapshot's delta
            _mention(self.mentioned, record.stream_id)[0].discard(record.range_index)

    def replay_stream_object(self, record: S3StreamObjectRecord) -> None:
        """Fold a ``S3StreamObjectRecord`` into this delta."""
        stream = self._stream(record.stream_id)
        obj = _new_tuple(
            StreamObject,
            (record.object_id, record.start_offset, record.end_offset, record.data_time_ms),
        )
        self.streams.set(
            record.stream_id,
            stream.with_parts(objects=stream.objects.set(obj.object_id, obj)),
        )
        if self.mentioned is not None:  # a snapshot's delta
            _mention(self.mentioned, record.stream_id)[1].add(record.object_id)

    def replay_remove_stream_object(self, record: RemoveS3StreamObjectRecord) -> None:
        """Fold a ``RemoveS3StreamObjectRecord`` into this delta."""
        stream = self._stream(record.stream_id)
        if record.object_id not in stream.objects:
            raise Reject(f"stream {record.stream_id} has no object {record.object_id}")
        self.streams.set(
            record.stream_id,
            stream.with_parts(objects=stream.objects.delete(record.object_id)),
        )
        if self.mentioned is not None:  # a snapshot's delta
            _mention(self.mentioned, record.stream_id)[1].discard(record.object_id)

    def replay_assigned_stream_id(self, record: AssignedStreamIdRecord) -> None:
        """Fold a ``AssignedStreamIdRecord`` into this delta."""
        self.assigned_stream_id = record.assigned_stream_id

    def finish_snapshot(self) -> None:
        """End of a snapshot: delete every base entry the snapshot did not mention.

        A delta not made for a snapshot keeps no record of the ranges and objects its
        records named: each stream it changed is kept whole, the others are deleted.
        """
        if self.mentioned is None:
            self.streams.finish_snapshot()
        else:
            self._delete_unmentioned(self.mentioned)
        if self.assigned_stream_id is None:
            self.assigned_stream_id = -1

    def _delete_unmentioned(
        self, mentioned_by_stream: dict[int, tuple[set[int], set[int]]]
    ) -> None:
        for stream_id in list(self.streams.keys()):
            mentioned = mentioned_by_stream.get(stream_id)
            if mentioned is None:
                self.streams.delete(stream_id)
                continue
            ranges, objects = mentioned
            stream = self._stream(stream_id)
            kept_ranges = tuple(r for r in stream.ranges if r.range_index in ranges)
            kept_objects = Map({k: v for k, v in stream.objects.items() if k in objects})
            if len(kept_ranges) != len(stream.ranges) or len(kept_objects) != len(stream.objects):
                self.streams.set(stream_id, stream.with_parts(kept_ranges, kept_objects))

    def apply(self) -> StreamsImage:
        """The image with these changes (the base image itself when nothing changed)."""
        streams = self.streams.apply()
        _shared_range.trim()  # shared without the bound check while replaying
        assigned = self.assigned_stream_id
        if assigned is None:
            assigned = self.image.assigned_stream_id
        if streams is self.image.streams and assigned == self.image.assigned_stream_id:
            return self.image
        return StreamsImage(streams, assigned)


@dataclass(frozen=True, slots=True)
class ObjectsImage:
    """Objects in object storage by id, and the object id allocator."""

    objects: Map[int, S3ObjectRecord]
    """Object metadata by object id (the record is the immutable value)."""
    assigned_object_id: int
    """High-water mark of the object id allocator (-1: none assigned yet)."""

    EMPTY: ClassVar[ObjectsImage]

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        if self.assigned_object_id >= 0:
            yield AssignedS3ObjectIdRecord(assigned_s3_object_id=self.assigned_object_id)
        for _, obj in sorted_items(self.objects):
            yield obj


ObjectsImage.EMPTY = ObjectsImage(EMPTY_MAP, -1)


class ObjectsDelta:
    """Changes to objects and the object id allocator."""

    __slots__ = ("assigned_object_id", "image", "objects")

    def __init__(self, image: ObjectsImage) -> None:
        self.image = image
        self.objects: MapChanges[int, S3ObjectRecord] = MapChanges(image.objects)
        self.assigned_object_id: int | None = None

    @classmethod
    def creating(cls, image: ObjectsImage) -> ObjectsDelta:
        """A delta that builds ``image`` from nothing (a snapshot load): every entry is new."""
        delta = cls(ObjectsImage.EMPTY)
        delta.objects = MapChanges.creating(image.objects)
        delta.assigned_object_id = (
            image.assigned_object_id if image.assigned_object_id >= 0 else None
        )
        return delta

    def replay_object(self, record: S3ObjectRecord) -> None:
        """Fold a ``S3ObjectRecord`` into this delta."""
        self.objects.set(record.object_id, record)

    def replay_remove_object(self, record: RemoveS3ObjectRecord) -> None:
        """Fold a ``RemoveS3ObjectRecord`` into this delta."""
        if record.object_id not in self.objects:
            raise Reject(f"object {record.object_id} does not exist")
        self.objects.delete(record.object_id)

    def replay_assigned_object_id(self, record: AssignedS3ObjectIdRecord) -> None:
        """Fold a ``AssignedS3ObjectIdRecord`` into this delta."""
        self.assigned_object_id = record.assigned_s3_object_id

    def finish_snapshot(self) -> None:
        """End of a snapshot: delete every base entry the snapshot did not mention."""
        self.objects.finish_snapshot()
        if self.assigned_object_id is None:
            self.assigned_object_id = -1

    def apply(self) -> ObjectsImage:
        """The image with these changes (the base image itself when nothing changed)."""
        objects = self.objects.apply()
        assigned = self.assigned_object_id
        if assigned is None:
            assigned = self.image.assigned_object_id
        if objects is self.image.objects and assigned == self.image.assigned_object_id:
            return self.image
        return ObjectsImage(objects, assigned)


@dataclass(frozen=True, slots=True)
class NodeWALImage:
    """Nodes' write-ahead-log metadata by node id."""

    nodes: Map[int, NodeWALMetadataRecord]
    """Write-ahead-log metadata by node id: epoch and failover mode."""

    EMPTY: ClassVar[NodeWALImage]

    def in_failover(self, node_id: int) -> bool:
        """Whether node ``node_id`` is in failover mode (its WAL is being taken over)."""
        node = self.nodes.get(node_id)
        return node is not None and node.failover_mode

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        for _, node in sorted_items(self.nodes):
            yield node


NodeWALImage.EMPTY = NodeWALImage(EMPTY_MAP)


class NodeWALDelta(MapDelta[NodeWALImage, MapChanges[int, NodeWALMetadataRecord]]):
    """Changes to nodes' write-ahead-log metadata."""

    __slots__ = ()
    image_type = NodeWALImage
    field = "nodes"

    def replay_node(self, record: NodeWALMetadataRecord) -> None:
        """Fold a ``NodeWALMetadataRecord`` into this delta."""
        self.changes.set(record.node_id, record)


@dataclass(frozen=True, slots=True)
class KVImage:
    """The cluster's KV map (AutoMQ keeps meta stream ids and plans there)."""

    values: Map[str, bytes]

    EMPTY: ClassVar[KVImage]

    def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None."""
        return self.values.get(key)

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        return records_of(self.write_pieces())

    def write_pieces(self) -> Iterator[Part]:
        """:meth:`write` as one piece per ``KVRecord``, in key order.

        A chunk ends after a key whose CRC is 0 modulo ``KV_CHUNK_KEYS`` (or once it
        holds ``KV_CHUNK_MAX_KEYS``): the boundaries depend on the keys, not on their
        positions, so adding or removing a key changes its own chunk only, and a
        snapshot encoder re-encodes that one (a cluster's KV holds a key per partition).
        """
        chunk: list[tuple[str, bytes]] = []
        for item in sorted_items(self.values):
            chunk.append(item)
            if len(chunk) >= KV_CHUNK_MAX_KEYS or not crc32(item[0].encode()) % KV_CHUNK_KEYS:
                yield _kv_piece(chunk)
                chunk = []
        if chunk:
            yield _kv_piece(chunk)


KV_CHUNK_KEYS = 1000
"""Keys per ``KVRecord`` a snapshot writes, on average (small records, few of them)."""
KV_CHUNK_MAX_KEYS = 4 * KV_CHUNK_KEYS


def _kv_piece(chunk: list[tuple[str, bytes]]) -> ImagePiece:
    items = tuple(chunk)
    return ImagePiece(
        ("kv", items[0][0]), items, _kv_records, (items,), by_value=True, encoded=_kv_encoded
    )


def _kv_records(items: tuple[tuple[str, bytes], ...]) -> tuple[KVRecord]:
    return (KVRecord(key_values=tuple(KeyValue(key=k, value=v) for k, v in items)),)


def _kv_encoded(items: tuple[tuple[str, bytes], ...]) -> tuple[bytes, int]:
    # A KeyValue is encoded as its fields in order: the (key, value) item itself.
    return _encode_kv(key_values=items), 1


_encode_kv = record_encoder(KVRecord)


KVImage.EMPTY = KVImage(EMPTY_MAP)


class KVDelta(MapDelta[KVImage, MapChanges[str, bytes]]):
    """Changes to the KV map."""

    __slots__ = ()
    image_type = KVImage
    field = "values"

    def replay_kv(self, record: KVRecord) -> None:
        """Fold a ``KVRecord`` into this delta."""
        for kv in record.key_values:
            self.changes.set(kv.key, kv.value)

    def replay_remove_kv(self, record: RemoveKVRecord) -> None:
        """Fold a ``RemoveKVRecord`` into this delta."""
        for key in record.keys:
            self.changes.delete(key)
