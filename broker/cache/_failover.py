"""AutoMQ's failover check: has a partition's stream really moved to its new leader?

A partition *completed its failover* (``automq-image-lifetime.md``, Failover) when:

1. its meta stream id is in the KV map under ``_kafka_<cluster-id>/<topic-id>/<partition>``,
2. that stream exists and is OPENED,
3. the stream's epoch is <= the partition's leader epoch, and
4. the stream's last range is owned by the partition's current leader.

Otherwise the metadata cache answers the partition LEADER_NOT_AVAILABLE so clients retry
instead of reading a stream mid-failover. Partitions without a meta stream entry follow
the cache's policy (plain Kafka: no check).

Per image, a :class:`FailoverState` holds the (topic, partition) <-> stream index and the
partitions mid-failover. It is derived state that follows the delta: the next image's
state re-checks only the partitions whose KV entry, stream or registration the delta
touched, so neither a new image nor a failover check ever scans every partition.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from immutables import Map

from broker.metadata import (
    BrokerRegistration,
    DerivedKey,
    MetadataDelta,
    MetadataImage,
    NodeWALImage,
    PartitionRegistration,
    StreamMetadata,
    StreamsImage,
    TopicImage,
    decode_stream_id,
    meta_stream_prefix,
    parse_meta_stream_key,
)
from broker.metadata.records import StreamState

__all__ = [
    "FailoverIndex",
    "FailoverState",
    "FailoverStatus",
    "MissingStreamPolicy",
    "PartitionInFailover",
    "TopicPartitionKey",
    "check_partition",
    "failed_nodes",
    "failover_state_key",
    "partitions_in_failover",
]

MissingStreamPolicy = Literal["skip", "unavailable"]
"""What a partition without a meta stream entry gets: ``skip`` (plain Kafka, no check)
or ``unavailable`` (LEADER_NOT_AVAILABLE)."""

TopicPartitionKey = tuple[UUID, int]
"""A partition as (topic id, partition index)."""


class FailoverStatus(enum.Enum):
    """The verdict of the failover check for one partition; only HEALTHY passes."""

    HEALTHY = "healthy"
    NO_META_STREAM = "no meta stream entry"
    STREAM_MISSING = "meta stream does not exist"
    STREAM_CLOSED = "stream is not OPENED"
    EPOCH_AHEAD = "stream epoch is ahead of the leader epoch"
    WRONG_RANGE_OWNER = "last range is not owned by the leader"


class FailoverIndex:
    """Meta stream id by partition and partition by stream id, from one KV map.

    Persistent maps keyed by topic id and by stream id (cheap keys to hash): an index that
    follows a KV change shares everything else with the index it came from.
    """

    __slots__ = ("by_stream", "by_topic", "entries")

    def __init__(
        self,
        by_topic: Map[UUID, tuple[int | None, ...]],
        by_stream: Map[int, tuple[TopicPartitionKey, ...]],
        entries: int,
    ) -> None:
        self.by_topic = by_topic
        """Per topic, the meta stream id of each partition index (None: no entry)."""
        self.by_stream = by_stream
        """The partitions whose meta stream each stream is (one, unless the KV map is
        inconsistent: every one of them is re-checked when the stream changes)."""
        self.entries = entries
        """Partitions with a meta stream entry."""

    @classmethod
    def build(cls, cluster_id: str, kv: Mapping[str, bytes]) -> FailoverIndex:
        """The index of every meta stream entry of ``cluster_id`` in ``kv`` (a full scan)."""
        prefix = meta_stream_prefix(cluster_id)
        by_topic: dict[UUID, list[int | None]] = {}
        by_stream: dict[int, tuple[TopicPartitionKey, ...]] = {}
        for key, value in kv.items():
            parsed = parse_meta_stream_key(prefix, key)
            stream_id = decode_stream_id(value) if parsed is not None else None
            if parsed is None or stream_id is None:
                continue
            topic_id, partition = parsed
            streams = by_topic.setdefault(topic_id, [])
            if len(streams) <= partition:
                streams.extend([None] * (partition + 1 - len(streams)))
            streams[partition] = stream_id
            by_stream[stream_id] = (*by_stream.get(stream_id, ()), parsed)
        topics = Map({topic_id: tuple(streams) for topic_id, streams in by_topic.items()})
        entries = sum(len(partitions) for partitions in by_stream.values())
        return cls(topics, Map(by_stream), entries)

    def stream_id(self, topic_id: UUID, partition: int) -> int | None:
        """The meta stream id of a partition, if it has an entry."""
        streams = self.by_topic.get(topic_id)
        return streams[partition] if streams is not None and partition < len(streams) else None

    def has_entry(self, topic_id: UUID, partition: int) -> bool:
        """Whether the partition has a meta stream entry."""
        return self.stream_id(topic_id, partition) is not None

    def partitions_of(self, stream_id: int) -> tuple[TopicPartitionKey, ...]:
        """The partitions whose meta stream ``stream_id`` is (usually one, or none)."""
        return self.by_stream.get(stream_id, ())

    def following(
        self, prefix: str, kv: Mapping[str, bytes], keys: Iterable[str]
    ) -> tuple[FailoverIndex, set[TopicPartitionKey]]:
        """The index after the KV ``keys`` changed to what ``kv`` holds now, and the
        partitions whose entry changed."""
        touched: set[TopicPartitionKey] = set()
        topics: dict[UUID, list[int | None]] = {}
        by_stream = self.by_stream.mutate()
        entries = self.entries
        for key in keys:
            partition = parse_meta_stream_key(prefix, key)
            if partition is None:
                continue
            touched.add(partition)
            topic_id, index = partition
            streams = topics.get(topic_id)
            if streams is None:
                streams = topics[topic_id] = list(self.by_topic.get(topic_id, ()))
            if len(streams) <= index:
                streams.extend([None] * (index + 1 - len(streams)))
            old = streams[index]
            if old is not None:
                entries -= 1
                remaining = tuple(p for p in by_stream.get(old, ()) if p != partition)
                if remaining:
                    by_stream[old] = remaining
                else:
                    by_stream.pop(old, None)
            value = kv.get(key)
            stream_id = decode_stream_id(value) if value is not None else None
            streams[index] = stream_id
            if stream_id is not None:
                entries += 1
                by_stream[stream_id] = (*by_stream.get(stream_id, ()), partition)
        if not touched:
            return self, touched
        by_topic = self.by_topic.mutate()
        for topic_id, streams in topics.items():
            while streams and streams[-1] is None:
                streams.pop()
            if streams:
                by_topic[topic_id] = tuple(streams)
            else:
                by_topic.pop(topic_id, None)
        return FailoverIndex(by_topic.finish(), by_stream.finish(), entries), touched


def check_partition(
    index: FailoverIndex,
    streams: StreamsImage,
    topic_id: UUID,
    partition_id: int,
    partition: PartitionRegistration,
) -> tuple[FailoverStatus, StreamMetadata | None]:
    """The AutoMQ rule for one partition, on one image's index and streams."""
    stream_id = index.stream_id(topic_id, partition_id)
    if stream_id is None:
        return FailoverStatus.NO_META_STREAM, None
    stream = streams.streams.get(stream_id)
    if stream is None:
        return FailoverStatus.STREAM_MISSING, None
    if stream.state is not StreamState.OPENED:
        return FailoverStatus.STREAM_CLOSED, stream
    if stream.epoch > partition.leader_epoch:
        return FailoverStatus.EPOCH_AHEAD, stream
    ranges = stream.ranges
    if not ranges or ranges[-1].node_id != partition.leader:
        return FailoverStatus.WRONG_RANGE_OWNER, stream
    return FailoverStatus.HEALTHY, stream


