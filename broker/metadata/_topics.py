"""Topics and partitions: the part of the image that grows to a million entries.

Partitions live in a persistent map per topic and topics in persistent maps by id and
by name, so a delta touching k partitions costs O(k · log N) to apply and shares every
untouched node with the previous image (KAFKA-14735).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple
from uuid import UUID

from immutables import Map, MapMutation

from broker._intern import Interner
from broker.metadata._maps import EMPTY_MAP, Reject, sorted_items
from broker.metadata._pieces import ImagePiece, MapPiece, Part, records_of
from broker.metadata.records import (
    NO_LEADER,
    NO_LEADER_CHANGE,
    LeaderRecoveryState,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RemoveTopicRecord,
    TopicRecord,
    record_encoder,
)

__all__ = [
    "LeadershipChanges",
    "PartitionRegistration",
    "TopicDelta",
    "TopicIdPartition",
    "TopicImage",
    "TopicsDelta",
    "TopicsImage",
]


class PartitionRegistration(NamedTuple):
    """One partition's state.

    A NamedTuple rather than a frozen dataclass: replay creates one per partition
    change, and a tuple is built about twice as fast (see benchmarks/delta_apply.py).
    """

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    removing_replicas: tuple[int, ...]
    adding_replicas: tuple[int, ...]
    leader: int
    leader_recovery_state: LeaderRecoveryState
    leader_epoch: int
    partition_epoch: int
    directories: tuple[UUID, ...] = ()
    elr: tuple[int, ...] = ()
    last_known_elr: tuple[int, ...] = ()

    @classmethod
    def from_record(cls, record: PartitionRecord) -> PartitionRegistration:
        """The registration a PartitionRecord describes."""
        return cls(
            record.replicas,
            record.isr,
            record.removing_replicas,
            record.adding_replicas,
            record.leader,
            record.leader_recovery_state,
            record.leader_epoch,
            record.partition_epoch,
            record.directories,
            record.eligible_leader_replicas,
            record.last_known_elr,
        )

    def to_record(self, topic_id: UUID, partition_id: int) -> PartitionRecord:
        """The PartitionRecord that recreates this partition (snapshots)."""
        return PartitionRecord(**self.record_fields(topic_id, partition_id))

    def record_fields(self, topic_id: UUID, partition_id: int) -> dict[str, Any]:
        """The fields of :meth:`to_record`'s record."""
        return {
            "partition_id": partition_id,
            "topic_id": topic_id,
            "replicas": self.replicas,
            "isr": self.isr,
            "removing_replicas": self.removing_replicas,
            "adding_replicas": self.adding_replicas,
            "leader": self.leader,
            "leader_recovery_state": self.leader_recovery_state,
            "leader_epoch": self.leader_epoch,
            "partition_epoch": self.partition_epoch,
            "directories": self.directories,
            "eligible_leader_replicas": self.elr,
            "last_known_elr": self.last_known_elr,
        }

    @property
    def has_leader(self) -> bool:
        """Whether the partition has a leader (not NO_LEADER)."""
        return self.leader != NO_LEADER

    def merge(self, record: PartitionChangeRecord) -> PartitionRegistration:
        """Apply a change: ``None`` fields keep their value, -2 keeps the leader.

        Any leader in the record (even the same one) bumps the leader epoch, and every
        change bumps the partition epoch, as Kafka's replay does. What replay makes of
        this partition: the rule lives once, in ``TopicsDelta.replay_partition_change``.
        """
        partition_id, topic_id, *_ = _change_fields(record)
        topic = TopicImage("", topic_id, Map({partition_id: self}))
        delta = TopicsDelta(TopicsImage(Map({topic_id: topic}), EMPTY_MAP))
        delta.replay_partition_change(record)
        _shared_registration.trim()  # replay shared the result; an apply would trim
        return delta.changed[topic_id].partitions[partition_id]


def _change_fields(record: PartitionChangeRecord) -> Iterable[Any]:
    """A PartitionChangeRecord's fields in declaration order, to unpack at once.

    A pydantic record's attributes are slow to read (its ``__getattr__`` hook), its
    ``__dict__`` is not; a RecordView (a trusted batch's) is the record's wire array, a
    tuple that starts with its api key and version. Told apart by ``type()``: isinstance
    cost a tenth of a merge. ``TopicsDelta.replay_partition_change`` inlines this.
    """
    if type(record) is PartitionChangeRecord:
        return record.__dict__.values()
    view: tuple[Any, ...] = record[2:]  # type: ignore[index]
    return view


