"""Churn events: each one reads and updates the cluster model and returns its records.

An event that cannot apply right now (no candidate partition, too few live brokers)
returns no records and leaves the model as it was; the controller then draws another.
The events that move every partition of a node (a controlled shutdown, a failover and
its steps) return their records lazily, a partition at a time, as the caller takes
them: at 100k partitions one is some 40k records, which were all built at once.
"""

from __future__ import annotations

import enum
import json
import random
import uuid
from collections.abc import Callable, Iterable, Iterator

from broker.metadata import FAILOVER_KV_KEY, encode_stream_id, meta_stream_key
from broker.metadata.records import (
    NO_LEADER,
    AssignedS3ObjectIdRecord,
    AssignedStreamIdRecord,
    BrokerEndpoint,
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    ConfigResourceType,
    FenceBrokerRecord,
    KeyValue,
    KVRecord,
    MetadataRecord,
    NodeWALMetadataRecord,
    NoOpRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RangeRecord,
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
    StreamState,
    TopicRecord,
    UnfenceBrokerRecord,
)
from broker.sim._model import (
    BrokerModel,
    ClusterModel,
    FailoverModel,
    FailoverStep,
    PartitionModel,
    StreamModel,
    TopicModel,
    WorkloadConfig,
)

__all__ = ["EVENT_WEIGHTS", "OBJECTS_KEPT", "RANGES_KEPT", "ChurnEvents", "EventKind"]

OBJECTS_KEPT = 8
"""Objects a stream keeps; a commit beyond that trims the oldest (retention)."""
RANGES_KEPT = 4
"""Ranges a stream keeps; reopening beyond that trims the oldest."""


class EventKind(enum.Enum):
    """The kinds of churn the synthetic controller draws from."""

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


