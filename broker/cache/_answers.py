"""METADATA answers computed from one image: pure code, no event loop.

Error semantics follow Kafka's KRaftMetadataCache (``kafka-kraft-metadata.md``):
UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, LISTENER_NOT_FOUND (v6+),
REPLICA_NOT_AVAILABLE (v0 only), offline replicas, fenced brokers left out of the broker
list, a random alive broker as controller id. Topics asked by id that do not exist get
UNKNOWN_TOPIC_ID, as Kafka answers since KIP-516.

Answers are per-image derived state (:class:`ImageAnswers`) that follows the delta: a
topic's answer is computed once per image on first use, and the next image keeps every
answer the delta did not touch, by identity. A delta invalidates the topics it changed,
the topics that name a broker whose view changed, and the topics with a partition whose
failover verdict changed; rebuilding such a topic recomputes only its partitions that
changed. The cost of a new image is what its delta changed, not the cluster's size.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import NamedTuple
from uuid import UUID

from immutables import Map

from broker._intern import Interner
from broker.cache._failover import (
    FailoverState,
    MissingStreamPolicy,
    failover_state_key,
)
from broker.cache._models import (
    AUTHORIZED_OPERATIONS_OMITTED,
    INTERNAL_TOPICS,
    BrokerMetadata,
    ErrorCode,
    MetadataRequest,
    MetadataResponse,
    PartitionMetadata,
    TopicMetadata,
)
from broker.metadata import (
    ClusterImage,
    DerivedKey,
    MetadataDelta,
    MetadataImage,
    PartitionRegistration,
    Provenance,
    TopicImage,
)
from broker.metadata.records import NO_LEADER, ZERO_UUID, BrokerEndpoint

__all__ = [
    "DEFAULT_LISTENER",
    "AnswerSettings",
    "BrokerViews",
    "ClusterDescription",
    "DirectoryId",
    "ImageAnswers",
    "PartitionLeader",
    "answer_metadata",
    "answers_key",
    "version_class",
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
class AnswerSettings:
    """How a cache answers: for which cluster and listener, and with which failover check."""

    cluster_id: str
    listener: str = DEFAULT_LISTENER
    failover_check: bool = True
    missing_stream: MissingStreamPolicy = "skip"


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


def _names_any(partition: PartitionRegistration, brokers: frozenset[int]) -> bool:
    """Whether ``partition`` names any of ``brokers`` (leader, replicas or ISR)."""
    return (
        partition.leader in brokers
        or not brokers.isdisjoint(partition.replicas)
        or not brokers.isdisjoint(partition.isr)
    )


def version_class(version: int) -> int:
    """Versions whose partition answers are the same: v0 (0), v1-5 (1), v6+ (2)."""
    return 0 if version == 0 else (1 if version < 6 else 2)


class _BrokerView(NamedTuple):
    """What a registered broker looks like to one listener: all an answer reads of it."""

    endpoint: BrokerEndpoint | None
    fenced: bool
    log_dirs: tuple[UUID, ...]

    def has_online_dir(self, directory: UUID) -> bool:
        if directory in (ZERO_UUID, DirectoryId.MIGRATING):
            return True
        if directory == DirectoryId.LOST:
            return False
        return not self.log_dirs or directory in self.log_dirs


class BrokerViews:
    """Every registered broker as one listener sees it, the broker list and unfenced ids."""

    __slots__ = ("cluster", "listed", "unfenced", "views")

    def __init__(self, cluster: ClusterImage, listener: str) -> None:
        self.cluster = cluster
        self.views = {
            b.id: _BrokerView(b.listener(listener), b.fenced, b.log_dirs)
            for b in cluster.brokers.values()
        }
        listed: list[BrokerMetadata] = []
        unfenced: list[int] = []
        for broker_id, broker in sorted(cluster.brokers.items()):
            if broker.fenced:
                continue
            unfenced.append(broker_id)
            endpoint = self.views[broker_id].endpoint
            if endpoint is not None:
                listed.append(BrokerMetadata(broker_id, endpoint.host, endpoint.port, broker.rack))
        self.listed = tuple(listed)
        """Unfenced brokers with the listener, by id: the broker list of an answer."""
        self.unfenced = tuple(unfenced)
        """Every unfenced broker id (the controller id is drawn from these)."""

    def changed_since(self, other: BrokerViews) -> frozenset[int]:
        """Brokers whose view differs from ``other``'s (registered, moved or gone)."""
        if other is self:
            return frozenset()
        mine, theirs = self.views, other.views
        return frozenset(
            broker_id
            for broker_id in mine.keys() | theirs.keys()
            if mine.get(broker_id) != theirs.get(broker_id)
        )


