"""AutoMQ's failover check, and the monitor that watches failovers complete.

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
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

import anyio
import structlog

from broker.metadata import (
    BrokerRegistration,
    DerivedKey,
    HoldingConsumer,
    MetadataImage,
    MetadataUpdate,
    NodeWALImage,
    PartitionRegistration,
    StreamMetadata,
    StreamsImage,
    StreamState,
)
from broker.metadata._tasks import Notifier, single_cause

__all__ = [
    "FailoverIndex",
    "FailoverMonitor",
    "FailoverStatistics",
    "FailoverStatus",
    "MissingStreamPolicy",
    "PartitionInFailover",
    "check_partition",
    "failover_index_key",
]

logger = structlog.get_logger(__name__)

SAMPLE = 10
"""Partitions named in one monitor event; the count says how many there were."""

MissingStreamPolicy = Literal["skip", "unavailable"]
"""What a partition without a meta stream entry gets: ``skip`` (plain Kafka, no check)
or ``unavailable`` (LEADER_NOT_AVAILABLE)."""


class FailoverStatus(enum.Enum):
    HEALTHY = "healthy"
    NO_META_STREAM = "no meta stream entry"
    STREAM_MISSING = "meta stream does not exist"
    STREAM_CLOSED = "stream is not OPENED"
    EPOCH_AHEAD = "stream epoch is ahead of the leader epoch"
    WRONG_RANGE_OWNER = "last range is not owned by the leader"


def _decode_stream_id(value: bytes) -> int | None:
    return int.from_bytes(value, "big", signed=True) if len(value) == 8 else None


class FailoverIndex:
    """Meta stream id by (topic id, partition), parsed from one KV map."""

    __slots__ = ("by_topic", "entries", "kv")

    def __init__(self, cluster_id: str, kv: Mapping[str, bytes]) -> None:
        self.kv = kv
        self.by_topic: dict[UUID, dict[int, int]] = {}
        prefix = f"_kafka_{cluster_id}/"
        entries = 0
        for key, value in kv.items():
            if not key.startswith(prefix):
                continue
            topic, _, partition = key[len(prefix) :].partition("/")
            stream_id = _decode_stream_id(value)
            try:
                topic_id, index = UUID(topic), int(partition)
            except ValueError:
                continue  # not a partition's meta stream entry
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
    topic: str
    topic_id: UUID
    partition: int
    leader: int
    status: FailoverStatus
    waiting_on: int | None
    """The node that still owns the stream's last range (the failed node), if known."""


@dataclass(frozen=True, slots=True)
class FailoverStatistics:
    checks: int
    last_offset: int
    partitions_in_failover: int
    failed_nodes: tuple[int, ...]
    """Nodes fenced or in failover mode."""
    completed: int
    """Partitions that completed a failover since the monitor started."""


class FailoverMonitor(HoldingConsumer, anyio.AsyncContextManagerMixin):
    """Watches partitions whose failover has not completed yet, and reports completions.

    A latest-image consumer: each new image (and every ``interval`` seconds) triggers
    one check of the newest image, on a lease. ``async with monitor:`` runs its task.
    """

    def __init__(
        self, cluster_id: str, *, interval: float = 1.0, name: str = "failover-monitor"
    ) -> None:
        super().__init__(name)
        self.cluster_id = cluster_id
        self.interval = interval
        self._key = failover_index_key(cluster_id)
        self._new_image = Notifier()
        self._checked = Notifier()
        self._in_failover: dict[tuple[UUID, int], tuple[PartitionInFailover, float]] = {}
        self._checks = 0
        self._completed = 0
        self._last_offset = -1
        self._failed_nodes: tuple[int, ...] = ()

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        await super().on_metadata_update(update)
        self._new_image.notify()

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[FailoverMonitor]:
        with single_cause():
            try:
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(self._run)
                    try:
                        yield self
                    finally:
                        task_group.cancel_scope.cancel()
            finally:
                self.close()

    async def _run(self) -> None:
        while True:
            with anyio.move_on_after(self.interval):
                await self._new_image.wait()
            if self._holder.offset >= 0 and self._holder.offset != self._last_offset:
                self.check()

    async def wait_checked(self, offset: int) -> None:
        """Wait until a check ran on an image at ``offset`` or later."""
        while self._last_offset < offset:
            await self._checked.wait()

    def check(self) -> list[PartitionInFailover]:
        """Check the newest image now; returns the partitions still in failover."""
        with self._holder.lease() as image:
            now = time.monotonic()
            current = scan(image, self._key)
            failed = failed_nodes(image.cluster.brokers.values(), image.node_wal)
            offset = image.offset
        seen = {(p.topic_id, p.partition): p for p in current}
        completed = [
            (partition, now - since)
            for key, (partition, since) in self._in_failover.items()
            if key not in seen
        ]
        started = [p for key, p in seen.items() if key not in self._in_failover]
        for partition, _ in completed:
            del self._in_failover[(partition.topic_id, partition.partition)]
        for partition in started:
            self._in_failover[(partition.topic_id, partition.partition)] = (partition, now)
        self._completed += len(completed)
        # One event per check, not per partition: a node failover moves thousands.
        if started:
            logger.info(
                "partitions_in_failover",
                count=len(started),
                offset=offset,
                reasons=sorted({p.status.value for p in started}),
                waiting_on=sorted({p.waiting_on for p in started if p.waiting_on is not None}),
                sample=[f"{p.topic}-{p.partition}" for p in started[:SAMPLE]],
            )
        if completed:
            logger.info(
                "failover_completed",
                count=len(completed),
                offset=offset,
                longest_seconds=round(max(seconds for _, seconds in completed), 3),
                sample=[f"{p.topic}-{p.partition}" for p, _ in completed[:SAMPLE]],
            )
        self._checks += 1
        self._failed_nodes = failed
        self._last_offset = offset
        self._checked.notify()
        return current

    def in_failover(self) -> list[PartitionInFailover]:
        return [partition for partition, _ in self._in_failover.values()]

    def statistics(self) -> FailoverStatistics:
        return FailoverStatistics(
            checks=self._checks,
            last_offset=self._last_offset,
            partitions_in_failover=len(self._in_failover),
            failed_nodes=self._failed_nodes,
            completed=self._completed,
        )


def failed_nodes(brokers: Iterable[BrokerRegistration], node_wal: NodeWALImage) -> tuple[int, ...]:
    fenced = {b.id for b in brokers if b.fenced}
    failing = {node.node_id for node in node_wal.nodes.values() if node.failover_mode}
    return tuple(sorted(fenced | failing))


def scan(image: MetadataImage, key: DerivedKey[FailoverIndex]) -> list[PartitionInFailover]:
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