EVENT_WEIGHTS: dict[EventKind, int] = {
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
"""How often each kind is drawn, relative to the others."""


class ChurnEvents:
    """The record generators of every event kind, over one model.

    ``now`` gives the simulated time (ms) of the current event; ``host`` and ``port`` the
    address a broker advertises.
    """

    def __init__(
        self,
        config: WorkloadConfig,
        model: ClusterModel,
        rng: random.Random,
        *,
        now: Callable[[], int],
        host: Callable[[int], str],
        port: Callable[[int], int],
    ) -> None:
        self.config = config
        self.model = model
        self.rng = rng
        self._now = now
        self._host = host
        self._port = port
        self._generators: dict[EventKind, Callable[[], Iterable[MetadataRecord]]] = {
            EventKind.ELECTION: self.election,
            EventKind.ISR_SHRINK: self.isr_shrink,
            EventKind.ISR_EXPAND: self.isr_expand,
            EventKind.CONFIG: self.config_change,
            EventKind.STREAM_COMMIT: self.stream_commit,
            EventKind.TOPIC_CREATE: self.topic_create,
            EventKind.TOPIC_DELETE: self.topic_delete,
            EventKind.CONTROLLED_SHUTDOWN: self.controlled_shutdown,
            EventKind.BROKER_RESTART: self.broker_restart,
            EventKind.FAILOVER: self.failover,
            EventKind.NOOP: self.noop,
        }

    def records(self, kind: EventKind) -> Iterable[MetadataRecord]:
        """The records of one event of ``kind``; empty when it cannot apply now."""
        return self._generators[kind]()

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    # brokers -------------------------------------------------------------------------

    def register_broker(self, broker_id: int) -> list[MetadataRecord]:
        """Registration of a broker (fenced, with a new epoch) followed by its unfencing."""
        broker = self.model.brokers.get(broker_id)
        epoch = (broker.epoch + 1) if broker is not None else 100 + broker_id
        broker = BrokerModel(broker_id, epoch, self._uuid(), fenced=False)
        self.model.brokers[broker_id] = broker
        endpoint = BrokerEndpoint(
            name=self.config.listener_name, host=self._host(broker_id), port=self._port(broker_id)
        )
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

    def broker_configs(self) -> list[MetadataRecord]:
        """Dynamic broker configs, as an operator sets them: a cluster-wide default
        (resource name ``""``) and one per-broker override."""
        brokers = sorted(self.model.brokers)
        records: list[MetadataRecord] = [
            ConfigRecord(
                resource_type=ConfigResourceType.BROKER,
                resource_name="",
                name="log.retention.ms",
                value=str(7 * 24 * 3_600_000),
            ),
            ConfigRecord(
                resource_type=ConfigResourceType.BROKER,
                resource_name="",
                name="num.io.threads",
                value="8",
            ),
        ]
        if brokers:
            records.append(
                ConfigRecord(
                    resource_type=ConfigResourceType.BROKER,
                    resource_name=str(brokers[0]),
                    name="num.io.threads",
                    value="16",
                )
            )
        return records

    def controlled_shutdown(self) -> Iterable[MetadataRecord]:
        """Graceful: leadership and streams move first, then the broker is fenced."""
        model = self.model
        alive = model.alive()
        if len(alive) <= self.config.replication_factor or model.failover is not None:
            return ()
        broker = model.brokers[self.rng.choice(alive)]
        broker.shutting_down = True
        return self._shut_down(broker, [b for b in alive if b != broker.id])

    def _shut_down(self, broker: BrokerModel, others: list[int]) -> Iterator[MetadataRecord]:
        yield BrokerRegistrationChangeRecord(
            broker_id=broker.id, broker_epoch=broker.epoch, in_controlled_shutdown=1
        )
        for topic, index, partition in self.model.led_partitions(broker.id):
            isr = [b for b in partition.isr if b != broker.id]
            candidates = [b for b in isr if b in others] or others
            new_leader = candidates[0]
            if new_leader not in isr:
                isr.append(new_leader)
            yield from self._move_leader(topic, index, new_leader, isr=isr)
        broker.fenced = True
        yield FenceBrokerRecord(id=broker.id, epoch=broker.epoch)

    def broker_restart(self) -> list[MetadataRecord]:
        """A fenced broker comes back: new epoch, registered fenced, then unfenced."""
        failover = self.model.failover
        down = [
            b.id
            for b in self.model.brokers.values()
            if b.fenced and (failover is None or failover.node != b.id)
        ]
        if not down:
            return []
        broker = self.model.brokers[self.rng.choice(down)]
        broker.shutting_down = False
        return self.register_broker(broker.id)

    # topics --------------------------------------------------------------------------

    def create_topic(self) -> list[MetadataRecord]:
        """A topic with its partitions, their meta streams and KV entries; the KV record
        goes last, so a topic cut short by a crash has no meta stream entry."""
        model = self.model
        alive = model.alive()
        rf = self.config.replication_factor
        if len(alive) < rf:
            return []
        model.topic_serial += 1
        topic = TopicModel(self._uuid(), f"topic-{model.topic_serial:05d}", [])
        records: list[MetadataRecord] = [TopicRecord(name=topic.name, topic_id=topic.id)]
        kvs: list[KeyValue] = []
        for index in range(self.config.partitions_per_topic):
            start = (model.topic_serial + index) % len(alive)
            replicas = tuple(alive[(start + i) % len(alive)] for i in range(rf))
            stream = StreamModel(
                model.next_stream_id, 0, 0, 0, 0, replicas[0], ranges=(0,), range_starts=(0,)
            )
            model.next_stream_id += 1
            topic.partitions.append(PartitionModel(replicas, replicas, replicas[0], 0, stream))
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
            records.append(stream.record())
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
        records.append(AssignedStreamIdRecord(assigned_stream_id=model.next_stream_id - 1))
        records.append(KVRecord(key_values=tuple(kvs)))
        model.topics[topic.id] = topic
        return records

    # Topics come and go around the configured count (within 10%, at least 1), so a
    # long run keeps a steady cluster size instead of drifting.
    def topic_create(self) -> list[MetadataRecord]:
        """A new topic, unless there are already 10% more than configured."""
        if len(self.model.topics) >= self.config.topics + max(1, self.config.topics // 10):
            return []
        return self.create_topic()

    def topic_delete(self) -> list[MetadataRecord]:
        """A topic goes, with its streams, objects and KV entries."""
        model = self.model
        if len(model.topics) <= max(1, self.config.topics - max(1, self.config.topics // 10)):
            return []
        candidates = [t for t in model.topics.values() if not model.topic_in_failover(t)]
        if not candidates:
            return []
        topic = self.rng.choice(candidates)
        del model.topics[topic.id]
        records: list[MetadataRecord] = [RemoveTopicRecord(topic_id=topic.id)]
        keys = []
        for index, partition in enumerate(topic.partitions):
            keys.append(meta_stream_key(self.config.cluster_id, topic.id, index))
            records.append(RemoveS3StreamRecord(stream_id=partition.stream.id))
            records += [RemoveS3ObjectRecord(object_id=o) for o, _, _ in partition.stream.objects]
        records.append(RemoveKVRecord(keys=tuple(keys)))
        return records

    def config_change(self) -> list[MetadataRecord]:
        """A topic config is set or deleted."""
        model = self.model
        if not model.topics:
            return []
        topic = model.topics[self.rng.choice(list(model.topics))]
        key = self.rng.choice(("retention.ms", "segment.bytes", "cleanup.policy"))
        value: str | None
        if self.rng.random() < 0.25:
            value = None
        elif key == "cleanup.policy":
            value = self.rng.choice(("delete", "compact"))
        else:
            value = str(self.rng.randrange(1, 10) * 3_600_000)
        return [
            ConfigRecord(
                resource_type=ConfigResourceType.TOPIC,
                resource_name=topic.name,
                name=key,
                value=value,
            )
        ]

    # partitions ----------------------------------------------------------------------

    def _pick_partition(self) -> tuple[TopicModel, int, PartitionModel] | None:
        model = self.model
        if not model.topics:
            return None
        topic = model.topics[self.rng.choice(list(model.topics))]
        index = self.rng.randrange(len(topic.partitions))
        if model.in_failover(topic.id, index):
            return None
        return topic, index, topic.partitions[index]

    def _move_leader(
        self, topic: TopicModel, index: int, new_leader: int, isr: list[int] | None = None
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
            partition.isr = tuple(isr)
        if new_leader != NO_LEADER:
            records += self._reopen_stream(partition, new_leader)
        return records

    def _reopen_stream(self, partition: PartitionModel, owner: int) -> list[MetadataRecord]:
        stream = partition.stream
        stream.epoch = max(stream.epoch, partition.leader_epoch)
        stream.range_index += 1
        stream.owner = owner
        stream.state = StreamState.OPENED
        stream.add_range(stream.range_index, stream.end_offset)
        records: list[MetadataRecord] = [
            stream.record(),
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
            records += self._advance_start(stream, stream.range_starts[-RANGES_KEPT])
        return records

    def election(self) -> list[MetadataRecord]:
        """Leadership moves to another live in-sync replica, with its stream."""
        picked = self._pick_partition()
        if picked is None:
            return []
        topic, index, partition = picked
        alive = set(self.model.alive())
        candidates = [b for b in partition.isr if b in alive and b != partition.leader]
        if not candidates:
            return []
        return self._move_leader(topic, index, self.rng.choice(candidates))

    def isr_shrink(self) -> list[MetadataRecord]:
        """A follower falls out of the ISR."""
        picked = self._pick_partition()
        if picked is None:
            return []
        topic, index, partition = picked
        followers = [b for b in partition.isr if b != partition.leader]
        if not followers:
            return []
        dropped = self.rng.choice(followers)
        partition.isr = tuple(b for b in partition.isr if b != dropped)
        return [PartitionChangeRecord(partition_id=index, topic_id=topic.id, isr=partition.isr)]

    def isr_expand(self) -> list[MetadataRecord]:
        """A live replica catches up and rejoins the ISR."""
        picked = self._pick_partition()
        if picked is None:
            return []
        topic, index, partition = picked
        alive = set(self.model.alive())
        missing = [b for b in partition.replicas if b not in partition.isr and b in alive]
        if not missing:
            return []
        partition.isr = (*partition.isr, self.rng.choice(missing))
        return [PartitionChangeRecord(partition_id=index, topic_id=topic.id, isr=partition.isr)]

    # streams -------------------------------------------------------------------------

    def stream_commit(self) -> list[MetadataRecord]:
        """The leader commits new data of a partition's stream as an object."""
        picked = self._pick_partition()
        if picked is None:
            return []
        _, _, partition = picked
        stream = partition.stream
        if stream.state is not StreamState.OPENED or stream.owner != partition.leader:
            return []
        size = self.rng.randrange(100, 5000)
        model = self.model
        object_id = model.next_object_id
        model.next_object_id += 1
        start, end = stream.end_offset, stream.end_offset + size
        stream.end_offset = end
        stream.add_object(object_id, start, end)
        now = self._now()
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
                start_offset=stream.range_start(stream.range_index),
                end_offset=end,
                node_id=stream.owner,
            ),
        ]
        if len(stream.objects) > OBJECTS_KEPT:
            records += self._advance_start(stream, stream.objects[0][2])
        return records

    def _advance_start(self, stream: StreamModel, new_start: int) -> list[MetadataRecord]:
        """Retention: the stream starts at ``new_start``; objects and ranges wholly
        before it go (a long run keeps a steady amount of stream metadata)."""
        records: list[MetadataRecord] = []
        while stream.objects and stream.objects[0][2] <= new_start:
            object_id = stream.drop_oldest_object()
            records.append(RemoveS3StreamObjectRecord(stream_id=stream.id, object_id=object_id))
            records.append(RemoveS3ObjectRecord(object_id=object_id))
        stream.start_offset = new_start
        records.append(stream.record())
        while len(stream.ranges) > 1 and stream.range_starts[1] <= new_start:
            dead = stream.drop_oldest_range()
            records.append(RemoveRangeRecord(stream_id=stream.id, range_index=dead))
        return records

    # failover: a node dies; its partitions move and its streams are closed, then reopened
    # by the new leaders a few events later (mid-failover in between).

    def failover(self) -> Iterable[MetadataRecord]:
        """A live node fails: it is fenced, its partitions get new leaders, and the plan
        is stored in the KV map; the streams follow in later steps."""
        model = self.model
        alive = model.alive()
        if model.failover is not None or len(alive) <= self.config.replication_factor:
            return ()
        node = model.brokers[self.rng.choice(alive)]
        led = model.led_partitions(node.id)
        if not led:
            return ()
        others = [b for b in alive if b != node.id]
        target = others[model.failovers_completed % len(others)]  # round-robin, like AutoMQ
        node.fenced = True
        return self._fail(node, target, led, others)

    def _fail(
        self,
        node: BrokerModel,
        target: int,
        led: list[tuple[TopicModel, int, PartitionModel]],
        others: list[int],
    ) -> Iterator[MetadataRecord]:
        plan = {
            "failedNodeId": node.id,
            "targetNodeId": target,
            "nodeEpoch": node.epoch,
            "status": "WAITING",
        }
        yield FenceBrokerRecord(id=node.id, epoch=node.epoch)
        yield NodeWALMetadataRecord(node_id=node.id, node_epoch=node.epoch, failover_mode=True)
        yield KVRecord(key_values=(KeyValue(key=FAILOVER_KV_KEY, value=json.dumps(plan).encode()),))
        moved: list[tuple[uuid.UUID, int]] = []
        for i, (topic, index, partition) in enumerate(led):
            isr = [b for b in partition.isr if b != node.id]
            candidates = [b for b in isr if b in others] or [others[i % len(others)]]
            new_leader = candidates[0]
            if new_leader not in isr:
                isr.append(new_leader)
            partition.leader = new_leader
            partition.leader_epoch += 1
            partition.isr = tuple(isr)
            yield PartitionChangeRecord(
                partition_id=index, topic_id=topic.id, leader=new_leader, isr=partition.isr
            )
            moved.append((topic.id, index))
        self.model.failover = FailoverModel(node.id, target, node.epoch, moved)

    def advance_failover(self) -> Iterable[MetadataRecord]:
        """The next step of the failover in flight, when it is due; otherwise nothing."""
        model = self.model
        failover = model.failover
        if failover is None:
            return ()
        failover.wait += 1
        if failover.wait < self.config.failover_steps_apart:
            return ()
        failover.wait = 0
        partitions = [(model.topics[t], i) for t, i in failover.partitions if t in model.topics]
        if failover.step is FailoverStep.LEADERS_MOVED:
            failover.step = FailoverStep.STREAMS_CLOSED
            return self._close_streams(partitions) if partitions else (NoOpRecord(),)
        if failover.step is FailoverStep.STREAMS_CLOSED:
            failover.step = FailoverStep.STREAMS_REOPENED
            return self._reopen_streams(partitions) if partitions else (NoOpRecord(),)
        model.failover = None
        model.failovers_completed += 1
        return (
            NodeWALMetadataRecord(node_id=failover.node, node_epoch=failover.node_epoch),
            RemoveKVRecord(keys=(FAILOVER_KV_KEY,)),
        )

    @staticmethod
    def _close_streams(partitions: list[tuple[TopicModel, int]]) -> Iterator[MetadataRecord]:
        for topic, index in partitions:
            stream = topic.partitions[index].stream
            stream.state = StreamState.CLOSED
            yield stream.record()

    def _reopen_streams(self, partitions: list[tuple[TopicModel, int]]) -> Iterator[MetadataRecord]:
        for topic, index in partitions:
            partition = topic.partitions[index]
            yield from self._reopen_stream(partition, partition.leader)

    def noop(self) -> list[MetadataRecord]:
        """Nothing changes (the controller's NoOp heartbeat)."""
        return [NoOpRecord()]
