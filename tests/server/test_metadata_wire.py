"""Assembled Metadata responses are byte for byte what kio encodes, in every version."""

from __future__ import annotations

import io
import itertools
import random
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_response_schema
from kio.serial import entity_writer
from kio.static.primitive import i32

from broker.cache import AnswerSettings, MetadataRequest, RequestTopic, answers_key
from broker.metadata import Lease, MetadataDelta, MetadataImage, Provenance, replay_records
from broker.metadata.records import MetadataRecord
from broker.server import (
    API_VERSIONS,
    SUPPORTED_VERSIONS,
    encode_response,
    metadata_body,
    metadata_format,
    wire_metadata_key,
)
from tests.cache.test_answers_follow import ANSWERED_KINDS
from tests.strategies import CLUSTER_ID, TOPIC_NAMES, UUIDS, record_sequences

P = Provenance(7, 1, 0)
WIRE_SETTINGS = (
    AnswerSettings(CLUSTER_ID),
    AnswerSettings(CLUSTER_ID, "INTERNAL", failover_check=False),
)


def requests(version: int, data: st.DataObject) -> list[MetadataRequest]:
    names = data.draw(st.lists(st.sampled_from((*TOPIC_NAMES, "nope")), max_size=3))
    topics = [RequestTopic(name=name) for name in names]
    if version >= 12:
        ids = data.draw(st.lists(st.sampled_from((*UUIDS, uuid.UUID(int=99))), max_size=2))
        topics += [RequestTopic(topic_id=topic_id) for topic_id in ids]
    everything = MetadataRequest(version=version, topics=() if version == 0 else None)
    return [everything, MetadataRequest(version=version, topics=tuple(topics))]


def assert_identical_to_kio(image: MetadataImage, data: st.DataObject) -> None:
    for answer_settings in WIRE_SETTINGS:
        answers = image.derived(answers_key(answer_settings))
        wire = image.derived(wire_metadata_key(answer_settings))
        for version in range(14):
            for request in requests(version, data):
                ours = wire.body(image, answers, request, random.Random(3))
                response = answers.response(image, request, random.Random(3))
                assert ours == metadata_body(response, version), (version, request)
                assert metadata_format(version).body(response) == ours


@settings(max_examples=60)
@given(record_sequences(max_steps=50, kinds=ANSWERED_KINDS), st.data())
def test_every_version_is_byte_identical_to_kio(
    records: list[MetadataRecord], data: st.DataObject
) -> None:
    with Lease(replay_records(records, P)) as image:
        assert_identical_to_kio(image, data)


@settings(max_examples=40)
@given(record_sequences(max_steps=50, kinds=ANSWERED_KINDS), st.data())
def test_fragments_followed_to_the_next_image_stay_identical_to_kio(
    records: list[MetadataRecord], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(records)))
    image = replay_records(records[:cut], P)
    try:
        assert_identical_to_kio(image, data)  # encode on the first image...
        delta = MetadataDelta(image)
        delta.replay_all(records[cut:])
        followed = delta.apply(Provenance(8, 1, 0))
    finally:
        image.release()
    with Lease(followed):
        assert_identical_to_kio(followed, data)  # ...and reuse what still holds on the next


def all_topics_in_steps(
    image: MetadataImage, answer_settings: AnswerSettings, version: int, data: st.DataObject
) -> int:
    """Prepare the all-topics answer with a pause after every topic it encodes, check it
    against kio, and return how many pauses it made."""
    answers = image.derived(answers_key(answer_settings))
    wire = image.derived(wire_metadata_key(answer_settings))
    request = requests(version, data)[0]  # all topics
    steps = len(list(wire.prepare_all_topics(image, answers, version, 0.0)))
    ours = wire.body(image, answers, request, random.Random(3))
    response = answers.response(image, request, random.Random(3))
    assert ours == metadata_body(response, version), version
    assert list(wire.prepare_all_topics(image, answers, version, 0.0)) == []  # built
    # Served in parts: the topics array is the image's own, not a copy per request.
    first = wire.body_parts(image, answers, request, random.Random(3))
    again = wire.body_parts(image, answers, request, random.Random(3))
    assert b"".join(first) == ours
    assert first[1] is again[1]
    return steps


@settings(max_examples=30)
@given(record_sequences(max_steps=50, kinds=ANSWERED_KINDS), st.data())
def test_an_all_topics_answer_prepared_in_steps_is_the_one_kio_encodes(
    records: list[MetadataRecord], data: st.DataObject
) -> None:
    with Lease(replay_records(records, P)) as image:
        for answer_settings in WIRE_SETTINGS:
            for version in range(14):
                steps = all_topics_in_steps(image, answer_settings, version, data)
                assert steps == len(image.topics.by_id)  # a cold image encodes every topic


@settings(max_examples=40)
@given(record_sequences(max_steps=60, kinds=ANSWERED_KINDS), st.data())
def test_all_topics_entries_carried_over_several_images_stay_identical_to_kio(
    records: list[MetadataRecord], data: st.DataObject
) -> None:
    """Images follow one another in a few cuts; each asks for all topics in some versions
    only, so entries are carried over images that never built them."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=4)))
    image = replay_records(records[: cuts[0] if cuts else len(records)], P)
    try:
        for start, end in itertools.pairwise([*cuts, len(records)]):
            for answer_settings in WIRE_SETTINGS:
                for version in data.draw(st.sets(st.integers(0, 13), max_size=4)):
                    steps = all_topics_in_steps(image, answer_settings, version, data)
                    assert steps <= len(image.topics.by_id)
            delta = MetadataDelta(image)
            delta.replay_all(records[start:end])
            followed = delta.apply(Provenance(image.offset + 1, 1, 0))
            image.release()
            image = followed
        for answer_settings in WIRE_SETTINGS:
            for version in range(14):
                all_topics_in_steps(image, answer_settings, version, data)
    finally:
        image.release()


def test_response_headers_are_those_kio_encodes() -> None:
    for api_key, (low, high) in SUPPORTED_VERSIONS.items():
        for version, correlation_id in itertools.product(range(low, high + 1), (0, 7, -3)):
            header_schema = load_response_schema(api_key, version).__header_schema__
            buffer = io.BytesIO()
            entity_writer(header_schema)(buffer, header_schema(correlation_id=i32(correlation_id)))
            frame = encode_response(api_key, version, correlation_id, b"body")
            assert frame[4:] == buffer.getvalue() + b"body", (api_key, version)
            assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert API_VERSIONS in SUPPORTED_VERSIONS
