"""Derived state that follows the delta: the same answers as a cold build, at less cost.

A new image's answers and failover state are derived from its predecessor's, redoing
only what the delta touched. Whatever the records, the chunking and which topics were
asked for before, they must equal what a cold build of the same image gives.
"""

from __future__ import annotations

import gc
import itertools
import sys
import uuid
import weakref

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.cache import (
    AnswerSettings,
    FailoverState,
    MetadataRequest,
    TopicMetadata,
    answers_key,
    failover_state_key,
)
from broker.metadata import (
    Lease,
    MetadataDelta,
    MetadataImage,
    Provenance,
    encode_stream_id,
    meta_stream_key,
    replay_records,
)
from broker.metadata.records import (
    BrokerEndpoint,
    FenceBrokerRecord,
    KeyValue,
    KVRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RangeRecord,
    RegisterBrokerRecord,
    S3StreamRecord,
    StreamState,
    TopicRecord,
    UnfenceBrokerRecord,
)
from tests.strategies import CLUSTER_ID, record_sequences

VERSIONS = (0, 1, 5, 6, 9, 12, 13)
ANSWER_SETTINGS = (
    AnswerSettings(CLUSTER_ID),
    AnswerSettings(CLUSTER_ID, "INTERNAL", missing_stream="unavailable"),
    AnswerSettings(CLUSTER_ID, failover_check=False),
)


def cold(image: MetadataImage) -> MetadataImage:
    """The same content in a new image: nothing derived yet."""
    return MetadataImage(image.provenance, **image.sub_images())


def answers(image: MetadataImage, settings: AnswerSettings, version: int) -> list[TopicMetadata]:
    return image.derived(answers_key(settings)).topics(image, MetadataRequest(version=version))


def same_failover_state(a: FailoverState, b: FailoverState) -> bool:
    return (
        dict(a.index.by_topic) == dict(b.index.by_topic)
        and {s: set(p) for s, p in a.index.by_stream.items()}
        == {s: set(p) for s, p in b.index.by_stream.items()}
        and a.index.entries == b.index.entries
        and dict(a.in_failover) == dict(b.in_failover)
    )


# What answers and the failover state read: brokers, topics, partitions, streams and
# meta stream entries (drawn from every kind, these rarely line up).
ANSWERED_KINDS = (
    "register_broker",
    "unregister_broker",
    "fence",
    "registration_change",
    "topic",
    "partition",
    "partition_change",
    "remove_topic",
    "stream",
    "remove_stream",
    "range",
    "meta_stream",
    "noop",
)


@settings(max_examples=200)
@given(record_sequences(max_steps=60, kinds=ANSWERED_KINDS), st.data())
def test_followed_answers_equal_a_cold_build(
    records: list[MetadataRecord], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(0, len(records)), max_size=8)))
    image = MetadataImage.EMPTY
    try:
        for offset, (start, end) in enumerate(itertools.pairwise([0, *cuts, len(records)])):
            # Ask for some answers first, so that there is derived state to follow.
            for settings in ANSWER_SETTINGS:
                for version in data.draw(st.lists(st.sampled_from(VERSIONS), max_size=3)):
                    names = sorted(image.topics.by_name)
                    asked = data.draw(st.lists(st.sampled_from(names), max_size=2)) if names else []
                    request = MetadataRequest.for_topics(*asked, version=version)
                    image.derived(answers_key(settings)).topics(image, request)
            delta = MetadataDelta(image)
            delta.replay_all(records[start:end])
            followed = delta.apply(Provenance(offset, 1, 0))
            image.release()
            image = followed
            with Lease(cold(image)) as fresh:
                for settings in ANSWER_SETTINGS:
                    for version in VERSIONS:
                        assert answers(image, settings, version) == answers(
                            fresh, settings, version
                        )
                key = failover_state_key(CLUSTER_ID)
                assert same_failover_state(image.derived(key), fresh.derived(key))
    finally:  # hypothesis may stop an example at any draw
        image.release()


T1, T2 = uuid.UUID(int=1), uuid.UUID(int=2)
P = Provenance(0, 1, 0)


def cluster() -> list[MetadataRecord]:
    records: list[MetadataRecord] = []
    for broker in (1, 2, 3):
        records += [
            RegisterBrokerRecord(
                broker_id=broker,
                incarnation_id=uuid.UUID(int=broker),
                broker_epoch=broker,
                end_points=(BrokerEndpoint(name="PLAINTEXT", host=f"b{broker}", port=9092),),
            ),
            UnfenceBrokerRecord(id=broker, epoch=broker),
        ]
    for topic, name, leader in ((T1, "one", 1), (T2, "two", 2)):
        records.append(TopicRecord(name=name, topic_id=topic))
        records += [
            PartitionRecord(
                partition_id=p,
                topic_id=topic,
                replicas=(leader,),
                isr=(leader,),
                leader=leader,
                leader_epoch=0,
            )
            for p in range(3)
        ]
    return records