_new_tuple = tuple.__new__
"""Builds a NamedTuple from a tuple without its Python-level ``__new__`` (hot paths)."""


class TopicImage(NamedTuple):
    """A topic and its partitions (a NamedTuple: one is built per changed topic per image)."""

    name: str
    id: UUID
    partitions: Map[int, PartitionRegistration]

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        return records_of(self.write_pieces())

    def write_pieces(self) -> Iterator[Part]:
        """:meth:`write` with the partitions as a map piece (see ``_pieces``)."""
        yield TopicRecord(name=self.name, topic_id=self.id)
        yield MapPiece(
            "partitions", self.partitions, _partition_records, _partition_encoded, (self.id,)
        )


def _partition_records(
    partition_id: int, partition: PartitionRegistration, topic_id: UUID
) -> tuple[PartitionRecord]:
    return (partition.to_record(topic_id, partition_id),)


def _partition_encoded(
    partition_id: int, partition: PartitionRegistration, topic_id: UUID
) -> tuple[bytes, int]:
    return _encode_partition(**partition.record_fields(topic_id, partition_id)), 1


_encode_partition = record_encoder(PartitionRecord)


@dataclass(frozen=True, slots=True)
class TopicsImage:
    """Topics by id and by name."""

    by_id: Map[UUID, TopicImage]
    by_name: Map[str, UUID]
    """Topic id by name: changes only when topics are created, deleted or renamed, so a
    partition change does not touch it."""

    EMPTY: ClassVar[TopicsImage]

    def get(self, name: str) -> TopicImage | None:
        """Topic ``name``, or None."""
        topic_id = self.by_name.get(name)
        return self.by_id.get(topic_id) if topic_id is not None else None

    def partition(self, topic_id: UUID, partition_id: int) -> PartitionRegistration | None:
        """Partition ``partition_id`` of topic ``topic_id``, or None."""
        topic = self.by_id.get(topic_id)
        return topic.partitions.get(partition_id) if topic is not None else None

    def partition_count(self) -> int:
        """Partitions over all topics."""
        return sum(len(topic.partitions) for topic in self.by_id.values())

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        return records_of(self.write_pieces())

    def write_pieces(self) -> Iterator[Part]:
        """:meth:`write` with each topic as a piece (see ``_pieces``)."""
        for _, topic_id in sorted_items(self.by_name):
            topic = self.by_id[topic_id]
            yield ImagePiece(topic_id, topic, topic.write_pieces)


TopicsImage.EMPTY = TopicsImage(EMPTY_MAP, EMPTY_MAP)


@dataclass(frozen=True, slots=True, order=True)
class TopicIdPartition:
    """A partition named by topic name, partition index and topic id."""

    topic_name: str
    partition: int
    topic_id: UUID


@dataclass(frozen=True, slots=True)
class LeadershipChanges:
    """Partitions whose leadership moved to or away from one broker in a delta."""

    broker_id: int
    became_leader: tuple[TopicIdPartition, ...]
    lost_leadership: tuple[TopicIdPartition, ...]


class TopicDelta:
    """Changed partitions of one topic; ``base`` is the topic as the delta found it."""

    __slots__ = ("base", "partitions")

    def __init__(self, base: TopicImage) -> None:
        self.base = base
        self.partitions: dict[int, PartitionRegistration] = {}

    @property
    def name(self) -> str:
        """The topic's name (after this delta)."""
        return self.base.name

    def partition(self, partition_id: int) -> PartitionRegistration | None:
        """Partition ``partition_id`` after this delta, or None."""
        changed = self.partitions.get(partition_id)
        return changed if changed is not None else self.base.partitions.get(partition_id)

    def apply(self) -> TopicImage:
        """The image with these changes (the base image itself when nothing changed)."""
        applied: dict[UUID, TopicImage] = {}
        _apply_topics(applied, ((self.base.id, self),))
        _shared_registration.trim()
        return applied[self.base.id]


