"""A deterministic synthetic KRaft controller: realistic record churn from a seed.

It keeps its own small model of the cluster (independent of the image code it feeds)
and emits only records that are valid against that model: broker registration, fencing
and controlled shutdown, topic creation and deletion, leader elections and ISR changes,
config changes, stream data commits, and AutoMQ-style failovers that take several
batches to complete (so readers see partitions mid-failover).

Same config (seed included) -> same batches, byte for byte; time is simulated.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.metadata import (
    METADATA_VERSION_FEATURE,
    NO_LEADER,
    AssignedS3ObjectIdRecord,
    AssignedStreamIdRecord,
    BrokerEndpoint,
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    ConfigResourceType,
    FeatureLevelRecord,
    FenceBrokerRecord,
    KeyValue,
    KVRecord,
    MetadataImage,
    MetadataRecord,
    NodeWALMetadataRecord,
    NoOpRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RangeRecord,
    RecordBatch,
    RegisterBrokerRecord,
    RemoveKVRecord,
    RemoveRangeRecord,
    RemoveS3ObjectRecord,
    RemoveS3StreamObjectRecord,
    RemoveS3StreamRecord,
    RemoveTopicRecord,
    S3ObjectRecord,
    S3ObjectState,
    S3StreamObjectRecord,
    S3StreamRecord,
    StreamState,
    TopicRecord,
    UnfenceBrokerRecord,
)

__all__ = [
    "FAILOVER_KV_KEY",
    "EventKind",
    "SyntheticController",
    "WorkloadConfig",
    "decode_stream_id",
    "encode_stream_id",
    "meta_stream_key",
]

FAILOVER_KV_KEY = "__a.failover"
"""KV key of the in-flight failover plan (JSON), as AutoMQ's controller stores it."""
METADATA_VERSION = 21
START_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: simulated time starts here
TICK_MS = 10
OBJECTS_KEPT = 8
"""Objects a stream keeps; a commit beyond that trims the oldest (retention)."""
RANGES_KEPT = 4
"""Ranges a stream keeps; reopening beyond that trims the oldest."""


def meta_stream_key(cluster_id: str, topic_id: uuid.UUID, partition: int) -> str:
    """KV key holding a partition's meta stream id (AutoMQ's layout)."""
    return f"_kafka_{cluster_id}/{topic_id}/{partition}"


def encode_stream_id(stream_id: int) -> bytes:
    return stream_id.to_bytes(8, "big", signed=True)


def decode_stream_id(value: bytes) -> int | None:
    return int.from_bytes(value, "big", signed=True) if len(value) == 8 else None


