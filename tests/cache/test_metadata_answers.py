"""METADATA answers: one table row per error code and version difference, and the
AutoMQ failover rule. Pure: answers are computed from images, no event loop."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from broker.cache import (
    AUTHORIZED_OPERATIONS_OMITTED,
    DirectoryId,
    ErrorCode,
    FailoverIndex,
    FailoverStatus,
    MetadataRequest,
    RequestTopic,
    answer_metadata,
    check_partition,
    failover_state_key,
)
from broker.metadata import (
    Lease,
    MetadataImage,
    Provenance,
    encode_stream_id,
    meta_stream_key,
    replay_records,
)
from broker.metadata.records import (
    BrokerEndpoint,
    KeyValue,
    KVRecord,
    MetadataRecord,
    PartitionRecord,
    RangeRecord,
    RegisterBrokerRecord,
    S3StreamRecord,
    StreamState,
    TopicRecord,
    UnfenceBrokerRecord,
)

CLUSTER = "c1"
DIR = uuid.UUID(int=77)
P = Provenance(100, 4, 0)
TOPIC_IDS = {
    name: uuid.UUID(int=i + 10)
    for i, name in enumerate(
        [
            "healthy",
            "no-leader",
            "unregistered-leader",
            "listener-missing",
            "replica-missing",
            "fenced-replica",
            "lost-dir",
            "__consumer_offsets",
            "streamed",
        ]
    )
}


def broker(broker_id: int, *listeners: str, fenced: bool = False) -> list[MetadataRecord]:
    records: list[MetadataRecord] = [
        RegisterBrokerRecord(
            broker_id=broker_id,
            incarnation_id=uuid.UUID(int=broker_id),
            broker_epoch=broker_id * 10,
            end_points=tuple(
                BrokerEndpoint(name=name, host=f"b{broker_id}", port=9000 + broker_id)
                for name in listeners
            ),
            rack=f"r{broker_id}",
            log_dirs=(DIR,),
        )
    ]
    if not fenced:
        records.append(UnfenceBrokerRecord(id=broker_id, epoch=broker_id * 10))
    return records


def topic(
    name: str, leader: int, replicas: tuple[int, ...], **fields: object
) -> list[MetadataRecord]:
    topic_id = TOPIC_IDS[name]
    return [
        TopicRecord(name=name, topic_id=topic_id),
        PartitionRecord(
            partition_id=0,
            topic_id=topic_id,
            replicas=replicas,
            isr=replicas,
            leader=leader,
            leader_epoch=5,
            partition_epoch=7,
            **fields,  # type: ignore[arg-type]
        ),
    ]


def cluster_records() -> list[MetadataRecord]:
    return [
        *broker(1, "PLAINTEXT"),
        *broker(2, "PLAINTEXT", "INTERNAL"),
        *broker(3, "INTERNAL"),
        *broker(4, "PLAINTEXT", fenced=True),
        *topic("healthy", 1, (1, 2)),
        *topic("no-leader", -1, (1, 2)),
        *topic("unregistered-leader", 5, (5, 1)),
        *topic("listener-missing", 3, (3, 1)),
        *topic("replica-missing", 1, (1, 5)),
        *topic("fenced-replica", 1, (1, 4)),
        *topic("lost-dir", 1, (1, 2), directories=(DIR, DirectoryId.LOST)),
        *topic("__consumer_offsets", 2, (2, 1)),
    ]


@pytest.fixture
def image() -> Iterator[MetadataImage]:
    with Lease(replay_records(cluster_records(), P)) as image:
        yield image


def ask(image: MetadataImage, *names: str, version: int = 13, **options: object):  # type: ignore[no-untyped-def]
    request = MetadataRequest.for_topics(*names, version=version)
    return answer_metadata(image, request, cluster_id=CLUSTER, rng=random.Random(1), **options)  # type: ignore[arg-type]


E = ErrorCode
TABLE = [
    # topic, version, error, leader, replicas, isr, offline
    ("healthy", 13, E.NONE, 1, (1, 2), (1, 2), ()),
    ("healthy", 0, E.NONE, 1, (1, 2), (1, 2), ()),
    ("no-leader", 13, E.LEADER_NOT_AVAILABLE, -1, (1, 2), (1, 2), ()),
    ("unregistered-leader", 13, E.LEADER_NOT_AVAILABLE, -1, (5, 1), (5, 1), (5,)),
    ("listener-missing", 6, E.LISTENER_NOT_FOUND, -1, (3, 1), (3, 1), (3,)),
    ("listener-missing", 13, E.LISTENER_NOT_FOUND, -1, (3, 1), (3, 1), (3,)),
    ("listener-missing", 5, E.LEADER_NOT_AVAILABLE, -1, (3, 1), (3, 1), (3,)),
    ("replica-missing", 1, E.NONE, 1, (1, 5), (1, 5), (5,)),
    ("replica-missing", 0, E.REPLICA_NOT_AVAILABLE, 1, (1,), (1,), (5,)),
    ("fenced-replica", 13, E.NONE, 1, (1, 4), (1, 4), (4,)),
    ("fenced-replica", 0, E.NONE, 1, (1, 4), (1, 4), (4,)),
    ("lost-dir", 13, E.NONE, 1, (1, 2), (1, 2), (2,)),
]


@pytest.mark.parametrize(
    ("name", "version", "error", "leader", "replicas", "isr", "offline"), TABLE
)
def test_partition_answers(
    image: MetadataImage,
    name: str,
    version: int,
    error: ErrorCode,
    leader: int,
    replicas: tuple[int, ...],
    isr: tuple[int, ...],
    offline: tuple[int, ...],
) -> None:
    (answer,) = ask(image, name, version=version).topics
    assert answer.error_code is ErrorCode.NONE
    (partition,) = answer.partitions
    assert partition.error_code is error
    assert partition.leader_id == leader
    assert partition.leader_epoch == 5
    assert (partition.replica_nodes, partition.isr_nodes, partition.offline_replicas) == (
        replicas,
        isr,
        offline,
    )


def test_unknown_topic_by_name_and_by_id(image: MetadataImage) -> None:
    response = ask(image, "nope")
    (answer,) = response.topics
    assert (answer.error_code, answer.name, answer.partitions) == (
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        "nope",
        (),
    )
    missing = uuid.UUID(int=999)
    by_id = MetadataRequest(version=12, topics=(RequestTopic(topic_id=missing),))
    (answer,) = answer_metadata(image, by_id, cluster_id=CLUSTER).topics
    assert answer.error_code is ErrorCode.UNKNOWN_TOPIC_ID
    assert answer.topic_id == missing
    known = MetadataRequest(version=12, topics=(RequestTopic(topic_id=TOPIC_IDS["healthy"]),))
    (answer,) = answer_metadata(image, known, cluster_id=CLUSTER).topics
    assert answer.name == "healthy"


def test_topic_ids_need_version_12() -> None:
    # Names are nullable only from v12: Kafka's clients send ids for lookup from v12.
    with pytest.raises(ValidationError, match="version 12"):
        MetadataRequest(version=11, topics=(RequestTopic(topic_id=uuid.UUID(int=5)),))
    with pytest.raises(ValidationError, match="needs a name or a topic id"):
        RequestTopic()


@pytest.mark.parametrize(
    ("version", "topics", "expected"),
    [
        (0, (), "all"),
        (1, (), "none"),
        (13, (), "none"),
        (1, None, "all"),
        (13, None, "all"),
    ],
)
def test_null_and_empty_topic_lists(
    image: MetadataImage, version: int, topics: tuple[RequestTopic, ...] | None, expected: str
) -> None:
    response = answer_metadata(
        image, MetadataRequest(version=version, topics=topics), cluster_id=CLUSTER
    )
    names = [t.name for t in response.topics]
    if expected == "all":
        assert names == sorted(set(TOPIC_IDS) - {"streamed"})
    else:
        assert names == []


def test_duplicate_topics_are_answered_once(image: MetadataImage) -> None:
    assert [t.name for t in ask(image, "healthy", "healthy", "nope", "nope").topics] == [
        "healthy",
        "nope",
    ]


def test_fenced_brokers_and_brokers_without_the_listener_are_left_out(image: MetadataImage) -> None:
    response = ask(image, "healthy")
    assert [(b.node_id, b.host, b.port, b.rack) for b in response.brokers] == [
        (1, "b1", 9001, "r1"),
        (2, "b2", 9002, "r2"),
    ]
    internal = ask(image, "healthy", listener="INTERNAL")
    assert [b.node_id for b in internal.brokers] == [2, 3]


def test_controller_id_is_a_random_alive_broker(image: MetadataImage) -> None:
    seen = {
        answer_metadata(
            image, MetadataRequest(), cluster_id=CLUSTER, rng=random.Random(seed)
        ).controller_id
        for seed in range(40)
    }
    assert seen == {1, 2, 3}  # unfenced brokers; never the fenced 4


def test_cluster_id_from_version_2_and_internal_topics(image: MetadataImage) -> None:
    assert ask(image, "healthy", version=1).cluster_id is None
    assert ask(image, "healthy", version=2).cluster_id == CLUSTER
    (offsets,) = ask(image, "__consumer_offsets").topics
    assert offsets.is_internal
    assert offsets.topic_authorized_operations == AUTHORIZED_OPERATIONS_OMITTED
    assert ask(image, "healthy").provenance == P


# --- the failover rule ---------------------------------------------------------------------

STREAM = 7


def streamed(*extra: MetadataRecord, kv_stream: int | None = STREAM) -> list[MetadataRecord]:
    records: list[MetadataRecord] = [*cluster_records(), *topic("streamed", 1, (1, 2))]
    if kv_stream is not None:
        key = meta_stream_key(CLUSTER, TOPIC_IDS["streamed"], 0)
        records.append(KVRecord(key_values=(KeyValue(key=key, value=encode_stream_id(kv_stream)),)))
    records.extend(extra)
    return records


def stream(
    epoch: int = 5, state: StreamState = StreamState.OPENED, owner: int = 1
) -> list[MetadataRecord]:
    return [
        S3StreamRecord(stream_id=STREAM, epoch=epoch, range_index=1, state=state),
        RangeRecord(
            stream_id=STREAM, epoch=0, range_index=0, start_offset=0, end_offset=10, node_id=2
        ),
        RangeRecord(
            stream_id=STREAM,
            epoch=epoch,
            range_index=1,
            start_offset=10,
            end_offset=10,
            node_id=owner,
        ),
    ]


FAILOVER_CASES = [
    ("healthy", streamed(*stream()), FailoverStatus.HEALTHY, ErrorCode.NONE),
    (
        "epoch equal to leader epoch",
        streamed(*stream(epoch=5)),
        FailoverStatus.HEALTHY,
        ErrorCode.NONE,
    ),
    (
        "missing KV entry",
        streamed(*stream(), kv_stream=None),
        FailoverStatus.NO_META_STREAM,
        ErrorCode.NONE,
    ),
    (
        "stream missing",
        streamed(kv_stream=99),
        FailoverStatus.STREAM_MISSING,
        ErrorCode.LEADER_NOT_AVAILABLE,
    ),
    (
        "stream closed",
        streamed(*stream(state=StreamState.CLOSED)),
        FailoverStatus.STREAM_CLOSED,
        ErrorCode.LEADER_NOT_AVAILABLE,
    ),
    (
        "epoch ahead",
        streamed(*stream(epoch=6)),
        FailoverStatus.EPOCH_AHEAD,
        ErrorCode.LEADER_NOT_AVAILABLE,
    ),
    (
        "wrong range owner",
        streamed(*stream(owner=2)),
        FailoverStatus.WRONG_RANGE_OWNER,
        ErrorCode.LEADER_NOT_AVAILABLE,
    ),
]


@pytest.mark.parametrize(
    ("case", "records", "status", "error"), FAILOVER_CASES, ids=[c[0] for c in FAILOVER_CASES]
)
def test_failover_rule(
    case: str, records: list[MetadataRecord], status: FailoverStatus, error: ErrorCode
) -> None:
    with Lease(replay_records(records, P)) as image:
        index = FailoverIndex.build(CLUSTER, image.kv.values)
        registration = image.topics.partition(TOPIC_IDS["streamed"], 0)
        assert registration is not None
        found, _ = check_partition(index, image.streams, TOPIC_IDS["streamed"], 0, registration)
        assert found is status
        (partition,) = ask(image, "streamed").topics[0].partitions
        assert partition.error_code is error
        assert partition.leader_id == (1 if error is ErrorCode.NONE else -1)
        # Without the check (plain Kafka) the partition is always answered.
        (plain,) = ask(image, "streamed", failover_check=False).topics[0].partitions
        assert (plain.error_code, plain.leader_id) == (ErrorCode.NONE, 1)


def test_missing_meta_stream_policy_unavailable() -> None:
    with Lease(replay_records(streamed(kv_stream=None), P)) as image:
        (partition,) = ask(image, "streamed", missing_stream="unavailable").topics[0].partitions
        assert partition.error_code is ErrorCode.LEADER_NOT_AVAILABLE


def test_the_failover_state_is_derived_state_dropped_with_the_image() -> None:
    key = failover_state_key(CLUSTER)
    image = replay_records(streamed(*stream()), P)
    assert not image.has_derived(key)
    ask(image, "streamed")
    state = image.derived(key)
    assert state.index.stream_id(TOPIC_IDS["streamed"], 0) == STREAM
    assert state.index.entries == 1
    assert ask(image, "streamed") is not None
    assert image.derived(key) is state  # built once per image
    image.release()
    assert not image.has_derived(key)
