"""One test per replay rule of the reference, and one per ReplayError case."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from broker import BrokerError
from broker.errors import ReplayError
from broker.metadata import Lease, MetadataDelta, MetadataImage, Provenance, replay_records
from broker.metadata.records import (
    NO_LEADER,
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    ConfigResourceType,
    FeatureLevelRecord,
    FenceBrokerRecord,
    KeyValue,
    KVRecord,
    LeaderRecoveryState,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RangeRecord,
    RecordBatch,
    RegisterBrokerRecord,
    RemoveAccessControlEntryRecord,
    RemoveKVRecord,
    RemoveRangeRecord,
    RemoveS3ObjectRecord,
    RemoveS3StreamObjectRecord,
    RemoveS3StreamRecord,
    RemoveTopicRecord,
    S3StreamObjectRecord,
    S3StreamRecord,
    TopicRecord,
    UnfenceBrokerRecord,
    UnregisterBrokerRecord,
    decode_batch,
    encode_batch,
)

TOPIC = uuid.UUID(int=1)
OTHER = uuid.UUID(int=2)
P = Provenance(10, 1, 0)


def base_records() -> list[MetadataRecord]:
    return [
        FeatureLevelRecord(name="metadata.version", feature_level=20),
        RegisterBrokerRecord(broker_id=1, incarnation_id=uuid.UUID(int=9), broker_epoch=7),
        TopicRecord(name="orders", topic_id=TOPIC),
        PartitionRecord(
            partition_id=0,
            topic_id=TOPIC,
            replicas=(1, 2, 3),
            isr=(1, 2, 3),
            leader=1,
            leader_epoch=4,
            partition_epoch=9,
        ),
        ConfigRecord(
            resource_type=ConfigResourceType.TOPIC,
            resource_name="orders",
            name="retention.ms",
            value="1000",
        ),
        S3StreamRecord(stream_id=5, epoch=1, range_index=0),
        RangeRecord(stream_id=5, epoch=1, range_index=0, start_offset=0, end_offset=10, node_id=1),
    ]


@pytest.fixture
def image() -> Iterator[MetadataImage]:
    with Lease(replay_records(base_records(), P)) as image:
        yield image


def after(image: MetadataImage, *records: MetadataRecord) -> MetadataImage:
    delta = MetadataDelta(image)
    delta.replay_all(records)
    return delta.apply(Provenance(image.offset + len(records), 1, 0))


# --- PartitionChange -------------------------------------------------------------------


@pytest.mark.parametrize("changed", [1, 2])
def test_a_topic_delta_applies_to_the_topic_the_whole_delta_applies(
    image: MetadataImage, changed: int
) -> None:
    records = [PartitionChangeRecord(partition_id=p, topic_id=TOPIC, leader=2) for p in range(2)]
    grow = MetadataDelta(image)
    grow.replay(PartitionRecord(partition_id=1, topic_id=TOPIC, replicas=(1, 2), leader=1))
    with Lease(grow.apply(P)) as two_partitions:
        delta = MetadataDelta(two_partitions)
        delta.replay(TopicRecord(name="other", topic_id=OTHER))  # a delta of two topics
        delta.replay_all(records[:changed])
        topics = delta.topics
        assert topics is not None
        topic = topics.changed[TOPIC]
        with Lease(delta.apply(P)) as new:
            assert topic.apply() == new.topics.by_id[TOPIC]
        leaders = {p: partition.leader for p, partition in topic.apply().partitions.items()}
        assert leaders == ({0: 2, 1: 2} if changed == 2 else {0: 2, 1: 1})
        assert topics.changed[OTHER].apply() == topics.changed[OTHER].base  # nothing changed


@pytest.mark.parametrize(
    ("record", "changed"),
    [
        (PartitionChangeRecord(partition_id=0, topic_id=TOPIC), {}),
        (
            PartitionChangeRecord(partition_id=0, topic_id=TOPIC, leader=2, isr=(1, 2)),
            {"leader": 2, "leader_epoch": 5, "isr": (1, 2)},
        ),
        (
            PartitionChangeRecord(
                partition_id=0,
                topic_id=TOPIC,
                replicas=(1, 2, 4),
                removing_replicas=(3,),
                adding_replicas=(4,),
                leader_recovery_state=1,
                directories=(uuid.UUID(int=7),) * 3,
                eligible_leader_replicas=(2,),
                last_known_elr=(3,),
            ),
            {
                "replicas": (1, 2, 4),
                "removing_replicas": (3,),
                "adding_replicas": (4,),
                "leader_recovery_state": LeaderRecoveryState.RECOVERING,
                "directories": (uuid.UUID(int=7),) * 3,
                "elr": (2,),
                "last_known_elr": (3,),
            },
        ),
    ],
    ids=["nothing", "leader-and-isr", "every-field"],
)
def test_merge_of_a_record_or_its_view_is_what_replay_makes(
    image: MetadataImage, record: PartitionChangeRecord, changed: dict[str, Any]
) -> None:
    batch, _ = decode_batch(encode_batch(RecordBatch(0, 1, 0, (record,))), trusted=True)
    (view,) = batch.replayable
    assert type(view) is not PartitionChangeRecord  # the codec's view of it
    current = image.topics.partition(TOPIC, 0)
    assert current is not None
    expected = current._replace(partition_epoch=10, **changed)  # every change bumps it
    with Lease(after(image, record)) as new:
        assert new.topics.partition(TOPIC, 0) == expected
    assert current.merge(record) == current.merge(view) == expected  # type: ignore[arg-type]
    assert image.topics.partition(TOPIC, 0) is current  # merge changes no image


def test_equal_partitions_share_one_registration(image: MetadataImage) -> None:
    # Memory follows the distinct values, not the partitions (broker._intern).
    def partition(index: int) -> PartitionRecord:
        replicas = tuple(range(1, 4))  # built at run time: not a shared constant
        return PartitionRecord(
            partition_id=index, topic_id=TOPIC, replicas=replicas, isr=replicas, leader=2
        )

    with Lease(after(image, partition(1), partition(2))) as created:
        one, two = created.topics.partition(TOPIC, 1), created.topics.partition(TOPIC, 2)
        assert one is not None
        assert one is two
        change = [
            PartitionChangeRecord(partition_id=index, topic_id=TOPIC, isr=tuple(range(1, 3)))
            for index in (1, 2)
        ]
        with Lease(after(created, *change)) as changed:
            one, two = changed.topics.partition(TOPIC, 1), changed.topics.partition(TOPIC, 2)
            assert one is not None
            assert one.isr == (1, 2)
            assert one is two


def test_partition_change_null_fields_leave_the_partition_unchanged(image: MetadataImage) -> None:
    with Lease(after(image, PartitionChangeRecord(partition_id=0, topic_id=TOPIC))) as new:
        before = image.topics.partition(TOPIC, 0)
        now = new.topics.partition(TOPIC, 0)
        assert before is not None
        assert now is not None
        assert (now.replicas, now.isr, now.leader, now.leader_epoch) == (
            before.replicas,
            before.isr,
            before.leader,
            before.leader_epoch,
        )


def test_partition_change_leader_minus_two_keeps_leader_and_leader_epoch(
    image: MetadataImage,
) -> None:
    change = PartitionChangeRecord(partition_id=0, topic_id=TOPIC, isr=(1, 2))
    with Lease(after(image, change)) as new:
        partition = new.topics.partition(TOPIC, 0)
        assert partition is not None
        assert (partition.leader, partition.leader_epoch, partition.isr) == (1, 4, (1, 2))


def test_partition_change_leader_minus_one_means_no_leader(image: MetadataImage) -> None:
    with Lease(
        after(image, PartitionChangeRecord(partition_id=0, topic_id=TOPIC, leader=-1))
    ) as new:
        partition = new.topics.partition(TOPIC, 0)
        assert partition is not None
        assert partition.leader == NO_LEADER
        assert not partition.has_leader


def test_leader_change_bumps_leader_epoch_and_every_change_bumps_partition_epoch(
    image: MetadataImage,
) -> None:
    with Lease(
        after(
            image,
            PartitionChangeRecord(partition_id=0, topic_id=TOPIC, leader=2),
            PartitionChangeRecord(partition_id=0, topic_id=TOPIC, isr=(2,)),
            PartitionChangeRecord(partition_id=0, topic_id=TOPIC, leader_recovery_state=1),
        )
    ) as new:
        partition = new.topics.partition(TOPIC, 0)
        assert partition is not None
        assert partition.leader == 2
        assert partition.leader_epoch == 5  # one leader change
        assert partition.partition_epoch == 12  # three changes
        assert partition.leader_recovery_state is LeaderRecoveryState.RECOVERING


# --- brokers ------------------------------------------------------------------------------


def test_a_registered_broker_is_fenced_by_default(image: MetadataImage) -> None:
    broker = image.cluster.broker(1)
    assert broker is not None
    assert broker.fenced
    assert image.cluster.alive_broker_ids() == []


def test_unfence_and_fence_with_matching_epoch(image: MetadataImage) -> None:
    with Lease(after(image, UnfenceBrokerRecord(id=1, epoch=7))) as unfenced:
        assert unfenced.cluster.alive_broker_ids() == [1]
        with Lease(after(unfenced, FenceBrokerRecord(id=1, epoch=7))) as fenced:
            assert fenced.cluster.alive_broker_ids() == []


@pytest.mark.parametrize(
    ("fenced", "shutdown", "expect_fenced", "expect_shutdown"),
    [(-1, 0, False, False), (0, 0, True, False), (1, 1, True, True), (-1, 1, False, True)],
)
def test_broker_registration_change_is_tri_state(
    image: MetadataImage, fenced: int, shutdown: int, expect_fenced: bool, expect_shutdown: bool
) -> None:
    change = BrokerRegistrationChangeRecord(
        broker_id=1,
        broker_epoch=7,
        fenced=fenced,  # type: ignore[arg-type]
        in_controlled_shutdown=shutdown,  # type: ignore[arg-type]
    )
    with Lease(after(image, change)) as new:
        broker = new.cluster.broker(1)
        assert broker is not None
        assert (broker.fenced, broker.in_controlled_shutdown) == (expect_fenced, expect_shutdown)


def test_registration_change_zero_leaves_fenced_state_alone(image: MetadataImage) -> None:
    with Lease(
        after(
            image,
            UnfenceBrokerRecord(id=1, epoch=7),
            BrokerRegistrationChangeRecord(broker_id=1, broker_epoch=7, fenced=0),
        )
    ) as new:
        broker = new.cluster.broker(1)
        assert broker is not None
        assert not broker.fenced


def test_unregister_with_matching_epoch_removes_the_broker(image: MetadataImage) -> None:
    with Lease(after(image, UnregisterBrokerRecord(broker_id=1, broker_epoch=7))) as new:
        assert new.cluster.broker(1) is None


# --- configs, topics, features ------------------------------------------------------------


def test_config_null_value_deletes_the_key(image: MetadataImage) -> None:
    delete = ConfigRecord(
        resource_type=ConfigResourceType.TOPIC,
        resource_name="orders",
        name="retention.ms",
        value=None,
    )
    with Lease(after(image, delete)) as new:
        assert dict(new.configs.configs(ConfigResourceType.TOPIC, "orders")) == {}
        assert len(new.configs.resources) == 0


def test_remove_topic_also_removes_its_configs(image: MetadataImage) -> None:
    assert dict(image.configs.configs(ConfigResourceType.TOPIC, "orders")) == {
        "retention.ms": "1000"
    }
    with Lease(after(image, RemoveTopicRecord(topic_id=TOPIC))) as new:
        assert new.topics.get("orders") is None
        assert TOPIC not in new.topics.by_id
        assert dict(new.configs.configs(ConfigResourceType.TOPIC, "orders")) == {}


def test_feature_level_zero_removes_the_feature(image: MetadataImage) -> None:
    assert image.features.metadata_version == 20
    with Lease(after(image, FeatureLevelRecord(name="metadata.version", feature_level=0))) as new:
        assert new.features.metadata_version is None
        assert "metadata.version" not in new.features.levels


def test_write_emits_metadata_version_first(image: MetadataImage) -> None:
    with Lease(after(image, FeatureLevelRecord(name="a.feature", feature_level=1))) as new:
        first = next(iter(new.write()))
        assert first == FeatureLevelRecord(name="metadata.version", feature_level=20)


def test_topic_record_after_remove_recreates_the_name_with_a_new_id(image: MetadataImage) -> None:
    with Lease(
        after(image, RemoveTopicRecord(topic_id=TOPIC), TopicRecord(name="orders", topic_id=OTHER))
    ) as new:
        topic = new.topics.get("orders")
        assert topic is not None
        assert topic.id == OTHER
        assert len(topic.partitions) == 0
        assert list(new.topics.by_id) == [OTHER]


def test_kv_set_and_remove(image: MetadataImage) -> None:
    with Lease(
        after(
            image,
            KVRecord(key_values=(KeyValue(key="a", value=b"1"), KeyValue(key="b", value=b"2"))),
            RemoveKVRecord(keys=("a", "never-set")),
        )
    ) as new:
        assert dict(new.kv.values) == {"b": b"2"}


def test_stream_update_keeps_its_ranges(image: MetadataImage) -> None:
    with Lease(after(image, S3StreamRecord(stream_id=5, epoch=2, range_index=1))) as new:
        stream = new.streams.streams[5]
        assert stream.epoch == 2
        assert [r.range_index for r in stream.ranges] == [0]


# --- ReplayError cases -------------------------------------------------------------------

REJECTED: list[tuple[MetadataRecord, str]] = [
    (PartitionChangeRecord(partition_id=0, topic_id=OTHER, leader=1), "does not exist"),
    (PartitionChangeRecord(partition_id=7, topic_id=TOPIC, leader=1), "partition 7"),
    (PartitionRecord(partition_id=1, topic_id=OTHER), "does not exist"),
    (RemoveTopicRecord(topic_id=OTHER), "does not exist"),
    (TopicRecord(name="orders", topic_id=OTHER), "already used"),
    (UnfenceBrokerRecord(id=2, epoch=7), "broker 2 is not registered"),
    (FenceBrokerRecord(id=1, epoch=8), "epoch mismatch"),
    (UnfenceBrokerRecord(id=1, epoch=6), "epoch mismatch"),
    (UnregisterBrokerRecord(broker_id=1, broker_epoch=1), "epoch mismatch"),
    (BrokerRegistrationChangeRecord(broker_id=1, broker_epoch=2, fenced=-1), "epoch mismatch"),
    (RemoveAccessControlEntryRecord(id=OTHER), "ACL"),
    (
        RangeRecord(stream_id=6, epoch=0, range_index=0, start_offset=0, end_offset=0, node_id=1),
        "stream 6",
    ),
    (RemoveRangeRecord(stream_id=5, range_index=3), "no range 3"),
    (RemoveS3StreamRecord(stream_id=6), "stream 6"),
    (S3StreamObjectRecord(object_id=1, stream_id=6, start_offset=0, end_offset=1), "stream 6"),
    (RemoveS3StreamObjectRecord(stream_id=5, object_id=1), "no object 1"),
    (RemoveS3ObjectRecord(object_id=1), "object 1"),
]


@pytest.mark.parametrize(("record", "reason"), REJECTED, ids=lambda v: type(v).__name__)
def test_bad_record_raises_replay_error_and_leaves_the_delta_unchanged(
    image: MetadataImage, record: MetadataRecord, reason: str
) -> None:
    delta = MetadataDelta(image)
    delta.replay(PartitionChangeRecord(partition_id=0, topic_id=TOPIC, isr=(1,)), offset=11)
    with Lease(delta.apply(P)) as expected:
        with pytest.raises(ReplayError) as caught:
            delta.replay(record, offset=12)
        error = caught.value
        assert isinstance(error, BrokerError)
        assert error.record_type == type(record).__name__
        assert error.offset == 12
        assert reason in error.reason
        assert f"cannot replay {type(record).__name__} at offset 12" in str(error)
        assert delta.records == 1
        with Lease(delta.apply(P)) as still:
            assert still == expected


@pytest.mark.parametrize(
    ("before", "record", "reason"),
    [
        (
            (),
            PartitionChangeRecord(partition_id=7, topic_id=TOPIC, leader=1),
            "partition 7 of topic 'orders' does not exist",
        ),
        (
            (),
            PartitionChangeRecord(partition_id=0, topic_id=OTHER, leader=1),
            f"topic {OTHER} does not exist",
        ),
        (
            (RemoveTopicRecord(topic_id=TOPIC),),
            PartitionChangeRecord(partition_id=0, topic_id=TOPIC),
            f"topic {TOPIC} does not exist",
        ),
        (
            (RemoveTopicRecord(topic_id=TOPIC),),
            PartitionChangeRecord(partition_id=7, topic_id=TOPIC),
            f"topic {TOPIC} does not exist",
        ),
    ],
    ids=["unknown-partition", "unknown-topic", "deleted-topic", "deleted-topic-no-partition"],
)
def test_a_rejected_first_change_of_a_topic_leaves_no_trace(
    image: MetadataImage,
    before: tuple[MetadataRecord, ...],
    record: PartitionChangeRecord,
    reason: str,
) -> None:
    delta = MetadataDelta(image)
    delta.replay_all(before)
    untouched = MetadataDelta(image)
    untouched.replay_all(before)
    with pytest.raises(ReplayError) as caught:
        delta.replay(record, offset=12)
    assert caught.value.reason == reason
    assert delta.changed_topics() == untouched.changed_topics()
    with Lease(delta.apply(P)) as applied, Lease(untouched.apply(P)) as expected:
        assert applied == expected


def test_replay_all_names_the_failing_record_and_keeps_those_before_it(
    image: MetadataImage,
) -> None:
    # Types alternate, so each record is routed to its own sub-delta, not the last one's.
    good = [
        PartitionChangeRecord(partition_id=0, topic_id=TOPIC, isr=(1,)),
        FenceBrokerRecord(id=1, epoch=7),
        PartitionChangeRecord(partition_id=0, topic_id=TOPIC, leader=2),
    ]
    delta = MetadataDelta(image)
    with pytest.raises(ReplayError) as caught:
        delta.replay_all([*good, RemoveTopicRecord(topic_id=OTHER), good[0]], base_offset=20)
    assert caught.value.offset == 23
    assert caught.value.record_type == "RemoveTopicRecord"
    assert delta.records == 3
    with (
        Lease(delta.apply(Provenance(image.offset + 3, 1, 0))) as partial,
        Lease(after(image, *good)) as expected,
    ):
        assert partial == expected
        assert partial.cluster.brokers[1].fenced
        partition = partial.topics.partition(TOPIC, 0)
        assert partition is not None
        assert (partition.isr, partition.leader) == ((1,), 2)


def test_replay_all_rejects_a_type_without_a_rule_by_name(image: MetadataImage) -> None:
    delta = MetadataDelta(image)
    with pytest.raises(ReplayError, match="no replay rule") as caught:
        delta.replay_all([object()], base_offset=5)  # type: ignore[list-item]
    assert (caught.value.record_type, caught.value.offset, delta.records) == ("object", 5, 0)


def test_a_delta_is_freed_by_reference_counting_alone(image: MetadataImage) -> None:
    # The loader freezes what it allocates (broker._gc): a delta in a reference cycle
    # would stay in memory until the next collection of the whole heap.
    first = [RemoveTopicRecord(topic_id=TOPIC), TopicRecord(name="orders", topic_id=OTHER)]
    second = [
        RangeRecord(stream_id=5, epoch=1, range_index=1, start_offset=10, end_offset=20, node_id=1),
        RemoveTopicRecord(topic_id=OTHER),
        KVRecord(key_values=(KeyValue(key="k", value=b"v"),)),
    ]
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        delta = MetadataDelta(image)
        delta.replay_all(first)
        delta.replay_all(second)  # the record types seen before, and new ones
        assert delta.records == 5
        del delta
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()


def test_snapshot_delta_must_be_finished_before_apply(image: MetadataImage) -> None:
    delta = MetadataDelta(image, snapshot=True)
    delta.replay_all(image.write())
    with pytest.raises(BrokerError, match="finish_snapshot"):
        delta.apply(P)


def test_a_snapshot_may_reuse_a_name_held_by_a_topic_it_has_not_mentioned(
    image: MetadataImage,
) -> None:
    delta = MetadataDelta(image, snapshot=True)
    delta.replay(TopicRecord(name="orders", topic_id=OTHER))
    delta.finish_snapshot()
    with Lease(delta.apply(P)) as new:
        assert dict(new.topics.by_name) == {"orders": OTHER}


@pytest.mark.parametrize("snapshot", [True, False])
def test_finish_snapshot_keeps_the_stream_ranges_a_snapshot_named(
    image: MetadataImage, snapshot: bool
) -> None:
    # A snapshot's S3StreamRecord keeps the base stream's ranges until finish_snapshot,
    # which drops those the snapshot did not name. A delta not made for a snapshot does
    # not track names: finishing it keeps each stream it changed whole.
    delta = MetadataDelta(image, snapshot=snapshot)
    delta.replay_all(
        [
            S3StreamRecord(stream_id=5, epoch=2, range_index=1),
            RangeRecord(
                stream_id=5, epoch=2, range_index=1, start_offset=10, end_offset=20, node_id=1
            ),
        ]
    )
    delta.finish_snapshot()
    with Lease(delta.apply(P)) as new:
        stream = new.streams.streams[5]
        assert [r.range_index for r in stream.ranges] == ([1] if snapshot else [0, 1])
        assert not new.topics.by_id  # not named by the records: deleted either way
