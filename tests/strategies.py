"""Hypothesis strategies: random *valid* record sequences over every record type.

A small model of the cluster tracks just what validity needs (registered brokers and
epochs, live topics and their partitions, ACL ids, streams with their ranges and
objects, objects), so every drawn record replays without error. Ids and names come from
small pools so that re-creation, name reuse and overlapping ids are common.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st

from broker.metadata import encode_stream_id, meta_stream_key
from broker.metadata.records import (
    AccessControlEntryRecord,
    AssignedS3ObjectIdRecord,
    AssignedStreamIdRecord,
    BrokerEndpoint,
    BrokerFeature,
    BrokerRegistrationChangeRecord,
    ClientQuotaEntity,
    ClientQuotaRecord,
    ConfigRecord,
    ConfigResourceType,
    DelegationTokenRecord,
    FeatureLevelRecord,
    FenceBrokerRecord,
    KeyValue,
    KVRecord,
    LeaderRecoveryState,
    MetadataRecord,
    NodeWALMetadataRecord,
    NoOpRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RangeRecord,
    RegisterBrokerRecord,
    RegisterControllerRecord,
    RemoveAccessControlEntryRecord,
    RemoveDelegationTokenRecord,
    RemoveKVRecord,
    RemoveRangeRecord,
    RemoveS3ObjectRecord,
    RemoveS3StreamObjectRecord,
    RemoveS3StreamRecord,
    RemoveTopicRecord,
    RemoveUserScramCredentialRecord,
    S3ObjectRecord,
    S3ObjectState,
    S3StreamObjectRecord,
    S3StreamRecord,
    ScramMechanism,
    StreamState,
    TopicRecord,
    UnfenceBrokerRecord,
    UnregisterBrokerRecord,
    UserScramCredentialRecord,
)

UUIDS = tuple(uuid.UUID(int=i + 1) for i in range(6))
TOPIC_NAMES = ("alpha", "beta", "gamma", "delta")
BROKER_IDS = st.integers(0, 4)
SMALL = st.integers(0, 5)
replica_lists = st.lists(BROKER_IDS, max_size=4, unique=True).map(tuple)
endpoints = st.lists(
    st.builds(
        BrokerEndpoint,
        name=st.sampled_from(("PLAINTEXT", "INTERNAL")),
        host=st.sampled_from(("h1", "h2")),
        port=st.integers(1, 65535),
        security_protocol=st.sampled_from((0, 1)),
    ),
    max_size=2,
    unique_by=lambda e: e.name,
).map(tuple)


@dataclass
class _Model:
    brokers: dict[int, int] = field(default_factory=dict)
    topics: dict[uuid.UUID, tuple[str, set[int]]] = field(default_factory=dict)
    acls: set[uuid.UUID] = field(default_factory=set)
    streams: dict[int, tuple[set[int], set[int]]] = field(default_factory=dict)
    objects: set[int] = field(default_factory=set)

    def topic_holding(self, name: str) -> uuid.UUID | None:
        return next((t for t, (n, _) in self.topics.items() if n == name), None)


_kinds: dict[str, Callable[[_Model, st.DataObject], list[MetadataRecord]]] = {}


def _kind(name: str) -> Callable[[Callable[[_Model, st.DataObject], list[MetadataRecord]]], None]:
    def register(fn: Callable[[_Model, st.DataObject], list[MetadataRecord]]) -> None:
        _kinds[name] = fn

    return register


@_kind("feature")
def _feature(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    name = d.draw(st.sampled_from(("metadata.version", "kraft.version", "group.version")))
    return [FeatureLevelRecord(name=name, feature_level=d.draw(st.integers(0, 3)))]


@_kind("register_broker")
def _register_broker(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    broker_id = d.draw(BROKER_IDS)
    epoch = d.draw(st.integers(0, 1000))
    m.brokers[broker_id] = epoch
    return [
        RegisterBrokerRecord(
            broker_id=broker_id,
            incarnation_id=d.draw(st.sampled_from(UUIDS)),
            broker_epoch=epoch,
            end_points=d.draw(endpoints),
            features=d.draw(
                st.lists(
                    st.builds(
                        BrokerFeature,
                        name=st.sampled_from(("metadata.version", "kraft.version")),
                        min_supported_version=st.integers(0, 2),
                        max_supported_version=st.integers(2, 9),
                    ),
                    max_size=2,
                ).map(tuple)
            ),
            rack=d.draw(st.none() | st.sampled_from(("r1", "r2"))),
            fenced=d.draw(st.booleans()),
            in_controlled_shutdown=d.draw(st.booleans()),
            log_dirs=d.draw(st.lists(st.sampled_from(UUIDS), max_size=2).map(tuple)),
        )
    ]


def _registered(m: _Model, d: st.DataObject) -> tuple[int, int] | None:
    if not m.brokers:
        return None
    broker_id = d.draw(st.sampled_from(sorted(m.brokers)))
    return broker_id, m.brokers[broker_id]


@_kind("unregister_broker")
def _unregister(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if (b := _registered(m, d)) is None:
        return []
    del m.brokers[b[0]]
    return [UnregisterBrokerRecord(broker_id=b[0], broker_epoch=b[1])]


@_kind("fence")
def _fence(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if (b := _registered(m, d)) is None:
        return []
    record = d.draw(st.sampled_from((FenceBrokerRecord, UnfenceBrokerRecord)))
    return [record(id=b[0], epoch=b[1])]


@_kind("registration_change")
def _registration_change(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if (b := _registered(m, d)) is None:
        return []
    return [
        BrokerRegistrationChangeRecord(
            broker_id=b[0],
            broker_epoch=b[1],
            fenced=d.draw(st.sampled_from((-1, 0, 1))),
            in_controlled_shutdown=d.draw(st.sampled_from((0, 1))),
            log_dirs=d.draw(st.none() | st.lists(st.sampled_from(UUIDS), max_size=2).map(tuple)),
        )
    ]


@_kind("register_controller")
def _register_controller(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    return [
        RegisterControllerRecord(
            controller_id=d.draw(st.integers(3000, 3002)),
            incarnation_id=d.draw(st.sampled_from(UUIDS)),
            end_points=d.draw(endpoints),
        )
    ]


@_kind("topic")
def _topic(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    topic_id = d.draw(st.sampled_from(UUIDS))
    name = d.draw(st.sampled_from(TOPIC_NAMES))
    holder = m.topic_holding(name)
    if holder is not None and holder != topic_id:
        return []
    m.topics[topic_id] = (name, set())
    return [TopicRecord(name=name, topic_id=topic_id)]


def _live_topic(m: _Model, d: st.DataObject, *, with_partitions: bool = False) -> uuid.UUID | None:
    candidates = sorted(t for t, (_, p) in m.topics.items() if p or not with_partitions)
    return d.draw(st.sampled_from(candidates)) if candidates else None


@_kind("partition")
def _partition(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if (topic_id := _live_topic(m, d)) is None:
        return []
    partition_id = d.draw(st.integers(0, 3))
    m.topics[topic_id][1].add(partition_id)
    return [
        PartitionRecord(
            partition_id=partition_id,
            topic_id=topic_id,
            replicas=d.draw(replica_lists),
            isr=d.draw(replica_lists),
            removing_replicas=d.draw(replica_lists),
            adding_replicas=d.draw(replica_lists),
            leader=d.draw(st.integers(-1, 4)),
            leader_recovery_state=d.draw(st.sampled_from(LeaderRecoveryState)),
            leader_epoch=d.draw(st.integers(-1, 50)),
            partition_epoch=d.draw(st.integers(-1, 50)),
            directories=d.draw(st.lists(st.sampled_from(UUIDS), max_size=2).map(tuple)),
            eligible_leader_replicas=d.draw(replica_lists),
            last_known_elr=d.draw(replica_lists),
        )
    ]


@_kind("partition_change")
def _partition_change(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if (topic_id := _live_topic(m, d, with_partitions=True)) is None:
        return []
    partition_id = d.draw(st.sampled_from(sorted(m.topics[topic_id][1])))
    maybe = st.none() | replica_lists
    return [
        PartitionChangeRecord(
            partition_id=partition_id,
            topic_id=topic_id,
            isr=d.draw(maybe),
            leader=d.draw(st.integers(-2, 4)),
            replicas=d.draw(maybe),
            removing_replicas=d.draw(maybe),
            adding_replicas=d.draw(maybe),
            leader_recovery_state=d.draw(st.integers(-1, 1)),
            directories=d.draw(st.none() | st.lists(st.sampled_from(UUIDS), max_size=2).map(tuple)),
            eligible_leader_replicas=d.draw(maybe),
            last_known_elr=d.draw(maybe),
        )
    ]


@_kind("remove_topic")
def _remove_topic(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if (topic_id := _live_topic(m, d)) is None:
        return []
    del m.topics[topic_id]
    return [RemoveTopicRecord(topic_id=topic_id)]


@_kind("config")
def _config(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    return [
        ConfigRecord(
            resource_type=d.draw(
                st.sampled_from((ConfigResourceType.TOPIC, ConfigResourceType.BROKER))
            ),
            resource_name=d.draw(st.sampled_from((*TOPIC_NAMES, "0", "1"))),
            name=d.draw(st.sampled_from(("retention.ms", "cleanup.policy"))),
            value=d.draw(st.none() | st.sampled_from(("1", "2", "compact"))),
        )
    ]


@_kind("client_quota")
def _client_quota(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    entity = d.draw(
        st.lists(
            st.builds(
                ClientQuotaEntity,
                entity_type=st.sampled_from(("user", "client-id")),
                entity_name=st.none() | st.sampled_from(("u1", "u2")),
            ),
            min_size=1,
            max_size=2,
            unique_by=lambda e: e.entity_type,
        ).map(tuple)
    )
    return [
        ClientQuotaRecord(
            entity=entity,
            key=d.draw(st.sampled_from(("producer_byte_rate", "request_percentage"))),
            value=d.draw(st.floats(0, 1e6, allow_nan=False)),
            remove=d.draw(st.booleans()),
        )
    ]


@_kind("producer_ids")
def _producer_ids(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    return [
        ProducerIdsRecord(
            broker_id=d.draw(BROKER_IDS), next_producer_id=d.draw(st.integers(0, 10**6))
        )
    ]


@_kind("acl")
def _acl(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if len(m.acls) > 0 and d.draw(st.booleans()):
        acl_id = d.draw(st.sampled_from(sorted(m.acls)))
        m.acls.discard(acl_id)
        return [RemoveAccessControlEntryRecord(id=acl_id)]
    acl_id = d.draw(st.sampled_from(UUIDS))
    m.acls.add(acl_id)
    return [
        AccessControlEntryRecord(
            id=acl_id,
            resource_type=d.draw(st.integers(2, 4)),
            resource_name=d.draw(st.sampled_from(TOPIC_NAMES)),
            pattern_type=3,
            principal=d.draw(st.sampled_from(("User:a", "User:b"))),
            host="*",
            operation=d.draw(st.integers(2, 4)),
            permission_type=3,
        )
    ]


@_kind("scram")
def _scram(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    name = d.draw(st.sampled_from(("alice", "bob")))
    mechanism = d.draw(st.sampled_from(ScramMechanism))
    if d.draw(st.booleans()):
        return [RemoveUserScramCredentialRecord(name=name, mechanism=mechanism)]
    return [
        UserScramCredentialRecord(
            name=name,
            mechanism=mechanism,
            salt=d.draw(st.binary(max_size=4)),
            stored_key=d.draw(st.binary(max_size=4)),
            server_key=b"k",
            iterations=d.draw(st.integers(4096, 8192)),
        )
    ]


@_kind("token")
def _token(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    token_id = d.draw(st.sampled_from(("t1", "t2", "t3")))
    if d.draw(st.booleans()):
        return [RemoveDelegationTokenRecord(token_id=token_id)]
    return [
        DelegationTokenRecord(
            owner="User:a",
            requester="User:b",
            renewers=d.draw(st.lists(st.sampled_from(("User:a", "User:c")), max_size=2).map(tuple)),
            issue_timestamp=d.draw(st.integers(0, 100)),
            max_timestamp=200,
            expiration_timestamp=150,
            token_id=token_id,
        )
    ]


@_kind("noop")
def _noop(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    return [NoOpRecord()]


@_kind("stream")
def _stream(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    stream_id = d.draw(SMALL)
    m.streams.setdefault(stream_id, (set(), set()))
    return [
        S3StreamRecord(
            stream_id=stream_id,
            epoch=d.draw(st.integers(0, 9)),
            range_index=d.draw(st.integers(-1, 3)),
            start_offset=d.draw(st.integers(0, 100)),
            state=d.draw(st.sampled_from(StreamState)),
        )
    ]


def _some_stream(m: _Model, d: st.DataObject) -> int | None:
    return d.draw(st.sampled_from(sorted(m.streams))) if m.streams else None


@_kind("remove_stream")
def _remove_stream(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if (stream_id := _some_stream(m, d)) is None:
        return []
    del m.streams[stream_id]
    return [RemoveS3StreamRecord(stream_id=stream_id)]


@_kind("range")
def _range(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if (stream_id := _some_stream(m, d)) is None:
        return []
    ranges = m.streams[stream_id][0]
    if len(ranges) > 0 and d.draw(st.booleans()):
        index = d.draw(st.sampled_from(sorted(ranges)))
        ranges.discard(index)
        return [RemoveRangeRecord(stream_id=stream_id, range_index=index)]
    index = d.draw(st.integers(0, 3))
    ranges.add(index)
    start = d.draw(st.integers(0, 100))
    return [
        RangeRecord(
            stream_id=stream_id,
            epoch=d.draw(st.integers(0, 9)),
            range_index=index,
            start_offset=start,
            end_offset=start + d.draw(st.integers(0, 100)),
            node_id=d.draw(BROKER_IDS),
        )
    ]


@_kind("stream_object")
def _stream_object(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if (stream_id := _some_stream(m, d)) is None:
        return []
    objects = m.streams[stream_id][1]
    if len(objects) > 0 and d.draw(st.booleans()):
        object_id = d.draw(st.sampled_from(sorted(objects)))
        objects.discard(object_id)
        return [RemoveS3StreamObjectRecord(stream_id=stream_id, object_id=object_id)]
    object_id = d.draw(SMALL)
    objects.add(object_id)
    start = d.draw(st.integers(0, 100))
    return [
        S3StreamObjectRecord(
            object_id=object_id,
            stream_id=stream_id,
            start_offset=start,
            end_offset=start + d.draw(st.integers(1, 100)),
        )
    ]


@_kind("object")
def _object(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if len(m.objects) > 0 and d.draw(st.booleans()):
        object_id = d.draw(st.sampled_from(sorted(m.objects)))
        m.objects.discard(object_id)
        return [RemoveS3ObjectRecord(object_id=object_id)]
    object_id = d.draw(SMALL)
    m.objects.add(object_id)
    return [
        S3ObjectRecord(
            object_id=object_id,
            object_size=d.draw(st.integers(0, 10**6)),
            state=d.draw(st.sampled_from(S3ObjectState)),
            committed_timestamp=d.draw(st.integers(0, 100)),
        )
    ]


@_kind("assigned_ids")
def _assigned_ids(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    if d.draw(st.booleans()):
        return [AssignedStreamIdRecord(assigned_stream_id=d.draw(st.integers(0, 100)))]
    return [AssignedS3ObjectIdRecord(assigned_s3_object_id=d.draw(st.integers(0, 100)))]


@_kind("node_wal")
def _node_wal(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    return [
        NodeWALMetadataRecord(
            node_id=d.draw(BROKER_IDS),
            node_epoch=d.draw(st.integers(0, 9)),
            failover_mode=d.draw(st.booleans()),
        )
    ]


@_kind("kv")
def _kv(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    keys = st.sampled_from(("k1", "k2", "k3", "__a.failover"))
    if d.draw(st.booleans()):
        return [RemoveKVRecord(keys=tuple(d.draw(st.lists(keys, min_size=1, max_size=2))))]
    pairs = d.draw(st.lists(st.tuples(keys, st.binary(max_size=8)), min_size=1, max_size=3))
    return [KVRecord(key_values=tuple(KeyValue(key=k, value=v) for k, v in pairs))]


CLUSTER_ID = "prop-cluster"
"""The cluster whose meta stream entries the ``meta_stream`` kind writes."""


@_kind("meta_stream")
def _meta_stream(m: _Model, d: st.DataObject) -> list[MetadataRecord]:
    """A partition's meta stream entry (AutoMQ's KV layout), set or removed."""
    if (topic_id := _live_topic(m, d)) is None:
        return []
    key = meta_stream_key(CLUSTER_ID, topic_id, d.draw(st.integers(0, 3)))
    if d.draw(st.booleans()):
        return [RemoveKVRecord(keys=(key,))]
    value = encode_stream_id(d.draw(SMALL)) if d.draw(st.integers(0, 5)) else b"bad"
    return [KVRecord(key_values=(KeyValue(key=key, value=value),))]


KINDS = tuple(sorted(_kinds))


@st.composite
def record_sequences(
    draw: st.DrawFn, max_steps: int = 40, kinds: tuple[str, ...] = KINDS
) -> list[MetadataRecord]:
    """A sequence of records that replays onto EMPTY without any ReplayError, drawing
    from ``kinds`` (every kind by default)."""
    data = draw(st.data())
    model = _Model()
    records: list[MetadataRecord] = []
    for _ in range(draw(st.integers(0, max_steps))):
        kind = draw(st.sampled_from(kinds))
        records += _kinds[kind](model, data)
    return records
