"""METADATA answers computed from one image: pure code, no event loop.

Error semantics follow Kafka's KRaftMetadataCache (``kafka-kraft-metadata.md``):
UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, LISTENER_NOT_FOUND (v6+),
REPLICA_NOT_AVAILABLE (v0 only), offline replicas, fenced brokers left out of the broker
list, a random alive broker as controller id. Topics asked by id that do not exist get
UNKNOWN_TOPIC_ID, as Kafka answers since KIP-516.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from broker.cache._failover import (
    FailoverIndex,
    FailoverStatus,
    MissingStreamPolicy,
    check_partition,
    failover_index_key,
)
from broker.cache._models import (
    AUTHORIZED_OPERATIONS_OMITTED,
    INTERNAL_TOPICS,
    MAX_METADATA_VERSION,
    BrokerMetadata,
    ErrorCode,
    MetadataRequest,
    MetadataResponse,
    PartitionMetadata,
    TopicMetadata,
)
from broker.metadata import (
    BrokerRegistration,
    DerivedKey,
    MetadataImage,
    PartitionRegistration,
    Provenance,
    StreamsImage,
    TopicImage,
)
from broker.metadata.records import NO_LEADER, ZERO_UUID

__all__ = [
    "DEFAULT_LISTENER",
    "ClusterDescription",
    "DirectoryId",
    "PartitionLeader",
    "alive_brokers",
    "answer_metadata",
    "partition_answer",
]

DEFAULT_LISTENER = "PLAINTEXT"
"""The listener a request is answered for unless it names another."""


class DirectoryId:
    """Kafka's reserved log directory ids (``DirectoryId``); unassigned is ``ZERO_UUID``."""

    LOST = UUID(int=1)
    """The replica's directory failed."""
    MIGRATING = UUID(int=2)
    """The replica is moving between directories (counted online)."""


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    """What DescribeCluster answers: the cluster id, a controller and the live brokers."""

    cluster_id: str
    controller_id: int
    brokers: tuple[BrokerMetadata, ...]
    provenance: Provenance


@dataclass(frozen=True, slots=True)
class PartitionLeader:
    """The leader a METADATA answer reports for one partition, with its error code."""

    error_code: ErrorCode
    leader_id: int
    leader_epoch: int
    provenance: Provenance


class _BrokerView:
    """Per-request facts about one registered broker, for the listener asked about."""

    __slots__ = ("endpoint", "fenced", "log_dirs")

    def __init__(self, broker: BrokerRegistration, listener: str) -> None:
        self.endpoint = broker.listener(listener)
        self.fenced = broker.fenced
        self.log_dirs = broker.log_dirs

    def has_online_dir(self, directory: UUID) -> bool:
        if directory in (ZERO_UUID, DirectoryId.MIGRATING):
            return True
        if directory == DirectoryId.LOST:
            return False
        return not self.log_dirs or directory in self.log_dirs


class _Answer:
    """The state one request is answered from; every read comes from ``image``."""

    def __init__(
        self,
        image: MetadataImage,
        version: int,
        listener: str,
        index: FailoverIndex | None,
        missing_stream: MissingStreamPolicy,
    ) -> None:
        self.version = version
        self.brokers = {b.id: _BrokerView(b, listener) for b in image.cluster.brokers.values()}
        self.streams: StreamsImage = image.streams
        self.index = index
        self.missing_stream = missing_stream

    def _offline(self, partition: PartitionRegistration) -> tuple[int, ...]:
        brokers = self.brokers
        directories = partition.directories
        offline = []
        for i, replica in enumerate(partition.replicas):
            view = brokers.get(replica)
            if (
                view is None
                or view.endpoint is None
                or view.fenced
                or (i < len(directories) and not view.has_online_dir(directories[i]))
            ):
                offline.append(replica)
        return tuple(offline)

    def _available(self, replicas: Iterable[int]) -> tuple[int, ...]:
        brokers = self.brokers
        return tuple(
            r for r in replicas if (v := brokers.get(r)) is not None and v.endpoint is not None
        )

    def partition(
        self, topic: TopicImage, partition_id: int, partition: PartitionRegistration
    ) -> PartitionMetadata:
        replicas, isr = partition.replicas, partition.isr
        if self.version == 0:  # v0 lists only replicas it can reach, and says so
            replicas, isr = self._available(replicas), self._available(isr)
        leader = partition.leader
        view = self.brokers.get(leader) if leader != NO_LEADER else None
        leader_id = NO_LEADER
        if view is None:
            error = ErrorCode.LEADER_NOT_AVAILABLE
        elif view.endpoint is None:
            error = (
                ErrorCode.LISTENER_NOT_FOUND
                if self.version >= 6
                else ErrorCode.LEADER_NOT_AVAILABLE
            )
        else:
            error = ErrorCode.NONE
            leader_id = leader
            if self.version == 0 and (
                len(replicas) < len(partition.replicas) or len(isr) < len(partition.isr)
            ):
                error = ErrorCode.REPLICA_NOT_AVAILABLE
            if self.index is not None and not self._failed_over(topic.id, partition_id, partition):
                error, leader_id = ErrorCode.LEADER_NOT_AVAILABLE, NO_LEADER
        return PartitionMetadata(
            error_code=error,
            partition_index=partition_id,
            leader_id=leader_id,
            leader_epoch=partition.leader_epoch,
            replica_nodes=replicas,
            isr_nodes=isr,
            offline_replicas=self._offline(partition),
        )

    def _failed_over(
        self, topic_id: UUID, partition_id: int, partition: PartitionRegistration
    ) -> bool:
        assert self.index is not None
        status, _ = check_partition(self.index, self.streams, topic_id, partition_id, partition)
        if status is FailoverStatus.NO_META_STREAM:
            return self.missing_stream == "skip"
        return status is FailoverStatus.HEALTHY

    def topic(self, topic: TopicImage) -> TopicMetadata:
        partitions = topic.partitions
        return TopicMetadata(
            error_code=ErrorCode.NONE,
            name=topic.name,
            topic_id=topic.id,
            is_internal=topic.name in INTERNAL_TOPICS,
            partitions=tuple(
                self.partition(topic, p, partitions[p]) for p in sorted(partitions.keys())
            ),
            topic_authorized_operations=AUTHORIZED_OPERATIONS_OMITTED,
        )


