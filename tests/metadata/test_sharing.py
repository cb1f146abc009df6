"""apply() shares every untouched part of the image, and the delta's change queries."""

from __future__ import annotations

import uuid

from broker.metadata import (
    SUB_IMAGES,
    Lease,
    MetadataDelta,
    MetadataImage,
    Provenance,
    TopicIdPartition,
    replay_records,
)
from broker.metadata.records import (
    ConfigRecord,
    ConfigResourceType,
    MetadataRecord,
    PartitionChangeRecord,
    RangeRecord,
    RemoveTopicRecord,
    S3StreamRecord,
    StreamState,
)
from tests.helpers import topic_records as topic

A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))
P = Provenance(1, 1, 1)


def test_untouched_sub_images_are_the_same_objects() -> None:
    with Lease(replay_records([*topic(A, "a", 4, 1), *topic(B, "b", 2, 2)], P)) as image:
        delta = MetadataDelta(image)
        delta.replay(PartitionChangeRecord(partition_id=1, topic_id=A, leader=2))
        with Lease(delta.apply(Provenance(2, 1, 1))) as new:
            assert delta.changed_areas() == {"topics"}
            for name in SUB_IMAGES:
                if name != "topics":
                    assert getattr(new, name) is getattr(image, name), name
            assert new.topics is not image.topics
            # The untouched topic and the untouched partitions are shared too.
            assert new.topics.by_id[B] is image.topics.by_id[B]
            for p in (0, 2, 3):
                assert new.topics.by_id[A].partitions[p] is image.topics.by_id[A].partitions[p]
            assert new.topics.by_id[A].partitions[1] is not image.topics.by_id[A].partitions[1]


def test_equal_registrations_are_one_object_in_an_image() -> None:
    # Every partition of "a" and "b" has replicas (1, 2) and leader 1: one registration
    # object for all of them, in this image and in the next (memory grows with the
    # distinct registrations, not with the partitions).
    with Lease(replay_records([*topic(A, "a", 4, 1), *topic(B, "b", 2, 1)], P)) as image:
        first = image.topics.by_id[A].partitions[0]
        for topic_id, count in ((A, 4), (B, 2)):
            for p in range(count):
                assert image.topics.by_id[topic_id].partitions[p] is first
        delta = MetadataDelta(image)
        delta.replay(PartitionChangeRecord(partition_id=1, topic_id=A, leader=2))
        delta.replay(PartitionChangeRecord(partition_id=0, topic_id=B, leader=2))
        with Lease(delta.apply(Provenance(2, 1, 1))) as new:
            moved = new.topics.by_id[A].partitions[1]
            assert moved.leader == 2
            assert moved != first
            assert new.topics.by_id[B].partitions[0] is moved


def test_equal_ranges_of_streams_are_one_object() -> None:
    records: list[MetadataRecord] = []
    for stream_id in (1, 2):
        records += [
            S3StreamRecord(
                stream_id=stream_id,
                epoch=0,
                range_index=0,
                start_offset=0,
                state=StreamState.OPENED,
            ),
            RangeRecord(
                stream_id=stream_id,
                epoch=0,
                range_index=0,
                start_offset=0,
                end_offset=100,
                node_id=1,
            ),
        ]
    with Lease(replay_records(records, P)) as image:
        streams = image.streams.streams
        assert streams[1].ranges[0] is streams[2].ranges[0]
        assert streams[1].ranges[0].end_offset == 100


def test_an_empty_delta_reuses_every_sub_image() -> None:
    with (
        Lease(replay_records(topic(A, "a", 1, 1), P)) as image,
        Lease(MetadataDelta(image).apply(Provenance(5, 1, 1))) as new,
    ):
        assert new is not image
        assert new.offset == 5
        for name in SUB_IMAGES:
            assert getattr(new, name) is getattr(image, name)


def test_topics_created_and_deleted() -> None:
    with Lease(replay_records([*topic(A, "a", 1, 1), *topic(B, "b", 1, 1)], P)) as image:
        delta = MetadataDelta(image)
        delta.replay_all([RemoveTopicRecord(topic_id=A), *topic(C, "c", 1, 1)])
        assert delta.created_topic_ids() == {C}
        assert [t.name for t in delta.deleted_topics()] == ["a"]
        assert MetadataDelta(image).created_topic_ids() == frozenset()
        assert MetadataDelta(image).deleted_topics() == ()


def test_leadership_moved_to_and_away_from_a_broker() -> None:
    with Lease(replay_records([*topic(A, "a", 3, 1), *topic(B, "b", 2, 2)], P)) as image:
        delta = MetadataDelta(image)
        delta.replay_all(
            [
                PartitionChangeRecord(partition_id=0, topic_id=A, leader=2),  # 1 -> 2
                PartitionChangeRecord(partition_id=1, topic_id=A, isr=(1,)),  # stays with 1
                PartitionChangeRecord(partition_id=0, topic_id=B, leader=1),  # 2 -> 1
                RemoveTopicRecord(topic_id=B),  # b-1 was led by 2
                *topic(C, "c", 1, 2),  # new partition led by 2
            ]
        )
        to_two = delta.leadership_changes(2)
        assert to_two.became_leader == (
            TopicIdPartition("a", 0, A),
            TopicIdPartition("c", 0, C),
        )
        assert to_two.lost_leadership == (TopicIdPartition("b", 0, B), TopicIdPartition("b", 1, B))
        to_one = delta.leadership_changes(1)
        assert to_one.became_leader == ()
        assert to_one.lost_leadership == (TopicIdPartition("a", 0, A),)
        assert MetadataDelta(image).leadership_changes(1).became_leader == ()


def test_config_changes_touch_only_configs() -> None:
    with Lease(replay_records(topic(A, "a", 1, 1), P)) as image:
        delta = MetadataDelta(image)
        delta.replay(
            ConfigRecord(
                resource_type=ConfigResourceType.BROKER, resource_name="1", name="x", value="y"
            )
        )
        with Lease(delta.apply(P)) as new:
            assert new.topics is image.topics
            assert dict(new.configs.configs(ConfigResourceType.BROKER, "1")) == {"x": "y"}


def test_empty_image_is_empty_and_immortal() -> None:
    empty = MetadataImage.EMPTY
    assert empty.is_empty
    assert empty.is_immortal
    assert list(empty.write()) == []
    empty.release()
    empty.release()
    assert empty.retain() is empty
    assert empty.topics.partition_count() == 0
