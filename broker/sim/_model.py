"""The synthetic controller's own model of the cluster, independent of the image code.

The controller emits only records that are valid against this model, and updates the
model as it emits them. A restarted controller rebuilds the model from the image it
resumes from (:meth:`ClusterModel.from_image`).
"""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.metadata import (
    FAILOVER_KV_KEY,
    MetadataImage,
    StreamMetadata,
    decode_stream_id,
    meta_stream_key,
)
from broker.metadata.records import S3StreamRecord, StreamState

__all__ = [
    "BrokerModel",
    "ClusterModel",
    "FailoverModel",
    "FailoverStep",
    "PartitionModel",
    "StreamModel",
    "TopicModel",
    "WorkloadConfig",
]


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
    node_event_interval_ms: int = Field(default=10_000, ge=0)
    """Simulated time between two node-level disruptions (a controlled shutdown or a
    failover), each of which moves every partition the node leads. A cluster loses a
    node every so often, not in proportion to its churn: without this, a 100k-partition
    cluster would move 10% of its partitions several times a second."""

    @model_validator(mode="after")
    def _replication_fits(self) -> WorkloadConfig:
        if self.replication_factor > self.brokers:
            raise ValueError(
                f"replication_factor ({self.replication_factor}) exceeds brokers ({self.brokers})"
            )
        return self

    @property
    def partitions(self) -> int:
        """Partitions of the bootstrapped cluster."""
        return self.topics * self.partitions_per_topic


class FailoverStep(enum.IntEnum):
    """Where an AutoMQ failover stands; partitions are mid-failover until it completes."""

    LEADERS_MOVED = 1
    """The node is fenced and in failover mode; its partitions have new leaders, but
    their streams are still owned by the failed node."""
    STREAMS_CLOSED = 2
    """The target replayed the failed node's write-ahead log and closed its streams."""
    STREAMS_REOPENED = 3
    """The new leaders opened the streams with a new epoch; the next step completes."""


@dataclass(slots=True)
class BrokerModel:
    """A broker as the controller registered it."""

    id: int
    epoch: int
    incarnation: uuid.UUID
    fenced: bool = True
    shutting_down: bool = False


@dataclass(slots=True)
class StreamModel:
    """A partition's meta stream: its ranges and committed objects.

    Lean (slots, tuples, no dict): a simulation at 100k partitions holds 100k. Tuples,
    replaced on change, not lists: an empty one is shared, and so is a new stream's
    ``(0,)``; lists were three objects per stream, a third of the model's memory.
    """

    id: int
    epoch: int
    range_index: int
    start_offset: int
    end_offset: int
    owner: int
    state: StreamState = StreamState.OPENED
    ranges: tuple[int, ...] = ()
    """Indexes of the ranges the stream still has, oldest first."""
    range_starts: tuple[int, ...] = ()
    """The start offset of each range in ``ranges``, at the same position."""
    objects: tuple[tuple[int, int, int], ...] = ()
    """(object id, start, end), oldest first."""

    def record(self) -> S3StreamRecord:
        """The S3StreamRecord that states the stream as it is now."""
        return S3StreamRecord(
            stream_id=self.id,
            epoch=self.epoch,
            range_index=self.range_index,
            start_offset=self.start_offset,
            state=self.state,
        )

    def range_start(self, range_index: int) -> int:
        """The start offset of range ``range_index`` (one the stream still has)."""
        return self.range_starts[self.ranges.index(range_index)]

    def add_range(self, range_index: int, start_offset: int) -> None:
        """A newest range."""
        self.ranges += (range_index,)
        self.range_starts += (start_offset,)

    def drop_oldest_range(self) -> int:
        """Forget the oldest range; returns its index."""
        dead = self.ranges[0]
        self.ranges, self.range_starts = self.ranges[1:], self.range_starts[1:]
        return dead

    def add_object(self, object_id: int, start: int, end: int) -> None:
        """A newest object."""
        self.objects += ((object_id, start, end),)

    def drop_oldest_object(self) -> int:
        """Forget the oldest object; returns its id."""
        object_id = self.objects[0][0]
        self.objects = self.objects[1:]
        return object_id


@dataclass(slots=True)
class PartitionModel:
    """A partition's replicas, ISR, leader and stream (tuples: replaced, never changed)."""

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int
    stream: StreamModel


@dataclass(slots=True)
class TopicModel:
    """A topic and its partitions, indexed by partition id."""

    id: uuid.UUID
    name: str
    partitions: list[PartitionModel]


@dataclass
class FailoverModel:
    """The failover in flight: which node failed, who takes over, which partitions moved."""

    node: int
    target: int
    node_epoch: int
    partitions: list[tuple[uuid.UUID, int]]
    step: FailoverStep = FailoverStep.LEADERS_MOVED
    wait: int = 0
    """Churn events since the last step."""
    members: set[tuple[uuid.UUID, int]] = field(init=False)
    topics: set[uuid.UUID] = field(init=False)
    """Topics with a partition in ``partitions`` (membership in O(1))."""

    def __post_init__(self) -> None:
        self.members = set(self.partitions)
        self.topics = {topic_id for topic_id, _ in self.partitions}


