"""The metadata delta: records replayed onto an image, applied into the next image.

A delta is mutable and lazy: a sub-delta exists only once a record touches its area, and
``apply`` reuses every untouched sub-image object of the base image as is. A record that
cannot apply raises ReplayError and leaves the delta exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from broker.errors import BrokerError, ReplayError
from broker.metadata import records as r
from broker.metadata._cluster import ClusterDelta
from broker.metadata._configs import ClientQuotasDelta, ConfigResource, ConfigurationsDelta
from broker.metadata._features import FeaturesDelta, ProducerIdsDelta
from broker.metadata._image import SUB_IMAGES, MetadataImage, Provenance
from broker.metadata._maps import Reject
from broker.metadata._security import AclsDelta, DelegationTokensDelta, ScramDelta
from broker.metadata._streams import KVDelta, NodeWALDelta, ObjectsDelta, StreamsDelta
from broker.metadata._topics import LeadershipChanges, TopicImage, TopicsDelta

__all__ = ["MetadataDelta", "replay_records"]

# Sub-delta class per sub-image, in SUB_IMAGES order.
_DELTA_TYPES: dict[str, Any] = {
    "features": FeaturesDelta,
    "cluster": ClusterDelta,
    "topics": TopicsDelta,
    "configs": ConfigurationsDelta,
    "client_quotas": ClientQuotasDelta,
    "producer_ids": ProducerIdsDelta,
    "acls": AclsDelta,
    "scram": ScramDelta,
    "delegation_tokens": DelegationTokensDelta,
    "streams": StreamsDelta,
    "objects": ObjectsDelta,
    "node_wal": NodeWALDelta,
    "kv": KVDelta,
}
assert tuple(_DELTA_TYPES) == SUB_IMAGES


class MetadataDelta:
    """Changes on top of ``image``.

    ``snapshot=True`` marks a delta that replays a whole snapshot: the base image's
    entities the snapshot has not mentioned yet do not conflict with it, and
    ``finish_snapshot()`` must be called before ``apply()`` to delete them.
    """

    __slots__ = ("_bound", "_finished", "_frozen", "_image", "_parts", "_snapshot", "records")

    def __init__(self, image: MetadataImage, *, snapshot: bool = False) -> None:
        image.check_live("MetadataDelta base")
        self._image = image
        self._snapshot = snapshot
        self._finished = False
        self._frozen = False
        self._parts: dict[str, Any] = {}
        self._bound: dict[type, Callable[[r.MetadataRecord], None]] = {}
        """Per record type, its replay method bound to this delta's sub-delta."""
        self.records = 0
        """Records replayed successfully into this delta."""

    @classmethod
    def creating(cls, image: MetadataImage) -> MetadataDelta:
        """The delta from EMPTY to ``image``, built from the image's maps.

        Equivalent to replaying ``image.write()`` onto EMPTY (a property test checks
        it) at a fraction of the cost: a consumer that joins late gets this.
        """
        delta = cls(MetadataImage.EMPTY)
        empty = MetadataImage.EMPTY.sub_images()
        for name, part in image.sub_images().items():
            if part != empty[name]:
                delta._parts[name] = _DELTA_TYPES[name].creating(part)
        return delta

    @property
    def image(self) -> MetadataImage:
        """The base image this delta applies to."""
        return self._image

    @property
    def is_snapshot(self) -> bool:
        """Whether this delta loads a snapshot (it replaces the whole image)."""
        return self._snapshot

    def _part(self, name: str) -> Any:
        part = self._parts.get(name)
        if part is None:
            base = getattr(self._image, name)
            if name in ("topics", "streams"):
                part = _DELTA_TYPES[name](base, snapshot=self._snapshot)
            else:
                part = _DELTA_TYPES[name](base)
            self._parts[name] = part
        return part

    # sub-deltas, None while untouched ----------------------------------------------------

    @property
    def topics(self) -> TopicsDelta | None:
        """The topics' changes, or None if no record touched them."""
        return self._parts.get("topics")

    @property
    def cluster(self) -> ClusterDelta | None:
        """The brokers' and controllers' changes, or None if no record touched them."""
        return self._parts.get("cluster")

    @property
    def streams(self) -> StreamsDelta | None:
        """The streams' changes, or None if no record touched them."""
        return self._parts.get("streams")

    @property
    def kv(self) -> KVDelta | None:
        """The KV map's changes, or None if no record touched it."""
        return self._parts.get("kv")

    def changed_areas(self) -> frozenset[str]:
        """Names of the sub-images records of this delta touched."""
        return frozenset(self._parts)

    # replay ----------------------------------------------------------------------------

    def freeze(self) -> None:
        """Refuse further replay: the publisher freezes a delta before sharing it."""
        self._frozen = True

    @property
    def frozen(self) -> bool:
        """Whether the delta was applied and published: it is read-only then."""
        return self._frozen

    def replay(self, record: r.MetadataRecord, offset: int | None = None) -> None:
        """Replay one record; ``offset`` only serves error messages."""
        self.replay_all((record,), offset)

    def replay_all(
        self, records: Iterable[r.MetadataRecord], base_offset: int | None = None
    ) -> None:
        """Replay ``records`` in order (``base_offset`` numbers them in error messages).

        On a ReplayError the records before the failing one stay replayed; the failing
        one changed nothing.
        """
        if self._frozen:
            raise BrokerError("this delta was published and is read-only")
        # The hot loop of every replay: a record of the same type as the one before
        # goes straight to the method bound to its sub-delta, another type finds its
        # bound method in one lookup (a log mixes types: binding anew at each switch was
        # about a fifth of replay); the count is settled once.
        bound = self._bound
        replayed = 0
        record: r.MetadataRecord | None = None
        last_kind: type | None = None
        # bound to the first record's sub-delta method before its first call
        replay_one: Callable[[r.MetadataRecord], None] = self.replay
        try:
            for record in records:
                kind = type(record)
                if kind is not last_kind:
                    found = bound.get(kind)
                    replay_one = found if found is not None else self._bind(kind)
                    last_kind = kind
                replay_one(record)
                replayed += 1
        except Reject as reject:
            assert record is not None
            offset = None if base_offset is None else base_offset + replayed
            raise ReplayError(type(record).__name__, str(reject), offset=offset) from None
        finally:
            self.records += replayed

    def _bind(self, kind: type) -> Callable[[r.MetadataRecord], None]:
        """The replay method of records of type ``kind``, bound to the sub-delta it
        changes (created now if need be), remembered for this delta unless it is bound
        to the delta itself."""
        rule = _HANDLERS.get(kind)
        if rule is None:
            # A RecordView replays by its record type's rule. Asked second: a pydantic
            # model class answers a missing attribute by raising in its metaclass's
            # __getattr__, a few microseconds per delta.
            rule = _HANDLERS.get(getattr(kind, "record_class", kind))
        if rule is None:
            raise Reject("no replay rule for this record type")
        area, method = rule
        # the sub-delta's method itself: no wrapper call per record
        replay_one: Callable[[r.MetadataRecord], None] = method.__get__(
            self if area is None else self._part(area)
        )
        if area is not None:
            # One bound to the delta itself is not remembered: that would be a reference
            # cycle, and deltas are freed by reference counting (see broker._gc).
            self._bound[kind] = replay_one
        return replay_one

    def _remove_topic(self, record: r.RemoveTopicRecord) -> None:
        name = self._part("topics").replay_remove_topic(record)
        # A removed topic takes its configs with it.
        self._part("configs").delete_resource(ConfigResource(r.ConfigResourceType.TOPIC, name))

    def finish_snapshot(self) -> None:
        """Delete everything of the base image that the replayed snapshot did not mention."""
        if self._frozen:
            raise BrokerError("this delta was published and is read-only")
        for name in SUB_IMAGES:
            self._part(name).finish_snapshot()
        self._finished = True

    # apply -----------------------------------------------------------------------------

    def apply(self, provenance: Provenance) -> MetadataImage:
        """The next image; it holds one reference, owned by the caller.

        Derived state of the base image whose key can follow a delta (answers, encoded
        fragments, indexes) is carried over to the new image here, redoing only what
        this delta touched; a snapshot's image starts with none.
        """
        if self._snapshot and not self._finished:
            raise BrokerError(
                "a snapshot delta must be finished (finish_snapshot()) before apply()"
            )
        base = self._image
        image = base._successor(
            provenance, {name: part.apply() for name, part in self._parts.items()}
        )
        if not self._snapshot:
            image.inherit_derived(base, self)
        return image

    # what changed ----------------------------------------------------------------------

    def changed_topics(self) -> dict[UUID, frozenset[int] | None]:
        """Topic id -> the partitions this delta changed in it, or None when the whole
        topic changed (created, re-created or deleted)."""
        topics = self.topics
        return topics.changed_topics() if topics is not None else {}

    def changed_broker_ids(self) -> frozenset[int]:
        """Brokers whose registration this delta sets, changes or removes."""
        cluster = self.cluster
        return frozenset(cluster.brokers.changes) if cluster is not None else frozenset()

    def changed_kv_keys(self) -> frozenset[str]:
        """Keys of the KV map this delta sets or deletes."""
        kv = self.kv
        return frozenset(kv.changes.changes) if kv is not None else frozenset()

    def changed_stream_ids(self) -> frozenset[int]:
        """Streams this delta creates, changes (ranges, objects, state) or removes."""
        streams = self.streams
        return frozenset(streams.streams.changes) if streams is not None else frozenset()

    def changed_config_resources(self) -> frozenset[ConfigResource]:
        """Config resources whose configs this delta changes (removed topics' included)."""
        configs: ConfigurationsDelta | None = self._parts.get("configs")
        if configs is None:
            return frozenset()
        return frozenset(key for key, inner in configs.changes.inner.items() if inner.changes)

    def created_topic_ids(self) -> frozenset[UUID]:
        """Ids of the topics this delta creates."""
        topics = self.topics
        return topics.created_topic_ids() if topics is not None else frozenset()

    def deleted_topics(self) -> tuple[TopicImage, ...]:
        """Base-image topics this delta removes (including ones it then re-creates)."""
        topics = self.topics
        return topics.deleted_topics() if topics is not None else ()

    def leadership_changes(self, broker_id: int) -> LeadershipChanges:
        """Partitions whose leader moved to, or away from, ``broker_id``."""
        topics = self.topics
        if topics is None:
            return LeadershipChanges(broker_id, (), ())
        return topics.leadership_changes(broker_id)

    def __repr__(self) -> str:
        kind = "snapshot " if self._snapshot else ""
        areas = ",".join(sorted(self._parts)) or "-"
        base = self._image.describe()
        return f"<MetadataDelta {kind}on {base} records={self.records} areas={areas}>"


