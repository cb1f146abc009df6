"""AutoMQ's failover check: has a partition's stream really moved to its new leader?

A partition *completed its failover* (``automq-image-lifetime.md``, Failover) when:

1. its meta stream id is in the KV map under ``_kafka_<cluster-id>/<topic-id>/<partition>``,
2. that stream exists and is OPENED,
3. the stream's epoch is <= the partition's leader epoch, and
4. the stream's last range is owned by the partition's current leader.

Otherwise the metadata cache answers the partition LEADER_NOT_AVAILABLE so clients retry
instead of reading a stream mid-failover. Partitions without a meta stream entry follow
the cache's policy (plain Kafka: no check).

The (topic, partition) -> stream id index is per-image derived state: built on first use
from the image's KV map, kept while the image lives, and reused by the next image when
its KV map is the very same (unchanged) object.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from broker.metadata import (
    BrokerRegistration,
    DerivedKey,
    MetadataImage,
    NodeWALImage,
    PartitionRegistration,
    StreamMetadata,
    StreamsImage,
    decode_stream_id,
    meta_stream_prefix,
    parse_meta_stream_key,
)
from broker.metadata.records import StreamState

__all__ = [
    "FailoverIndex",
    "FailoverStatus",
    "MissingStreamPolicy",
    "PartitionInFailover",
    "check_partition",
    "failed_nodes",
    "failover_index_key",
    "partitions_in_failover",
]

MissingStreamPolicy = Literal["skip", "unavailable"]
"""What a partition without a meta stream entry gets: ``skip`` (plain Kafka, no check)
or ``unavailable`` (LEADER_NOT_AVAILABLE)."""


class FailoverStatus(enum.Enum):
    """The verdict of the failover check for one partition; only HEALTHY passes."""

    HEALTHY = "healthy"
    NO_META_STREAM = "no meta stream entry"
    STREAM_MISSING = "meta stream does not exist"
    STREAM_CLOSED = "stream is not OPENED"
    EPOCH_AHEAD = "stream epoch is ahead of the leader epoch"
    WRONG_RANGE_OWNER = "last range is not owned by the leader"


class FailoverIndex:
    """Meta stream id by (topic id, partition), parsed from one KV map."""

    __slots__ = ("by_topic", "entries", "kv")

    def __init__(self, cluster_id: str, kv: Mapping[str, bytes]) -> None:
        self.kv = kv
        self.by_topic: dict[UUID, dict[int, int]] = {}
        prefix = meta_stream_prefix(cluster_id)
        entries = 0
        for key, value in kv.items():
            parsed = parse_meta_stream_key(prefix, key)
            if parsed is None:
                continue  # not a partition's meta stream entry
            topic_id, index = parsed
            stream_id = decode_stream_id(value)
            if stream_id is not None:
                self.by_topic.setdefault(topic_id, {})[index] = stream_id
                entries += 1
        self.entries = entries

    def stream_id(self, topic_id: UUID, partition: int) -> int | None:
        streams = self.by_topic.get(topic_id)
        return streams.get(partition) if streams is not None else None


_index_keys: dict[str, DerivedKey[FailoverIndex]] = {}
_index_keys_lock = threading.Lock()


def failover_index_key(cluster_id: str) -> DerivedKey[FailoverIndex]:
    """The derived-state key of the failover index for ``cluster_id`` (one per cluster)."""
    with _index_keys_lock:
        key = _index_keys.get(cluster_id)
        if key is None:
            last: list[FailoverIndex] = []

            def build(image: MetadataImage) -> FailoverIndex:
                kv = image.kv.values
                # Consecutive images share an unchanged KV map: reuse its index then.
                if last and last[0].kv is kv:
                    return last[0]
                index = FailoverIndex(cluster_id, kv)
                last[:] = [index]
                return index

            key = _index_keys[cluster_id] = DerivedKey(f"failover-index:{cluster_id}", build)
        return key


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


def failed_nodes(brokers: Iterable[BrokerRegistration], node_wal: NodeWALImage) -> tuple[int, ...]:
    """Nodes fenced or in failover mode, sorted."""
    fenced = {b.id for b in brokers if b.fenced}
    failing = {node.node_id for node in node_wal.nodes.values() if node.failover_mode}
    return tuple(sorted(fenced | failing))


def partitions_in_failover(
    image: MetadataImage, key: DerivedKey[FailoverIndex]
) -> list[PartitionInFailover]:
    """Partitions with a meta stream that fail the check, in (topic, partition) order."""
    index = image.derived(key)
    streams = image.streams
    topics = image.topics.by_id
    out: list[PartitionInFailover] = []
    for topic_id, partitions in index.by_topic.items():
        topic = topics.get(topic_id)
        if topic is None:
            continue
        for partition_id, partition in topic.partitions.items():
            if partition_id not in partitions:
                continue
            status, stream = check_partition(index, streams, topic_id, partition_id, partition)
            if status is not FailoverStatus.HEALTHY:
                owner = stream.ranges[-1].node_id if stream is not None and stream.ranges else None
                out.append(
                    PartitionInFailover(
                        topic.name, topic_id, partition_id, partition.leader, status, owner
                    )
                )
    out.sort(key=lambda p: (p.topic, p.partition))
    return out