def all_topics(image: MetadataImage) -> list[TopicMetadata]:
    return answers(image, ANSWER_SETTINGS[0], 12)


def after(image: MetadataImage, *records: MetadataRecord) -> MetadataImage:
    delta = MetadataDelta(image)
    delta.replay_all(records)
    return delta.apply(Provenance(image.offset + 1, 1, 0))


def test_untouched_topics_and_partitions_keep_their_answers_by_identity() -> None:
    with Lease(replay_records(cluster(), P)) as image:
        one, two = all_topics(image)
        change = PartitionChangeRecord(partition_id=1, topic_id=T1, leader=1)  # epoch 1
        with Lease(after(image, change)) as new:
            new_one, new_two = all_topics(new)
            assert new_two is two  # the delta did not touch topic "two"
            assert new_one is not one
            assert new_one.partitions[0] is one.partitions[0]  # nor its partitions 0 and 2
            assert new_one.partitions[2] is one.partitions[2]
            assert new_one.partitions[1].leader_epoch == 1
            assert one.partitions[1].leader_epoch == 0


def test_equal_partition_answers_are_one_object() -> None:
    # An answer equal to another is that same object: at v1 and v12 (two version
    # classes), and after a change that leaves it as it was (memory grows with the
    # distinct answers, not with partitions times version classes).
    with Lease(replay_records(cluster(), P)) as image:
        one, _ = all_topics(image)
        v1_one, _ = answers(image, ANSWER_SETTINGS[0], 1)
        assert v1_one.partitions[0] is one.partitions[0]
        change = PartitionChangeRecord(partition_id=1, topic_id=T1, isr=(1,))  # no news
        with Lease(after(image, change)) as new:
            new_one, _ = all_topics(new)
            assert new_one.partitions[1] is one.partitions[1]


def test_a_broker_change_redoes_only_the_topics_that_name_it() -> None:
    with Lease(replay_records(cluster(), P)) as image:
        one, two = all_topics(image)
        with Lease(after(image, FenceBrokerRecord(id=2, epoch=2))) as fenced:
            new_one, new_two = all_topics(fenced)
            assert new_one is one  # broker 2 leads only topic "two"
            assert new_two is not two
            assert [p.offline_replicas for p in new_two.partitions] == [(2,), (2,), (2,)]


def test_a_stream_closed_and_reopened_moves_its_partition_in_and_out_of_failover() -> None:
    stream = 7
    records = [
        *cluster(),
        S3StreamRecord(stream_id=stream, epoch=0, range_index=0),
        RangeRecord(
            stream_id=stream, epoch=0, range_index=0, start_offset=0, end_offset=0, node_id=1
        ),
        KVRecord(
            key_values=(
                KeyValue(key=meta_stream_key(CLUSTER_ID, T1, 0), value=encode_stream_id(stream)),
            )
        ),
    ]
    key = failover_state_key(CLUSTER_ID)
    with Lease(replay_records(records, P)) as image:
        assert all_topics(image)[0].partitions[0].leader_id == 1
        closed = S3StreamRecord(stream_id=stream, epoch=0, range_index=0, state=StreamState.CLOSED)
        with Lease(after(image, closed)) as failing:
            assert all_topics(failing)[0].partitions[0].leader_id == -1
            assert set(failing.derived(key).in_failover) == {(T1, 0)}
            assert failing.derived(key).changed == frozenset({(T1, 0)})
            reopened = S3StreamRecord(stream_id=stream, epoch=0, range_index=0)
            with Lease(after(failing, reopened)) as healthy:
                assert all_topics(healthy)[0].partitions[0].leader_id == 1
                assert not healthy.derived(key).in_failover


def test_derived_state_keeps_no_dead_image_alive() -> None:
    image = replay_records(cluster(), P)
    all_topics(image)
    new = after(image, PartitionChangeRecord(partition_id=0, topic_id=T1, isr=(1,)))
    assert new.has_derived(answers_key(ANSWER_SETTINGS[0]))  # followed, not built on demand
    old = weakref.ref(image)
    image.release()
    del image
    gc.collect()
    assert old() is None  # the new image's answers do not hold the old image
    assert all_topics(new)[1].partitions[0].leader_id == 2
    new.release()


def test_a_stale_answer_keeps_no_replaced_topic_alive() -> None:
    """A topic not asked for after a delta changed it keeps its old answer for reuse;
    the topic image it answered (with the partitions the delta replaced) must go with
    the image that held it."""
    image = replay_records(cluster(), P)
    all_topics(image)
    replaced = image.topics.by_id[T1]
    new = after(image, PartitionChangeRecord(partition_id=0, topic_id=T1, isr=(1,)))
    image.release()
    del image
    gc.collect()
    assert sys.getrefcount(replaced) == 2  # this frame's name and the call's argument
    assert all_topics(new)[0].partitions[0].isr_nodes == (1,)
    new.release()