class _TopicAnswer(NamedTuple):
    """A topic's answer and the topic image it was computed from."""

    topic: TopicImage
    metadata: TopicMetadata


class _Stale(NamedTuple):
    """An answer later deltas invalidated, kept to reuse what still holds of it.

    ``partitions`` must be redone: their registration or their failover verdict changed
    (None: the topic's partitions themselves changed, redo all); so must every partition
    that names one of ``brokers``, whose view changed."""

    metadata: TopicMetadata
    """The answer; not the topic image it was computed from, which a stale answer would
    keep alive (with the partitions the deltas replaced) until the topic is asked for."""
    partitions: frozenset[int] | None
    brokers: frozenset[int]

    def merged(self, partitions: frozenset[int] | None, brokers: frozenset[int]) -> _Stale:
        """Stale again: what the next delta dirtied too."""
        redo = None
        if self.partitions is not None and partitions is not None:
            redo = self.partitions | partitions
            if len(redo) > _PRECISE:  # not worth tracking: redo all of them
                redo = None
        return _Stale(self.metadata, redo, self.brokers | brokers)


_PRECISE = 64
"""Dirty partitions a stale answer tracks one by one; beyond, the topic is redone."""


class _ClassAnswers:
    """The answers of one version class: valid ones, and stale ones kept for reuse."""

    __slots__ = ("changed", "memo", "stale")

    def __init__(
        self,
        memo: Map[UUID, _TopicAnswer],
        stale: Map[UUID, _Stale],
        changed: frozenset[UUID] | None,
    ) -> None:
        self.memo = memo
        self.stale = stale
        self.changed = changed
        """Topics whose answer may differ from the one the previous image gave (every
        other topic's answer is the same object); None: built cold, no previous."""


_shared_answer: Interner[PartitionMetadata] = Interner()
"""One answer object per value: partition answers repeat across topics and version
classes (the simulated broker at 100k partitions held 219k of 6.5k values)."""
_NO_ANSWERS: Map[UUID, _TopicAnswer] = Map()
_NO_STALE: Map[UUID, _Stale] = Map()
_NOTHING: frozenset[int] = frozenset()
_VERSION_CLASSES = 3