@dataclass(frozen=True, slots=True)
class PartitionInFailover:
    """A partition whose stream has not moved to its leader yet, and what it waits on."""

    topic: str
    topic_id: UUID
    partition: int
    leader: int
    status: FailoverStatus
    waiting_on: int | None
    """The node that still owns the stream's last range (the failed node), if known."""


class FailoverState:
    """One image's failover facts: the index and the partitions mid-failover."""

    __slots__ = ("changed", "cluster_id", "in_failover", "index")

    def __init__(
        self,
        cluster_id: str,
        index: FailoverIndex,
        in_failover: Map[TopicPartitionKey, PartitionInFailover],
        changed: frozenset[TopicPartitionKey] | None,
    ) -> None:
        self.cluster_id = cluster_id
        self.index = index
        self.in_failover = in_failover
        """Partitions with a meta stream that fail the check."""
        self.changed = changed
        """Partitions whose verdict may differ from the predecessor image's (their entry
        or their check changed); None when this state was built cold."""

    def passes(self, topic_id: UUID, partition: int, missing_stream: MissingStreamPolicy) -> bool:
        """The verdict the cache answers with: True when the leader may be reported."""
        if (topic_id, partition) in self.in_failover:
            return False
        return missing_stream == "skip" or self.index.has_entry(topic_id, partition)

    @classmethod
    def build(cls, cluster_id: str, image: MetadataImage) -> FailoverState:
        """Check every partition with a meta stream entry (a full scan: a cold image)."""
        index = FailoverIndex.build(cluster_id, image.kv.values)
        in_failover: dict[TopicPartitionKey, PartitionInFailover] = {}
        topics = image.topics.by_id
        streams = image.streams
        for topic_id, stream_ids in index.by_topic.items():
            topic = topics.get(topic_id)
            for partition_id, stream_id in enumerate(stream_ids):
                if stream_id is None:
                    continue
                found = _failing(index, streams, topic, topic_id, partition_id)
                if found is not None:
                    in_failover[(topic_id, partition_id)] = found
        return cls(cluster_id, index, Map(in_failover), None)

    def following(self, delta: MetadataDelta, image: MetadataImage) -> FailoverState:
        """The state of ``image`` (``delta`` applied to this state's image): only the
        partitions whose KV entry, stream or registration changed are checked again."""
        index, touched = self.index.following(
            meta_stream_prefix(self.cluster_id), image.kv.values, delta.changed_kv_keys()
        )
        for stream_id in delta.changed_stream_ids():
            touched.update(index.partitions_of(stream_id))
            touched.update(self.index.partitions_of(stream_id))
        for topic_id, partitions in delta.changed_topics().items():
            if partitions is None:  # created, re-created or deleted: every partition
                for topics in (image.topics.by_id, delta.image.topics.by_id):
                    topic = topics.get(topic_id)
                    if topic is not None:
                        touched.update((topic_id, p) for p in topic.partitions)
            else:
                touched.update((topic_id, p) for p in partitions)
        if not touched:
            return (
                self
                if index is self.index
                else FailoverState(self.cluster_id, index, self.in_failover, frozenset())
            )
        in_failover = self.in_failover.mutate()
        changed: set[TopicPartitionKey] = set()
        topics = image.topics.by_id
        for key in touched:
            topic_id, partition_id = key
            before = (key in self.in_failover, self.index.has_entry(topic_id, partition_id))
            found = _failing(index, image.streams, topics.get(topic_id), topic_id, partition_id)
            if found is None:
                in_failover.pop(key, None)
            else:
                in_failover[key] = found
            if before != (found is not None, index.has_entry(topic_id, partition_id)):
                changed.add(key)
        return FailoverState(self.cluster_id, index, in_failover.finish(), frozenset(changed))