def _apply_topics(
    into: MapMutation[UUID, TopicImage] | dict[UUID, TopicImage],
    deltas: Iterable[tuple[UUID, TopicDelta]],
) -> None:
    """Set each delta's topic image, with its changes, under its id in ``into``.

    One loop for all of a delta's topics, not a call per topic: at 1M partitions a
    call per topic was a fiftieth of an image's apply. A topic's changes go into its
    map in one ``update`` (C, from the dict); replay shared their values already.
    """
    for topic_id, delta in deltas:
        changed = delta.partitions
        base = delta.base
        into[topic_id] = (
            _new_tuple(TopicImage, (base.name, base.id, base.partitions.update(changed)))
            if changed
            else base
        )


_new_object = object.__new__
"""Builds an object without calling its ``__init__`` (replay's spare TopicDelta)."""

_shared_registration: Interner[PartitionRegistration] = Interner()
"""One registration object per value in images: partitions repeat each other's
replicas, leader and epochs (the simulated broker at 100k partitions: 290 values).
Replay shares each registration it makes; an apply trims the table."""

_share_registration = _shared_registration.lookup
"""``_shared_registration`` without the bound check, for replay (an apply trims the table,
so it holds at most the distinct values of one delta, as when apply shared them)."""


def _unknown_partition(partition_id: int, topic_name: str) -> Reject:
    return Reject(f"partition {partition_id} of topic {topic_name!r} does not exist")