_Rule = tuple[str | None, Callable[[Any, Any], None]]
"""A record type's replay rule: the sub-delta area and its method, or None and a
function of the whole delta."""


def _on(name: str, method: Callable[[Any, Any], None]) -> _Rule:
    return name, method


def _whole(function: Callable[[MetadataDelta, Any], None]) -> _Rule:
    return None, function


def _ignore(delta: MetadataDelta, record: Any) -> None:
    """Records with no image state: transaction markers are handled by the loader."""


_HANDLERS: dict[type[r.MetadataRecord], _Rule] = {
    r.RegisterBrokerRecord: _on("cluster", ClusterDelta.replay_register_broker),
    r.UnregisterBrokerRecord: _on("cluster", ClusterDelta.replay_unregister_broker),
    r.FenceBrokerRecord: _on("cluster", ClusterDelta.replay_fence_broker),
    r.UnfenceBrokerRecord: _on("cluster", ClusterDelta.replay_unfence_broker),
    r.BrokerRegistrationChangeRecord: _on("cluster", ClusterDelta.replay_registration_change),
    r.RegisterControllerRecord: _on("cluster", ClusterDelta.replay_register_controller),
    r.TopicRecord: _on("topics", TopicsDelta.replay_topic),
    r.PartitionRecord: _on("topics", TopicsDelta.replay_partition),
    r.PartitionChangeRecord: _on("topics", TopicsDelta.replay_partition_change),
    r.RemoveTopicRecord: _whole(MetadataDelta._remove_topic),
    r.ConfigRecord: _on("configs", ConfigurationsDelta.replay_config),
    r.FeatureLevelRecord: _on("features", FeaturesDelta.replay_feature_level),
    r.ClientQuotaRecord: _on("client_quotas", ClientQuotasDelta.replay_client_quota),
    r.ProducerIdsRecord: _on("producer_ids", ProducerIdsDelta.replay_producer_ids),
    r.AccessControlEntryRecord: _on("acls", AclsDelta.replay_acl),
    r.RemoveAccessControlEntryRecord: _on("acls", AclsDelta.replay_remove_acl),
    r.UserScramCredentialRecord: _on("scram", ScramDelta.replay_credential),
    r.RemoveUserScramCredentialRecord: _on("scram", ScramDelta.replay_remove_credential),
    r.DelegationTokenRecord: _on("delegation_tokens", DelegationTokensDelta.replay_token),
    r.RemoveDelegationTokenRecord: _on(
        "delegation_tokens", DelegationTokensDelta.replay_remove_token
    ),
    r.S3StreamRecord: _on("streams", StreamsDelta.replay_stream),
    r.RemoveS3StreamRecord: _on("streams", StreamsDelta.replay_remove_stream),
    r.RangeRecord: _on("streams", StreamsDelta.replay_range),
    r.RemoveRangeRecord: _on("streams", StreamsDelta.replay_remove_range),
    r.S3StreamObjectRecord: _on("streams", StreamsDelta.replay_stream_object),
    r.RemoveS3StreamObjectRecord: _on("streams", StreamsDelta.replay_remove_stream_object),
    r.AssignedStreamIdRecord: _on("streams", StreamsDelta.replay_assigned_stream_id),
    r.S3ObjectRecord: _on("objects", ObjectsDelta.replay_object),
    r.RemoveS3ObjectRecord: _on("objects", ObjectsDelta.replay_remove_object),
    r.AssignedS3ObjectIdRecord: _on("objects", ObjectsDelta.replay_assigned_object_id),
    r.NodeWALMetadataRecord: _on("node_wal", NodeWALDelta.replay_node),
    r.KVRecord: _on("kv", KVDelta.replay_kv),
    r.RemoveKVRecord: _on("kv", KVDelta.replay_remove_kv),
    r.NoOpRecord: _whole(_ignore),
    r.BeginTransactionRecord: _whole(_ignore),
    r.EndTransactionRecord: _whole(_ignore),
    r.AbortTransactionRecord: _whole(_ignore),
}
assert set(_HANDLERS) == set(r.RECORD_TYPES.values()), "every record type needs a replay rule"


def replay_records(
    records: Iterable[r.MetadataRecord],
    provenance: Provenance,
    *,
    onto: MetadataImage = MetadataImage.EMPTY,
    snapshot: bool = False,
) -> MetadataImage:
    """Replay ``records`` onto ``onto`` and apply: the caller owns the returned image."""
    delta = MetadataDelta(onto, snapshot=snapshot)
    delta.replay_all(records)
    if snapshot:
        delta.finish_snapshot()
    return delta.apply(provenance)