def _failing(
    index: FailoverIndex,
    streams: StreamsImage,
    topic: TopicImage | None,
    topic_id: UUID,
    partition_id: int,
) -> PartitionInFailover | None:
    """The partition as mid-failover, or None when it passes (or no longer exists)."""
    if topic is None:
        return None
    partition = topic.partitions.get(partition_id)
    if partition is None:
        return None
    status, stream = check_partition(index, streams, topic_id, partition_id, partition)
    if status in (FailoverStatus.HEALTHY, FailoverStatus.NO_META_STREAM):
        return None
    owner = stream.ranges[-1].node_id if stream is not None and stream.ranges else None
    return PartitionInFailover(topic.name, topic_id, partition_id, partition.leader, status, owner)


_state_keys: dict[str, DerivedKey[FailoverState]] = {}
_state_keys_lock = threading.Lock()


def failover_state_key(cluster_id: str) -> DerivedKey[FailoverState]:
    """The derived-state key of the failover state for ``cluster_id`` (one per cluster)."""
    with _state_keys_lock:
        key = _state_keys.get(cluster_id)
        if key is None:
            key = _state_keys[cluster_id] = DerivedKey(
                f"failover-state:{cluster_id}",
                lambda image: FailoverState.build(cluster_id, image),
                lambda state, delta, image: state.following(delta, image),
            )
        return key


def failed_nodes(brokers: Iterable[BrokerRegistration], node_wal: NodeWALImage) -> tuple[int, ...]:
    """Nodes fenced or in failover mode, sorted."""
    fenced = {b.id for b in brokers if b.fenced}
    failing = {node.node_id for node in node_wal.nodes.values() if node.failover_mode}
    return tuple(sorted(fenced | failing))


def partitions_in_failover(image: MetadataImage, cluster_id: str) -> list[PartitionInFailover]:
    """Partitions with a meta stream that fail the check, in (topic, partition) order.

    Reads the image's failover state: the cost is the number of such partitions.
    """
    state = image.derived(failover_state_key(cluster_id))
    return sorted(state.in_failover.values(), key=lambda p: (p.topic, p.partition))