@dataclass
class ClusterModel:
    """Brokers, topics, streams and the failover in flight, as the controller sees them."""

    brokers: dict[int, BrokerModel] = field(default_factory=dict)
    topics: dict[uuid.UUID, TopicModel] = field(default_factory=dict)
    topic_serial: int = 0
    """The number in the newest ``topic-NNNNN`` name."""
    next_stream_id: int = 0
    next_object_id: int = 0
    failover: FailoverModel | None = None
    failovers_completed: int = 0

    # queries -------------------------------------------------------------------------

    def alive(self) -> list[int]:
        """Brokers that are unfenced and not shutting down, in registration order."""
        return [b.id for b in self.brokers.values() if not b.fenced and not b.shutting_down]

    def in_failover(self, topic_id: uuid.UUID, partition: int) -> bool:
        """Whether the partition moved in the failover in flight."""
        return self.failover is not None and (topic_id, partition) in self.failover.members

    def topic_in_failover(self, topic: TopicModel) -> bool:
        """Whether any partition of ``topic`` moved in the failover in flight."""
        return self.failover is not None and topic.id in self.failover.topics

    def led_partitions(self, broker_id: int) -> list[tuple[TopicModel, int, PartitionModel]]:
        """Every partition ``broker_id`` leads."""
        return [
            (topic, index, partition)
            for topic in self.topics.values()
            for index, partition in enumerate(topic.partitions)
            if partition.leader == broker_id
        ]

    @property
    def partition_count(self) -> int:
        """Partitions of every topic."""
        return sum(len(t.partitions) for t in self.topics.values())

    # resume --------------------------------------------------------------------------

    @classmethod
    def from_image(cls, config: WorkloadConfig, image: MetadataImage) -> ClusterModel:
        """The model of the cluster ``image`` holds, for a controller that resumes it.

        Topics the controller did not finish creating (no partition or no meta stream
        for one of them) are left out of the model: they stay in the image untouched.
        """
        model = cls()
        for broker in image.cluster.brokers.values():
            model.brokers[broker.id] = BrokerModel(
                broker.id,
                broker.epoch,
                broker.incarnation_id,
                fenced=broker.fenced,
                shutting_down=broker.in_controlled_shutdown,
            )
        streams = image.streams.streams
        kv = image.kv.values
        for topic in image.topics.by_id.values():
            if topic.name.startswith("topic-") and topic.name[6:].isdigit():
                # Every name this controller ever used is taken, finished or not.
                model.topic_serial = max(model.topic_serial, int(topic.name[6:]))
            partitions = []
            for index in range(len(topic.partitions)):
                registration = topic.partitions.get(index)
                value = kv.get(meta_stream_key(config.cluster_id, topic.id, index))
                stream_id = decode_stream_id(value) if value is not None else None
                metadata = streams.get(stream_id) if stream_id is not None else None
                if registration is None or metadata is None:
                    break  # not a topic this controller finished creating
                partitions.append(
                    PartitionModel(
                        registration.replicas,
                        registration.isr,
                        registration.leader,
                        registration.leader_epoch,
                        _stream_model(metadata, registration.leader),
                    )
                )
            else:
                model.topics[topic.id] = TopicModel(topic.id, topic.name, partitions)
        # A crash can cut an event after its streams or objects but before the record
        # that moves the allocator: never hand out an id that is already taken.
        model.next_stream_id = max(image.streams.assigned_stream_id, max(streams, default=-1)) + 1
        objects = image.objects.objects
        model.next_object_id = max(image.objects.assigned_object_id, max(objects, default=-1)) + 1
        plan = kv.get(FAILOVER_KV_KEY)
        if plan is not None:
            model.failover = model._resume_failover(json.loads(plan))
        return model

    def _resume_failover(self, plan: dict[str, int]) -> FailoverModel:
        node = plan["failedNodeId"]
        affected = [
            (topic.id, index)
            for topic in self.topics.values()
            for index, partition in enumerate(topic.partitions)
            if partition.stream.state is StreamState.CLOSED or partition.stream.owner == node
        ]
        closed = any(
            self.topics[t].partitions[i].stream.state is StreamState.CLOSED for t, i in affected
        )
        if closed:
            step = FailoverStep.STREAMS_CLOSED
        elif affected:
            step = FailoverStep.LEADERS_MOVED
        else:
            step = FailoverStep.STREAMS_REOPENED
        return FailoverModel(node, plan["targetNodeId"], plan["nodeEpoch"], affected, step=step)


def _stream_model(metadata: StreamMetadata, leader: int) -> StreamModel:
    return StreamModel(
        metadata.stream_id,
        metadata.epoch,
        metadata.range_index,
        metadata.start_offset,
        metadata.end_offset,
        metadata.last_range.node_id if metadata.last_range else leader,
        metadata.state,
        tuple(r.range_index for r in metadata.ranges),
        tuple(r.start_offset for r in metadata.ranges),
        tuple(
            sorted(
                ((o.object_id, o.start_offset, o.end_offset) for o in metadata.objects.values()),
                key=lambda o: o[1],
            )
        ),
    )