class ImageAnswers:
    """One image's METADATA answers for one set of :class:`AnswerSettings`.

    Topic answers are filled in on first use (lookups and inserts take no lock: two
    threads computing the same topic at once both get a correct answer, and one of them
    is kept). :meth:`following` derives the next image's answers from these.
    """

    __slots__ = ("_classes", "_order", "failover", "settings", "views")

    def __init__(
        self,
        settings: AnswerSettings,
        views: BrokerViews,
        failover: FailoverState | None,
        classes: list[_ClassAnswers],
        order: tuple[UUID, ...] | None = None,
    ) -> None:
        self.settings = settings
        self.views = views
        self.failover = failover
        self._classes = classes
        self._order = order

    @classmethod
    def build(cls, settings: AnswerSettings, image: MetadataImage) -> ImageAnswers:
        """Answers of a new image with nothing computed yet."""
        failover = (
            image.derived(failover_state_key(settings.cluster_id))
            if settings.failover_check
            else None
        )
        classes = [_ClassAnswers(_NO_ANSWERS, _NO_STALE, None) for _ in range(_VERSION_CLASSES)]
        return cls(settings, BrokerViews(image.cluster, settings.listener), failover, classes)

    # following the delta ---------------------------------------------------------------

    def following(self, delta: MetadataDelta, image: MetadataImage) -> ImageAnswers:
        """The answers of ``image`` (``delta`` applied to this one's image): every topic
        answer the delta cannot have changed is kept, by identity; the others are kept
        aside with what must be redone, to reuse the rest of them."""
        settings = self.settings
        views = self.views
        if image.cluster is not views.cluster:
            views = BrokerViews(image.cluster, settings.listener)
        changed_brokers = views.changed_since(self.views)
        failover = (
            image.derived(failover_state_key(settings.cluster_id))
            if settings.failover_check
            else None
        )
        # Topic id -> partitions to redo (None: all of them): those whose registration
        # changed, and those whose failover verdict changed.
        redo: dict[UUID, frozenset[int] | None] = delta.changed_topics()
        if failover is not None and failover.changed:
            verdicts: dict[UUID, set[int]] = {}
            for topic_id, partition in failover.changed:
                verdicts.setdefault(topic_id, set()).add(partition)
            for topic_id, changed in verdicts.items():
                registered = redo.get(topic_id, _NOTHING)
                redo[topic_id] = None if registered is None else registered | changed
        every_verdict = failover is not None and failover.changed is None
        by_id = image.topics.by_id
        classes = []
        for answers in self._classes:
            memo, stale = answers.memo, answers.stale
            topics: dict[UUID, frozenset[int] | None] = dict(redo)
            if every_verdict or changed_brokers:
                for topic_id in memo:
                    topics.setdefault(topic_id, None if every_verdict else _NOTHING)
                if every_verdict:
                    topics.update(dict.fromkeys(stale))
                else:
                    topics.update({t: topics.get(t, _NOTHING) for t in stale})
            if topics:
                memo_changes, stale_changes = memo.mutate(), stale.mutate()
                for topic_id, partitions in topics.items():
                    if topic_id not in by_id:  # deleted: nothing of it to keep
                        memo_changes.pop(topic_id, None)
                        stale_changes.pop(topic_id, None)
                        continue
                    answer = memo_changes.pop(topic_id, None)
                    if answer is not None:
                        stale_changes[topic_id] = _Stale(
                            answer.metadata, partitions, changed_brokers
                        )
                    elif (old := stale_changes.get(topic_id)) is not None:
                        stale_changes[topic_id] = old.merged(partitions, changed_brokers)
                memo, stale = memo_changes.finish(), stale_changes.finish()
            classes.append(_ClassAnswers(memo, stale, frozenset(topics)))
        topics_delta = delta.topics
        order = self._order if topics_delta is None or not topics_delta.renamed() else None
        return ImageAnswers(settings, views, failover, classes, order)

    def changed_topics(self, version: int) -> frozenset[UUID] | None:
        """Topics whose answer at ``version`` may differ from the one the image these
        answers followed gave; every other topic's answer is that same object. None when
        these answers were built cold."""
        return self._classes[version_class(version)].changed

    # answering -------------------------------------------------------------------------

    def order(self, image: MetadataImage) -> tuple[UUID, ...]:
        """Topic ids in name order (the order of an all-topics answer)."""
        order = self._order
        if order is None:
            order = self._order = tuple(t for _, t in sorted(image.topics.by_name.items()))
        return order

    def topic(self, version: int, topic: TopicImage) -> TopicMetadata:
        """The answer for ``topic`` (a topic of this answers' image) at ``version``."""
        answers = self._classes[version_class(version)]
        found = answers.memo.get(topic.id)
        if found is not None and found.topic is topic:
            return found.metadata
        answer = self._topic_answer(version, topic, answers.stale.get(topic.id))
        answers.memo = answers.memo.set(topic.id, answer)
        return answer.metadata

    def _topic_answer(self, version: int, topic: TopicImage, stale: _Stale | None) -> _TopicAnswer:
        registrations = topic.partitions
        topic_id = topic.id
        ordered = sorted(registrations)
        old = stale.metadata.partitions if stale is not None else ()
        redo = stale.partitions if stale is not None else None
        if (
            stale is not None
            and redo is not None
            and len(old) == len(ordered)
            and all(p.partition_index == pid for p, pid in zip(old, ordered, strict=True))
        ):
            # The same partitions: keep every answer but those the deltas dirtied.
            partitions = list(old)
            brokers = stale.brokers
            redone = 0
            for i, partition_id in enumerate(ordered):
                registration = registrations[partition_id]
                if partition_id in redo or (brokers and _names_any(registration, brokers)):
                    partitions[i] = self._partition(version, topic_id, partition_id, registration)
                    redone += 1
            if not redone and stale.metadata.name == topic.name:
                return _TopicAnswer(topic, stale.metadata)  # the same answer object
        else:
            partitions = [
                self._partition(version, topic_id, partition_id, registrations[partition_id])
                for partition_id in ordered
            ]
        metadata = TopicMetadata(
            name=topic.name,
            error_code=ErrorCode.NONE,
            topic_id=topic_id,
            is_internal=topic.name in INTERNAL_TOPICS,
            partitions=tuple(partitions),
            topic_authorized_operations=AUTHORIZED_OPERATIONS_OMITTED,
        )
        return _TopicAnswer(topic, metadata)

    def _partition(
        self, version: int, topic_id: UUID, partition_id: int, partition: PartitionRegistration
    ) -> PartitionMetadata:
        views = self.views.views
        replicas, isr = partition.replicas, partition.isr
        if version == 0:  # v0 lists only replicas it can reach, and says so
            replicas = tuple(r for r in replicas if (v := views.get(r)) and v.endpoint)
            isr = tuple(r for r in isr if (v := views.get(r)) and v.endpoint)
        leader = partition.leader
        view = views.get(leader) if leader != NO_LEADER else None
        leader_id = NO_LEADER
        if view is None:
            error = ErrorCode.LEADER_NOT_AVAILABLE
        elif view.endpoint is None:
            error = ErrorCode.LISTENER_NOT_FOUND if version >= 6 else ErrorCode.LEADER_NOT_AVAILABLE
        else:
            error = ErrorCode.NONE
            leader_id = leader
            if version == 0 and (
                len(replicas) < len(partition.replicas) or len(isr) < len(partition.isr)
            ):
                error = ErrorCode.REPLICA_NOT_AVAILABLE
            failover = self.failover
            if failover is not None and not failover.passes(
                topic_id, partition_id, self.settings.missing_stream
            ):
                error, leader_id = ErrorCode.LEADER_NOT_AVAILABLE, NO_LEADER
        directories = partition.directories
        offline = tuple(
            replica
            for i, replica in enumerate(partition.replicas)
            if (v := views.get(replica)) is None
            or v.endpoint is None
            or v.fenced
            or (i < len(directories) and not v.has_online_dir(directories[i]))
        )
        return _shared_answer(
            PartitionMetadata(
                partition_id, error, leader_id, partition.leader_epoch, replicas, isr, offline
            )
        )

    def topics(self, image: MetadataImage, request: MetadataRequest) -> list[TopicMetadata]:
        """The topic answers ``request`` asks for, in the order a response lists them."""
        version = request.version
        topics_image = image.topics
        if request.wants_all_topics:
            by_id = topics_image.by_id
            return [self.topic(version, by_id[topic_id]) for topic_id in self.order(image)]
        out: list[TopicMetadata] = []
        seen: set[str | UUID] = set()
        for wanted in request.topics or ():
            by_id_request = version >= 12 and wanted.topic_id not in (None, ZERO_UUID)
            key: str | UUID | None = wanted.topic_id if by_id_request else wanted.name
            if key is None or key in seen:
                continue
            seen.add(key)
            if by_id_request:
                assert wanted.topic_id is not None
                found = topics_image.by_id.get(wanted.topic_id)
                if found is None:
                    out.append(
                        TopicMetadata(
                            name=None,
                            error_code=ErrorCode.UNKNOWN_TOPIC_ID,
                            topic_id=wanted.topic_id,
                        )
                    )
                    continue
            else:
                assert wanted.name is not None
                found = topics_image.get(wanted.name)
                if found is None:
                    out.append(
                        TopicMetadata(
                            name=wanted.name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                        )
                    )
                    continue
            out.append(self.topic(version, found))
        return out

    def controller_id(self, rng: random.Random | None = None) -> int:
        """A random unfenced broker, as Kafka's KRaft cache answers (-1: none)."""
        unfenced = self.views.unfenced
        return (rng or random).choice(unfenced) if unfenced else NO_LEADER

    def response(
        self, image: MetadataImage, request: MetadataRequest, rng: random.Random | None = None
    ) -> MetadataResponse:
        """The whole METADATA answer for ``request``."""
        return MetadataResponse(
            version=request.version,
            provenance=image.provenance,
            brokers=self.views.listed,
            cluster_id=self.settings.cluster_id if request.version >= 2 else None,
            controller_id=self.controller_id(rng),
            topics=tuple(self.topics(image, request)),
        )

    def partition_leader(self, image: MetadataImage, topic: str, partition: int) -> PartitionLeader:
        """The leader a METADATA request (latest version) would report for one partition."""
        found = image.topics.get(topic)
        answers = self.topic(MAX_VERSION, found).partitions if found is not None else ()
        answer = next((a for a in answers if a.partition_index == partition), None)
        if answer is None:
            error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            return PartitionLeader(error, NO_LEADER, -1, image.provenance)
        return PartitionLeader(
            answer.error_code, answer.leader_id, answer.leader_epoch, image.provenance
        )


MAX_VERSION = 13

_answer_keys: dict[AnswerSettings, DerivedKey[ImageAnswers]] = {}
_answer_keys_lock = threading.Lock()


def answers_key(settings: AnswerSettings) -> DerivedKey[ImageAnswers]:
    """The derived-state key of the answers for ``settings`` (one per settings)."""
    with _answer_keys_lock:
        key = _answer_keys.get(settings)
        if key is None:
            key = _answer_keys[settings] = DerivedKey(
                f"metadata-answers:{settings.cluster_id}:{settings.listener}",
                lambda image: ImageAnswers.build(settings, image),
                lambda answers, delta, image: answers.following(delta, image),
            )
        return key


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
    settings = AnswerSettings(cluster_id, listener, failover_check, missing_stream)
    return image.derived(answers_key(settings)).response(image, request, rng)