def alive_brokers(
    image: MetadataImage, listener: str
) -> tuple[tuple[BrokerMetadata, ...], tuple[int, ...]]:
    """Unfenced brokers with the listener (the broker list) and all unfenced broker ids."""
    listed: list[BrokerMetadata] = []
    unfenced: list[int] = []
    for broker_id, broker in sorted(image.cluster.brokers.items()):
        if broker.fenced:
            continue
        unfenced.append(broker_id)
        endpoint = broker.listener(listener)
        if endpoint is not None:
            listed.append(
                BrokerMetadata(
                    node_id=broker_id, host=endpoint.host, port=endpoint.port, rack=broker.rack
                )
            )
    return tuple(listed), tuple(unfenced)


class _ImageAnswers:
    """Per-image derived state: answers already computed from this image.

    An image never changes, so a topic's answer for a given listener and version class
    is computed once per image however many requests ask; it goes with the image.
    """

    __slots__ = ("brokers", "topics")

    def __init__(self) -> None:
        self.topics: dict[tuple[object, ...], dict[UUID, TopicMetadata]] = {}
        self.brokers: dict[str, tuple[tuple[BrokerMetadata, ...], tuple[int, ...]]] = {}


ANSWERS: DerivedKey[_ImageAnswers] = DerivedKey("metadata-answers", lambda image: _ImageAnswers())


def _version_class(version: int) -> int:
    """Versions whose partition answers are the same: v0, v1-5, v6+."""
    return 0 if version == 0 else (1 if version < 6 else 2)


def answer_metadata(
    image: MetadataImage,
    request: MetadataRequest,
    *,
    cluster_id: str,
    listener: str = DEFAULT_LISTENER,
    failover_check: bool = True,
    missing_stream: MissingStreamPolicy = "skip",
    rng: random.Random | None = None,
) -> MetadataResponse:
    """The METADATA answer for ``request``, computed from ``image`` only (pure)."""
    derived = image.derived(ANSWERS)
    memo = derived.topics.setdefault(
        (listener, _version_class(request.version), cluster_id, failover_check, missing_stream), {}
    )
    answer: _Answer | None = None

    def topic_answer(topic: TopicImage) -> TopicMetadata:
        nonlocal answer
        found = memo.get(topic.id)
        if found is None:
            if answer is None:
                index = image.derived(failover_index_key(cluster_id)) if failover_check else None
                answer = _Answer(image, request.version, listener, index, missing_stream)
            found = memo[topic.id] = answer.topic(topic)
        return found

    topics_image = image.topics
    topics: list[TopicMetadata] = []
    if request.wants_all_topics:
        for _, topic_id in sorted(topics_image.by_name.items()):
            topics.append(topic_answer(topics_image.by_id[topic_id]))
    else:
        seen: set[str | UUID] = set()
        for wanted in request.topics or ():
            by_id = request.version >= 10 and wanted.topic_id not in (None, ZERO_UUID)
            key: str | UUID | None = wanted.topic_id if by_id else wanted.name
            if key is None or key in seen:
                continue
            seen.add(key)
            if by_id:
                assert wanted.topic_id is not None
                found = topics_image.by_id.get(wanted.topic_id)
                missing = TopicMetadata(
                    error_code=ErrorCode.UNKNOWN_TOPIC_ID, name=None, topic_id=wanted.topic_id
                )
            else:
                assert wanted.name is not None
                found = topics_image.get(wanted.name)
                missing = TopicMetadata(
                    error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name=wanted.name
                )
            topics.append(topic_answer(found) if found is not None else missing)
    alive = derived.brokers.get(listener)
    if alive is None:
        alive = derived.brokers[listener] = alive_brokers(image, listener)
    brokers, unfenced = alive
    return MetadataResponse(
        version=request.version,
        brokers=brokers,
        cluster_id=cluster_id if request.version >= 2 else None,
        controller_id=(rng or random).choice(unfenced) if unfenced else NO_LEADER,
        topics=tuple(topics),
        provenance=image.provenance,
    )


def partition_answer(
    image: MetadataImage,
    topic: str,
    partition: int,
    *,
    cluster_id: str,
    listener: str = DEFAULT_LISTENER,
    failover_check: bool = True,
    missing_stream: MissingStreamPolicy = "skip",
) -> PartitionLeader:
    """The leader a METADATA request would report for one partition (pure)."""
    found = image.topics.get(topic)
    registration = found.partitions.get(partition) if found is not None else None
    if found is None or registration is None:
        error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        return PartitionLeader(error, NO_LEADER, -1, image.provenance)
    index = image.derived(failover_index_key(cluster_id)) if failover_check else None
    answer = _Answer(image, MAX_METADATA_VERSION, listener, index, missing_stream)
    entry = answer.partition(found, partition, registration)
    return PartitionLeader(entry.error_code, entry.leader_id, entry.leader_epoch, image.provenance)