class TopicsDelta:
    """Changes to topics and their partitions; also answers what changed."""

    __slots__ = ("_spare", "changed", "created", "deleted", "image", "names", "snapshot")

    def __init__(self, image: TopicsImage, *, snapshot: bool = False) -> None:
        self.image = image
        self.snapshot = snapshot
        self._spare: TopicDelta = _new_object(TopicDelta)
        """The TopicDelta a topic's first PartitionChangeRecord claims: an empty shell
        (no ``__init__`` call, one per changed topic) whose fields the claim sets."""
        self.changed: dict[UUID, TopicDelta] = {}
        """Topics with new partitions, or (re)created by a TopicRecord in this delta."""
        self.created: set[UUID] = set()
        self.deleted: dict[UUID, TopicImage] = {}
        """Topics of the base image that this delta removes."""
        self.names: dict[str, UUID | None] = {}
        """Names whose owner changed in this delta (``None``: the name is free)."""

    @classmethod
    def creating(cls, image: TopicsImage) -> TopicsDelta:
        """The delta from EMPTY to ``image``: every topic created with its partitions."""
        delta = cls(TopicsImage.EMPTY)
        for topic_id, topic in image.by_id.items():
            created = TopicDelta(TopicImage(topic.name, topic_id, EMPTY_MAP))
            created.partitions = dict(topic.partitions.items())
            delta.changed[topic_id] = created
            delta.created.add(topic_id)
            delta.names[topic.name] = topic_id
        return delta

    # the current view ----------------------------------------------------------------

    def topic_id(self, name: str) -> UUID | None:
        """The id of topic ``name`` after this delta, or None."""
        if name in self.names:
            return self.names[name]
        topic_id = self.image.by_name.get(name)
        return topic_id if topic_id is not None and topic_id not in self.deleted else None

    def _live_topic(self, topic_id: UUID) -> TopicDelta | TopicImage | None:
        changed = self.changed.get(topic_id)
        if changed is not None:
            return changed
        if topic_id in self.deleted:
            return None
        return self.image.by_id.get(topic_id)

    def topic_name(self, topic_id: UUID) -> str | None:
        """The name of topic ``topic_id`` after this delta, or None."""
        topic = self._live_topic(topic_id)
        return topic.name if topic is not None else None

    def _topic_delta(self, topic_id: UUID) -> TopicDelta:
        topic = self._live_topic(topic_id)
        if topic is None:
            raise Reject(f"topic {topic_id} does not exist")
        if isinstance(topic, TopicDelta):
            return topic
        delta = self.changed[topic_id] = TopicDelta(topic)
        return delta

    def _mentioned(self, topic_id: UUID) -> bool:
        return topic_id in self.created or topic_id in self.deleted

    # replay --------------------------------------------------------------------------

    def replay_topic(self, record: TopicRecord) -> None:
        """Fold a ``TopicRecord`` into this delta."""
        holder = self.topic_id(record.name)
        # A snapshot replaces the whole image: a base topic it has not mentioned yet
        # will be deleted by finish_snapshot, so it does not own the name.
        if (
            holder is not None
            and holder != record.topic_id
            and not (self.snapshot and not self._mentioned(holder))
        ):
            raise Reject(f"topic name {record.name!r} is already used by topic {holder}")
        previous = self._live_topic(record.topic_id)
        if previous is not None and previous.name != record.name:
            self._free_name(previous.name, record.topic_id)
        # A TopicRecord (re)creates the topic with no partitions: PartitionRecords follow.
        self.changed[record.topic_id] = TopicDelta(
            TopicImage(record.name, record.topic_id, EMPTY_MAP)
        )
        self.created.add(record.topic_id)
        self.names[record.name] = record.topic_id

    def _free_name(self, name: str, topic_id: UUID) -> None:
        if self.topic_id(name) == topic_id:
            self.names[name] = None

    def replay_partition(self, record: PartitionRecord) -> None:
        """Fold a ``PartitionRecord`` into this delta."""
        topic = self._topic_delta(record.topic_id)
        created = PartitionRegistration.from_record(record)
        topic.partitions[record.partition_id] = _share_registration(created, created)

    def replay_partition_change(self, record: PartitionChangeRecord) -> None:
        """Fold a ``PartitionChangeRecord`` into this delta: ``None`` fields keep their
        value, -2 keeps the leader; any leader in the record (even the same one) bumps
        the leader epoch, and every change bumps the partition epoch, as Kafka's replay
        does (``PartitionRegistration.merge`` is this rule for one partition)."""
        # The hot path of replay, in one frame: the record is unpacked once and merged
        # here (a call per record was 2.6% of replay). A topic's first change claims its
        # entry in `changed` with the spare TopicDelta in the same lookup that finds it
        # missing: hashing a UUID is a Python call (about 850 instructions).
        (
            partition_id,
            topic_id,
            new_isr,
            new_leader,
            new_replicas,
            new_removing,
            new_adding,
            new_recovery,
            new_directories,
            new_elr,
            new_last_known_elr,
        ) = (
            # _change_fields(record), inline
            record.__dict__.values() if type(record) is PartitionChangeRecord else record[2:]  # type: ignore[index]
        )
        spare = self._spare
        delta = self.changed.setdefault(topic_id, spare)
        current: PartitionRegistration | None
        if delta is spare:
            # Subscripts, not get(): a Map's get builds an argument tuple, a third of a
            # lookup. A missing topic or partition, or a deleted topic, is an error:
            # the claim is undone and _missing says which.
            try:
                base = self.image.by_id[topic_id]
                current = base.partitions[partition_id]
            except KeyError:
                current = None
            if current is None or (self.deleted and topic_id in self.deleted):
                del self.changed[topic_id]
                raise self._missing(topic_id, partition_id)
            delta.base = base
            delta.partitions = {}
            self._spare = _new_object(TopicDelta)
        else:
            current = delta.partitions.get(partition_id)
            if current is None:
                current = delta.base.partitions.get(partition_id)
                if current is None:
                    raise _unknown_partition(partition_id, delta.name)
        (
            replicas,
            isr,
            removing,
            adding,
            leader,
            recovery,
            leader_epoch,
            partition_epoch,
            directories,
            elr,
            last_known_elr,
        ) = current
        if new_leader != NO_LEADER_CHANGE:
            leader, leader_epoch = new_leader, leader_epoch + 1
        if new_recovery != -1:
            recovery = LeaderRecoveryState(new_recovery)
        if new_isr is not None:
            isr = new_isr
        if new_replicas is not None:
            replicas = new_replicas
        if new_removing is not None:
            removing = new_removing
        if new_adding is not None:
            adding = new_adding
        if new_directories is not None:
            directories = new_directories
        if new_elr is not None:
            elr = new_elr
        if new_last_known_elr is not None:
            last_known_elr = new_last_known_elr
        merged = _new_tuple(
            PartitionRegistration,
            (
                replicas,
                isr,
                removing,
                adding,
                leader,
                recovery,
                leader_epoch,
                partition_epoch + 1,
                directories,
                elr,
                last_known_elr,
            ),
        )
        delta.partitions[partition_id] = _share_registration(merged, merged)

    def _missing(self, topic_id: UUID, partition_id: int) -> Reject:
        """Why a change of partition ``partition_id`` of topic ``topic_id`` found no
        partition in the base image (the topic is not live, or lacks the partition)."""
        base = self.image.by_id.get(topic_id)
        if base is None or topic_id in self.deleted:
            return Reject(f"topic {topic_id} does not exist")
        return _unknown_partition(partition_id, base.name)

    def replay_remove_topic(self, record: RemoveTopicRecord) -> str:
        """Remove a topic; returns its name (the caller drops its configs)."""
        topic = self._live_topic(record.topic_id)
        if topic is None:
            raise Reject(f"topic {record.topic_id} does not exist")
        self._remove(record.topic_id, topic.name)
        return topic.name

    def _remove(self, topic_id: UUID, name: str) -> None:
        # Free the names while the topic is still visible: _free_name looks it up.
        base = self.image.by_id.get(topic_id)
        self._free_name(name, topic_id)
        if base is not None and base.name != name:
            self._free_name(base.name, topic_id)
        self.changed.pop(topic_id, None)
        self.created.discard(topic_id)
        if base is not None:
            self.deleted[topic_id] = base

    def finish_snapshot(self) -> None:
        """Delete every base topic the snapshot did not (re)create."""
        for topic_id, topic in self.image.by_id.items():
            if topic_id not in self.created and topic_id not in self.deleted:
                live = self._live_topic(topic_id)
                self._remove(topic_id, live.name if live is not None else topic.name)

    # apply ---------------------------------------------------------------------------

    def apply(self) -> TopicsImage:
        """The image with these changes (the base image itself when nothing changed)."""
        if not self.changed and not self.deleted:
            return self.image
        by_id = self.image.by_id.mutate()
        for topic_id in self.deleted:
            by_id.pop(topic_id, None)
        _apply_topics(by_id, self.changed.items())
        _shared_registration.trim()
        by_name = self.image.by_name
        if self.names:
            names = by_name.mutate()
            for name, owner in self.names.items():
                if owner is None:
                    names.pop(name, None)
                else:
                    names[name] = owner
            by_name = names.finish()
        return TopicsImage(by_id.finish(), by_name)

    # what changed --------------------------------------------------------------------

    def changed_topics(self) -> dict[UUID, frozenset[int] | None]:
        """Topic id -> the partitions this delta changed in it, or None when the whole
        topic changed (created, re-created or deleted)."""
        out: dict[UUID, frozenset[int] | None] = dict.fromkeys(self.deleted)
        by_id = self.image.by_id
        for topic_id, delta in self.changed.items():
            base = by_id.get(topic_id)
            whole = base is None or delta.base is not base or topic_id in self.deleted
            out[topic_id] = None if whole else frozenset(delta.partitions)
        return out

    def renamed(self) -> bool:
        """Whether any name now belongs to another topic, or to none (by_name changes)."""
        return bool(self.names)

    def created_topic_ids(self) -> frozenset[UUID]:
        """Ids of the topics this delta creates."""
        return frozenset(self.created)

    def deleted_topics(self) -> tuple[TopicImage, ...]:
        """Base-image topics this delta removes (including ones it then re-creates)."""
        return tuple(self.deleted.values())

    def leadership_changes(self, broker_id: int) -> LeadershipChanges:
        """Partitions whose leader moved to, or away from, ``broker_id``."""
        became: list[TopicIdPartition] = []
        lost: list[TopicIdPartition] = []
        for topic_id, removed in self.deleted.items():
            if topic_id in self.changed:
                continue  # re-created: compared below
            for partition_id, partition in removed.partitions.items():
                if partition.leader == broker_id:
                    lost.append(TopicIdPartition(removed.name, partition_id, topic_id))
        for topic_id, delta in self.changed.items():
            base = self.image.by_id.get(topic_id)
            base_partitions = base.partitions if base is not None else EMPTY_MAP
            for partition_id, partition in delta.partitions.items():
                before = base_partitions.get(partition_id)
                was_leader = before is not None and before.leader == broker_id
                is_leader = partition.leader == broker_id
                if is_leader and not was_leader:
                    became.append(TopicIdPartition(delta.name, partition_id, topic_id))
                elif was_leader and not is_leader:
                    lost.append(TopicIdPartition(delta.name, partition_id, topic_id))
            if delta.base is not base and base is not None:
                # Re-created topic: partitions it no longer has were lost as well.
                for partition_id, partition in base.partitions.items():
                    if partition.leader == broker_id and partition_id not in delta.partitions:
                        lost.append(TopicIdPartition(delta.name, partition_id, topic_id))
        return LeadershipChanges(broker_id, tuple(sorted(became)), tuple(sorted(lost)))