class WorkloadConfig(BaseModel):
    """Shape of the synthetic cluster and its churn."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    seed: int = 1
    cluster_id: str = Field(default="sim-cluster", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    brokers: int = Field(default=6, ge=1, le=1000)
    topics: int = Field(default=50, ge=0)
    partitions_per_topic: int = Field(default=20, ge=1)
    replication_factor: int = Field(default=3, ge=1)
    max_records_per_batch: int = Field(default=2000, ge=1)
    """Larger events (a broker outage at scale) are split into several batches."""
    listener_name: str = "PLAINTEXT"
    failover_steps_apart: int = Field(default=4, ge=1)
    """Churn events between two steps of a failover: how long partitions stay mid-failover."""

    @model_validator(mode="after")
    def _replication_fits(self) -> WorkloadConfig:
        if self.replication_factor > self.brokers:
            raise ValueError(
                f"replication_factor ({self.replication_factor}) exceeds brokers ({self.brokers})"
            )
        return self

    @property
    def partitions(self) -> int:
        return self.topics * self.partitions_per_topic


class EventKind:
    ELECTION = "election"
    ISR_SHRINK = "isr_shrink"
    ISR_EXPAND = "isr_expand"
    CONFIG = "config"
    STREAM_COMMIT = "stream_commit"
    TOPIC_CREATE = "topic_create"
    TOPIC_DELETE = "topic_delete"
    CONTROLLED_SHUTDOWN = "controlled_shutdown"
    BROKER_RESTART = "broker_restart"
    FAILOVER = "failover"
    NOOP = "noop"


_WEIGHTS = {
    EventKind.ELECTION: 20,
    EventKind.ISR_SHRINK: 12,
    EventKind.ISR_EXPAND: 12,
    EventKind.CONFIG: 8,
    EventKind.STREAM_COMMIT: 30,
    EventKind.TOPIC_CREATE: 2,
    EventKind.TOPIC_DELETE: 2,
    EventKind.CONTROLLED_SHUTDOWN: 1,
    EventKind.BROKER_RESTART: 3,
    EventKind.FAILOVER: 1,
    EventKind.NOOP: 2,
}


@dataclass
class _Broker:
    id: int
    epoch: int
    incarnation: uuid.UUID
    fenced: bool = True
    shutting_down: bool = False


@dataclass
class _Stream:
    id: int
    epoch: int
    range_index: int
    start_offset: int
    end_offset: int
    owner: int
    state: StreamState = StreamState.OPENED
    ranges: list[int] = field(default_factory=list)
    """Indexes of the ranges the stream still has, oldest first."""
    range_starts: dict[int, int] = field(default_factory=dict)
    """Start offset by range index."""
    objects: list[tuple[int, int, int]] = field(default_factory=list)
    """(object id, start, end), oldest first."""


@dataclass
class _Partition:
    replicas: list[int]
    isr: list[int]
    leader: int
    leader_epoch: int
    stream: _Stream


@dataclass
class _Topic:
    id: uuid.UUID
    name: str
    partitions: list[_Partition]


@dataclass
class _Failover:
    node: int
    target: int
    node_epoch: int
    partitions: list[tuple[uuid.UUID, int]]
    step: int = 1
    wait: int = 0

    def __post_init__(self) -> None:
        self.members = set(self.partitions)


class SyntheticController:
    """Emits batches of valid records; ``bootstrap()`` first, then ``churn()`` forever."""

    def __init__(
        self,
        config: WorkloadConfig,
        *,
        epoch: int = 1,
        listener_host: str | None = None,
        listener_port: int = 9092,
    ) -> None:
        self.config = config
        self.epoch = epoch
        self.next_offset = 0
        self.events = 0
        self.event_counts: dict[str, int] = dict.fromkeys(_WEIGHTS, 0)
        self.failovers_completed = 0
        self._rng = random.Random(config.seed)
        self._brokers: dict[int, _Broker] = {}
        self._topics: dict[uuid.UUID, _Topic] = {}
        self._topic_serial = 0
        self._next_stream_id = 0
        self._next_object_id = 0
        self._failover: _Failover | None = None
        self._listener_host = listener_host
        self._listener_port = listener_port
        self._kinds = list(_WEIGHTS)
        self._weights = list(_WEIGHTS.values())
        self._bootstrapped = False

    @classmethod
    def resume(
        cls,
        config: WorkloadConfig,
        image: MetadataImage,
        *,
        listener_host: str | None = None,
        listener_port: int = 9092,
    ) -> SyntheticController:
        """A controller that continues the log ``image`` was loaded from (a restart).

        Its model is rebuilt from the image; the random sequence differs from a run
        that never stopped, every record stays valid.
        """
        controller = cls(
            config,
            epoch=max(image.epoch, 0) + 1,
            listener_host=listener_host,
            listener_port=listener_port,
        )
        controller._rng = random.Random(config.seed * 1_000_003 + image.offset)
        controller._bootstrapped = image.offset >= 0
        controller.next_offset = image.offset + 1
        controller.events = max(0, (image.provenance.append_time_ms - START_TIME_MS) // TICK_MS + 1)
        for broker in image.cluster.brokers.values():
            controller._brokers[broker.id] = _Broker(
                broker.id,
                broker.epoch,
                broker.incarnation_id,
                fenced=broker.fenced,
                shutting_down=broker.in_controlled_shutdown,
            )
        streams = image.streams.streams
        kv = image.kv.values
        serial = 0
        for topic in image.topics.by_id.values():
            partitions = []
            for index in range(len(topic.partitions)):
                registration = topic.partitions.get(index)
                value = kv.get(meta_stream_key(config.cluster_id, topic.id, index))
                stream_id = decode_stream_id(value) if value is not None else None
                metadata = streams.get(stream_id) if stream_id is not None else None
                if registration is None or metadata is None:
                    break  # not a topic this controller made
                stream = _Stream(
                    metadata.stream_id,
                    metadata.epoch,
                    metadata.range_index,
                    metadata.start_offset,
                    metadata.end_offset,
                    metadata.last_range.node_id if metadata.last_range else registration.leader,
                    metadata.state,
                    [r.range_index for r in metadata.ranges],
                    {r.range_index: r.start_offset for r in metadata.ranges},
                    sorted(
                        (
                            (o.object_id, o.start_offset, o.end_offset)
                            for o in metadata.objects.values()
                        ),
                        key=lambda o: o[1],
                    ),
                )
                partitions.append(
                    _Partition(
                        list(registration.replicas),
                        list(registration.isr),
                        registration.leader,
                        registration.leader_epoch,
                        stream,
                    )
                )
            else:
                controller._topics[topic.id] = _Topic(topic.id, topic.name, partitions)
                if topic.name.startswith("topic-") and topic.name[6:].isdigit():
                    serial = max(serial, int(topic.name[6:]))
        controller._topic_serial = serial
        controller._next_stream_id = image.streams.assigned_stream_id + 1
        controller._next_object_id = image.objects.assigned_object_id + 1
        plan = kv.get(FAILOVER_KV_KEY)
        if plan is not None:
            controller._failover = controller._resume_failover(json.loads(plan))
        return controller

    def _resume_failover(self, plan: dict[str, int]) -> _Failover:
        node = plan["failedNodeId"]
        affected = [
            (topic.id, index)
            for topic in self._topics.values()
            for index, partition in enumerate(topic.partitions)
            if partition.stream.state is StreamState.CLOSED or partition.stream.owner == node
        ]
        closed = any(
            self._topics[t].partitions[i].stream.state is StreamState.CLOSED for t, i in affected
        )
        step = 2 if closed else (1 if affected else 3)
        return _Failover(node, plan["targetNodeId"], plan["nodeEpoch"], affected, step=step)

    # helpers -------------------------------------------------------------------------

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def _batches(self, records: list[MetadataRecord]) -> list[RecordBatch]:
        batches = []
        step = self.config.max_records_per_batch
        for start in range(0, len(records), step):
            chunk = tuple(records[start : start + step])
            batches.append(
                RecordBatch(
                    self.next_offset, self.epoch, START_TIME_MS + self.events * TICK_MS, chunk
                )
            )
            self.next_offset += len(chunk)
        return batches

    def _host(self, broker_id: int) -> str:
        """Where broker ``broker_id`` says it listens: one real listener serves them all."""
        return self._listener_host or f"broker-{broker_id}.sim.local"

    def reregister_brokers(self) -> list[RecordBatch]:
        """Every broker registers again (new epoch) with the current listener address."""
        records: list[MetadataRecord] = []
        for broker_id in sorted(self._brokers):
            records += self.register_broker_records(
                broker_id, self._host(broker_id), self._listener_port
            )
        return self._batches(records)

    def _alive(self) -> list[int]:
        return [b.id for b in self._brokers.values() if not b.fenced and not b.shutting_down]

    def _in_failover(self, topic_id: uuid.UUID, partition: int) -> bool:
        return self._failover is not None and (topic_id, partition) in self._failover.members

    def register_broker_records(self, broker_id: int, host: str, port: int) -> list[MetadataRecord]:
        """Registration of a broker (fenced) followed by its unfencing."""
        broker = self._brokers.get(broker_id)
        epoch = (broker.epoch + 1) if broker is not None else 100 + broker_id
        broker = self._brokers[broker_id] = _Broker(broker_id, epoch, self._uuid(), fenced=False)
        endpoint = BrokerEndpoint(name=self.config.listener_name, host=host, port=port)
        return [
            RegisterBrokerRecord(
                broker_id=broker_id,
                incarnation_id=broker.incarnation,
                broker_epoch=epoch,
                end_points=(endpoint,),
                rack=f"rack-{broker_id % 3}",
            ),
            UnfenceBrokerRecord(id=broker_id, epoch=epoch),
            NodeWALMetadataRecord(node_id=broker_id, node_epoch=epoch),
        ]

    # bootstrap -----------------------------------------------------------------------

    def bootstrap(self) -> list[RecordBatch]:
        """Features, brokers and the initial topics."""
        if self._bootstrapped:
            raise RuntimeError("bootstrap() runs once")
        self._bootstrapped = True
        records: list[MetadataRecord] = [
            FeatureLevelRecord(name=METADATA_VERSION_FEATURE, feature_level=METADATA_VERSION)
        ]
        for broker_id in range(1, self.config.brokers + 1):
            records += self.register_broker_records(
                broker_id, self._host(broker_id), self._listener_port
            )
        for _ in range(self.config.topics):
            records += self._create_topic()
        return self._batches(records)

    # churn ---------------------------------------------------------------------------

    def churn(self) -> list[RecordBatch]:
        """One churn event: usually one batch, several for large events, never none."""
        if not self._bootstrapped:
            return self.bootstrap()
        self.events += 1
        records = self._advance_failover()
        if not records:
            for _ in range(16):  # an event may not apply right now (no candidate): redraw
                kind = self._rng.choices(self._kinds, self._weights)[0]
                records = getattr(self, f"_event_{kind}")()
                if records:
                    self.event_counts[kind] += 1
                    break
            else:
                records = [NoOpRecord()]
                self.event_counts[EventKind.NOOP] += 1
        return self._batches(records)

    def batches(self, events: int) -> Iterator[RecordBatch]:
        """Bootstrap (when not done yet) then ``events`` churn events."""
        if not self._bootstrapped:
            yield from self.bootstrap()
        for _ in range(events):
            yield from self.churn()

    # events --------------------------------------------------------------------------

    def _create_topic(self) -> list[MetadataRecord]:
        alive = self._alive()
        rf = self.config.replication_factor
        if len(alive) < rf:
            return []
        self._topic_serial += 1
        topic = _Topic(self._uuid(), f"topic-{self._topic_serial:05d}", [])
        records: list[MetadataRecord] = [TopicRecord(name=topic.name, topic_id=topic.id)]
        kvs: list[KeyValue] = []
        for index in range(self.config.partitions_per_topic):
            start = (self._topic_serial + index) % len(alive)
            replicas = [alive[(start + i) % len(alive)] for i in range(rf)]
            stream = _Stream(self._next_stream_id, 0, 0, 0, 0, replicas[0], ranges=[0])
            stream.range_starts[0] = 0
            self._next_stream_id += 1
            partition = _Partition(replicas, list(replicas), replicas[0], 0, stream)
            topic.partitions.append(partition)
            records.append(
                PartitionRecord(
                    partition_id=index,
                    topic_id=topic.id,
                    replicas=tuple(replicas),
                    isr=tuple(replicas),
                    leader=replicas[0],
                    leader_epoch=0,
                    partition_epoch=0,
                )
            )
            records.append(S3StreamRecord(stream_id=stream.id, epoch=0, range_index=0))
            records.append(
                RangeRecord(
                    stream_id=stream.id,
                    epoch=0,
                    range_index=0,
                    start_offset=0,
                    end_offset=0,
                    node_id=stream.owner,
                )
            )
            kvs.append(
                KeyValue(
                    key=meta_stream_key(self.config.cluster_id, topic.id, index),
                    value=encode_stream_id(stream.id),
                )
            )
        records.append(AssignedStreamIdRecord(assigned_stream_id=self._next_stream_id - 1))
        records.append(KVRecord(key_values=tuple(kvs)))
        self._topics[topic.id] = topic
        return records

    # Topics come and go around the configured count (within 10%, at least 1), so a
    # long run keeps a steady cluster size instead of drifting.
    def _event_topic_create(self) -> list[MetadataRecord]:
        if len(self._topics) >= self.config.topics + max(1, self.config.topics // 10):
            return []
        return self._create_topic()

    def _event_topic_delete(self) -> list[MetadataRecord]:
        if len(self._topics) <= max(1, self.config.topics - max(1, self.config.topics // 10)):
            return []
        candidates = [t for t in self._topics.values() if not self._topic_in_failover(t)]
        if not candidates:
            return []
        topic = self._rng.choice(candidates)
        del self._topics[topic.id]
        records: list[MetadataRecord] = [RemoveTopicRecord(topic_id=topic.id)]
        keys = []
        for index, partition in enumerate(topic.partitions):
            keys.append(meta_stream_key(self.config.cluster_id, topic.id, index))
            records.append(RemoveS3StreamRecord(stream_id=partition.stream.id))
            records += [RemoveS3ObjectRecord(object_id=o) for o, _, _ in partition.stream.objects]
        records.append(RemoveKVRecord(keys=tuple(keys)))
        return records

    def _topic_in_failover(self, topic: _Topic) -> bool:
        return self._failover is not None and any(
            t == topic.id for t, _ in self._failover.partitions
        )

    def _pick_partition(self) -> tuple[_Topic, int, _Partition] | None:
        if not self._topics:
            return None
        topic = self._topics[self._rng.choice(list(self._topics))]
        index = self._rng.randrange(len(topic.partitions))
        if self._in_failover(topic.id, index):
            return None
        return topic, index, topic.partitions[index]

    def _move_leader(
        self, topic: _Topic, index: int, new_leader: int, isr: list[int] | None = None
    ) -> list[MetadataRecord]:
        """Leader change plus the stream hand-over, atomically in one event."""
        partition = topic.partitions[index]
        partition.leader = new_leader
        partition.leader_epoch += 1
        records: list[MetadataRecord] = [
            PartitionChangeRecord(
                partition_id=index,
                topic_id=topic.id,
                leader=new_leader,
                isr=tuple(isr) if isr is not None else None,
            )
        ]
        if isr is not None:
            partition.isr = list(isr)
        if new_leader != NO_LEADER:
            records += self._reopen_stream(partition, new_leader)
        return records

    def _reopen_stream(self, partition: _Partition, owner: int) -> list[MetadataRecord]:
        stream = partition.stream
        stream.epoch = max(stream.epoch, partition.leader_epoch)
        stream.range_index += 1
        stream.owner = owner
        stream.state = StreamState.OPENED
        stream.ranges.append(stream.range_index)
        stream.range_starts[stream.range_index] = stream.end_offset
        records: list[MetadataRecord] = [
            S3StreamRecord(
                stream_id=stream.id,
                epoch=stream.epoch,
                range_index=stream.range_index,
                start_offset=stream.start_offset,
            ),
            RangeRecord(
                stream_id=stream.id,
                epoch=stream.epoch,
                range_index=stream.range_index,
                start_offset=stream.end_offset,
                end_offset=stream.end_offset,
                node_id=owner,
            ),
        ]
        if len(stream.ranges) > RANGES_KEPT:
            records += self._advance_start(stream, stream.range_starts[stream.ranges[-RANGES_KEPT]])
        return records

    def _event_election(self) -> list[MetadataRecord]:
        picked = self._pick_partition()
        if picked is None:
            return []
        topic, index, partition = picked
        alive = set(self._alive())
        candidates = [b for b in partition.isr if b in alive and b != partition.leader]
        if not candidates:
            return []
        return self._move_leader(topic, index, self._rng.choice(candidates))

    def _event_isr_shrink(self) -> list[MetadataRecord]:
        picked = self._pick_partition()
        if picked is None:
            return []
        topic, index, partition = picked
        followers = [b for b in partition.isr if b != partition.leader]
        if not followers:
            return []
        dropped = self._rng.choice(followers)
        partition.isr = [b for b in partition.isr if b != dropped]
        return [
            PartitionChangeRecord(partition_id=index, topic_id=topic.id, isr=tuple(partition.isr))
        ]

    def _event_isr_expand(self) -> list[MetadataRecord]:
        picked = self._pick_partition()
        if picked is None:
            return []
        topic, index, partition = picked
        alive = set(self._alive())
        missing = [b for b in partition.replicas if b not in partition.isr and b in alive]
        if not missing:
            return []
        partition.isr = [*partition.isr, self._rng.choice(missing)]
        return [
            PartitionChangeRecord(partition_id=index, topic_id=topic.id, isr=tuple(partition.isr))
        ]

    def _event_config(self) -> list[MetadataRecord]:
        if not self._topics:
            return []
        topic = self._topics[self._rng.choice(list(self._topics))]
        key = self._rng.choice(("retention.ms", "segment.bytes", "cleanup.policy"))
        value: str | None
        if self._rng.random() < 0.25:
            value = None
        elif key == "cleanup.policy":
            value = self._rng.choice(("delete", "compact"))
        else:
            value = str(self._rng.randrange(1, 10) * 3_600_000)
        return [
            ConfigRecord(
                resource_type=ConfigResourceType.TOPIC,
                resource_name=topic.name,
                name=key,
                value=value,
            )
        ]

    def _event_stream_commit(self) -> list[MetadataRecord]:
        picked = self._pick_partition()
        if picked is None:
            return []
        _, _, partition = picked
        stream = partition.stream
        if stream.state is not StreamState.OPENED or stream.owner != partition.leader:
            return []
        size = self._rng.randrange(100, 5000)
        object_id = self._next_object_id
        self._next_object_id += 1
        start, end = stream.end_offset, stream.end_offset + size
        stream.end_offset = end
        stream.objects.append((object_id, start, end))
        now = START_TIME_MS + self.events * TICK_MS
        records: list[MetadataRecord] = [
            AssignedS3ObjectIdRecord(assigned_s3_object_id=object_id),
            S3ObjectRecord(
                object_id=object_id,
                object_size=size * 100,
                state=S3ObjectState.COMMITTED,
                prepared_timestamp=now,
                committed_timestamp=now,
            ),
            S3StreamObjectRecord(
                object_id=object_id,
                stream_id=stream.id,
                start_offset=start,
                end_offset=end,
                data_time_ms=now,
            ),
            RangeRecord(
                stream_id=stream.id,
                epoch=stream.epoch,
                range_index=stream.range_index,
                start_offset=stream.range_starts[stream.range_index],
                end_offset=end,
                node_id=stream.owner,
            ),
        ]
        if len(stream.objects) > OBJECTS_KEPT:
            records += self._advance_start(stream, stream.objects[0][2])
        return records

    def _advance_start(self, stream: _Stream, new_start: int) -> list[MetadataRecord]:
        """Retention: the stream starts at ``new_start``; objects and ranges wholly
        before it go (a long run keeps a steady amount of stream metadata)."""
        records: list[MetadataRecord] = []
        while stream.objects and stream.objects[0][2] <= new_start:
            object_id, _, _ = stream.objects.pop(0)
            records.append(RemoveS3StreamObjectRecord(stream_id=stream.id, object_id=object_id))
            records.append(RemoveS3ObjectRecord(object_id=object_id))
        stream.start_offset = new_start
        records.append(
            S3StreamRecord(
                stream_id=stream.id,
                epoch=stream.epoch,
                range_index=stream.range_index,
                start_offset=stream.start_offset,
                state=stream.state,
            )
        )
        while len(stream.ranges) > 1 and stream.range_starts[stream.ranges[1]] <= new_start:
            dead = stream.ranges.pop(0)
            del stream.range_starts[dead]
            records.append(RemoveRangeRecord(stream_id=stream.id, range_index=dead))
        return records

    def _led_partitions(self, broker_id: int) -> list[tuple[_Topic, int, _Partition]]:
        return [
            (topic, index, partition)
            for topic in self._topics.values()
            for index, partition in enumerate(topic.partitions)
            if partition.leader == broker_id
        ]

    def _event_controlled_shutdown(self) -> list[MetadataRecord]:
        """Graceful: leadership and streams move first, then the broker is fenced."""
        alive = self._alive()
        if len(alive) <= self.config.replication_factor or self._failover is not None:
            return []
        broker = self._brokers[self._rng.choice(alive)]
        broker.shutting_down = True
        records: list[MetadataRecord] = [
            BrokerRegistrationChangeRecord(
                broker_id=broker.id, broker_epoch=broker.epoch, in_controlled_shutdown=1
            )
        ]
        others = [b for b in alive if b != broker.id]
        for topic, index, partition in self._led_partitions(broker.id):
            isr = [b for b in partition.isr if b != broker.id]
            candidates = [b for b in isr if b in others] or others
            new_leader = candidates[0]
            if new_leader not in isr:
                isr.append(new_leader)
            records += self._move_leader(topic, index, new_leader, isr=isr)
        broker.fenced = True
        records.append(FenceBrokerRecord(id=broker.id, epoch=broker.epoch))
        return records

    def _event_broker_restart(self) -> list[MetadataRecord]:
        """A fenced broker comes back: new epoch, registered fenced, then unfenced."""
        down = [
            b.id
            for b in self._brokers.values()
            if b.fenced and (self._failover is None or self._failover.node != b.id)
        ]
        if not down:
            return []
        broker = self._brokers[self._rng.choice(down)]
        broker.shutting_down = False
        return self.register_broker_records(broker.id, self._host(broker.id), self._listener_port)

    # failover: a node dies; its partitions move and its streams are closed, then reopened
    # by the new leaders a few events later (mid-failover in between).

    def _event_failover(self) -> list[MetadataRecord]:
        alive = self._alive()
        if self._failover is not None or len(alive) <= self.config.replication_factor:
            return []
        node = self._brokers[self._rng.choice(alive)]
        led = self._led_partitions(node.id)
        if not led:
            return []
        others = [b for b in alive if b != node.id]
        target = others[self.failovers_completed % len(others)]  # round-robin, like AutoMQ
        node.fenced = True
        plan = {
            "failedNodeId": node.id,
            "targetNodeId": target,
            "nodeEpoch": node.epoch,
            "status": "WAITING",
        }
        records: list[MetadataRecord] = [
            FenceBrokerRecord(id=node.id, epoch=node.epoch),
            NodeWALMetadataRecord(node_id=node.id, node_epoch=node.epoch, failover_mode=True),
            KVRecord(key_values=(KeyValue(key=FAILOVER_KV_KEY, value=json.dumps(plan).encode()),)),
        ]
        moved: list[tuple[uuid.UUID, int]] = []
        for i, (topic, index, partition) in enumerate(led):
            isr = [b for b in partition.isr if b != node.id]
            candidates = [b for b in isr if b in others] or [others[i % len(others)]]
            new_leader = candidates[0]
            if new_leader not in isr:
                isr.append(new_leader)
            partition.leader = new_leader
            partition.leader_epoch += 1
            partition.isr = isr
            records.append(
                PartitionChangeRecord(
                    partition_id=index, topic_id=topic.id, leader=new_leader, isr=tuple(isr)
                )
            )
            moved.append((topic.id, index))
        self._failover = _Failover(node.id, target, node.epoch, moved)
        return records

    def _advance_failover(self) -> list[MetadataRecord]:
        failover = self._failover
        if failover is None:
            return []
        failover.wait += 1
        if failover.wait < self.config.failover_steps_apart:
            return []
        failover.wait = 0
        failover.step += 1
        partitions = [(self._topics[t], i) for t, i in failover.partitions if t in self._topics]
        if failover.step == 2:  # the target replays the dead node's WAL and closes its streams
            records: list[MetadataRecord] = []
            for topic, index in partitions:
                stream = topic.partitions[index].stream
                stream.state = StreamState.CLOSED
                records.append(
                    S3StreamRecord(
                        stream_id=stream.id,
                        epoch=stream.epoch,
                        range_index=stream.range_index,
                        start_offset=stream.start_offset,
                        state=StreamState.CLOSED,
                    )
                )
            return records or [NoOpRecord()]
        if failover.step == 3:  # the new leaders open the streams with a new epoch
            records = []
            for topic, index in partitions:
                partition = topic.partitions[index]
                records += self._reopen_stream(partition, partition.leader)
            return records or [NoOpRecord()]
        # step 4: done
        self._failover = None
        self.failovers_completed += 1
        return [
            NodeWALMetadataRecord(node_id=failover.node, node_epoch=failover.node_epoch),
            RemoveKVRecord(keys=(FAILOVER_KV_KEY,)),
        ]

    def _event_noop(self) -> list[MetadataRecord]:
        return [NoOpRecord()]

    # introspection -------------------------------------------------------------------

    @property
    def failover_in_flight(self) -> bool:
        return self._failover is not None

    @property
    def topic_count(self) -> int:
        return len(self._topics)

    @property
    def partition_count(self) -> int:
        return sum(len(t.partitions) for t in self._topics.values())
