"""Record models and the binary batch encoding."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import struct
import uuid
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from broker.errors import CorruptRecordError
from broker.metadata.records import (
    AUTOMQ_RECORD_IDS,
    RECORD_TYPES,
    AbortTransactionRecord,
    BeginTransactionRecord,
    EndTransactionRecord,
    FeatureLevelRecord,
    MetadataRecord,
    PartitionChangeRecord,
    RecordBatch,
    RecordView,
    RegisterBrokerRecord,
    RemoveS3StreamRecord,
    S3StreamRecord,
    ScramMechanism,
    StreamState,
    UserScramCredentialRecord,
    decode_batch,
    decode_record,
    encode_batch,
    encode_frame,
    encode_record,
    iter_batches,
    record_encoder,
)
from tests.strategies import record_sequences

KAFKA_API_KEYS = {
    "RegisterBrokerRecord": 0,
    "UnregisterBrokerRecord": 1,
    "TopicRecord": 2,
    "PartitionRecord": 3,
    "ConfigRecord": 4,
    "PartitionChangeRecord": 5,
    "FenceBrokerRecord": 7,
    "UnfenceBrokerRecord": 8,
    "RemoveTopicRecord": 9,
    "DelegationTokenRecord": 10,
    "UserScramCredentialRecord": 11,
    "FeatureLevelRecord": 12,
    "ClientQuotaRecord": 14,
    "ProducerIdsRecord": 15,
    "BrokerRegistrationChangeRecord": 17,
    "AccessControlEntryRecord": 18,
    "RemoveAccessControlEntryRecord": 19,
    "NoOpRecord": 20,
    "RemoveUserScramCredentialRecord": 22,
    "BeginTransactionRecord": 23,
    "EndTransactionRecord": 24,
    "AbortTransactionRecord": 25,
    "RemoveDelegationTokenRecord": 26,
    "RegisterControllerRecord": 27,
}


def test_kafka_record_types_keep_kafkas_api_keys() -> None:
    by_name = {cls.__name__: key for key, cls in RECORD_TYPES.items() if key < 500}
    assert by_name == KAFKA_API_KEYS


def test_automq_record_types_have_their_own_ids_in_the_500s() -> None:
    assert set(AUTOMQ_RECORD_IDS) >= {
        "S3StreamRecord",
        "RemoveS3StreamRecord",
        "RangeRecord",
        "RemoveRangeRecord",
        "S3ObjectRecord",
        "NodeWALMetadataRecord",
        "KVRecord",
        "RemoveKVRecord",
        "AssignedStreamIdRecord",
    }
    assert all(500 <= key < 600 for key in AUTOMQ_RECORD_IDS.values())


def test_records_are_frozen_and_forbid_unknown_fields() -> None:
    record = FeatureLevelRecord(name="metadata.version", feature_level=1)
    with pytest.raises(ValidationError):
        record.feature_level = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        FeatureLevelRecord.model_validate({"name": "x", "feature_level": 1, "bogus": 1})


def test_lists_become_tuples_and_int_ranges_are_checked() -> None:
    record = PartitionChangeRecord.model_validate(
        {"partition_id": 0, "topic_id": uuid.UUID(int=1), "isr": [1, 2]}
    )
    assert record.isr == (1, 2)
    with pytest.raises(ValidationError):
        PartitionChangeRecord(partition_id=0, topic_id=uuid.UUID(int=1), leader=-3)
    with pytest.raises(ValidationError):
        RegisterBrokerRecord(broker_id=2**31, incarnation_id=uuid.UUID(int=1), broker_epoch=0)


@given(record_sequences(max_steps=25), st.integers(0, 2**40), st.integers(-1, 9))
def test_batches_round_trip_through_the_encoding(
    records: list[MetadataRecord], base: int, epoch: int
) -> None:
    if not records:
        return
    batch = RecordBatch(base, epoch, 123, tuple(records))
    data = encode_batch(batch)
    decoded, end = decode_batch(data)
    assert decoded == batch
    assert end == len(data)
    for record in records:
        assert decode_record(encode_record(record)) == record


def test_a_batch_that_cannot_be_encoded_leaves_the_next_encoding_intact() -> None:
    # Encoding shares one packer per thread: a failed pack must not leave bytes in it.
    good = RecordBatch(0, 1, 123, (FeatureLevelRecord(name="metadata.version", feature_level=7),))
    expected = encode_batch(good)
    unencodable: Any = object()
    bad_record = FeatureLevelRecord.model_construct(name=unencodable, feature_level=1)
    with pytest.raises(TypeError, match="cannot encode object"):
        encode_batch(RecordBatch(0, 1, 123, (bad_record,)))
    assert encode_batch(good) == expected
    assert decode_batch(expected)[0] == good


MARKERS = st.sampled_from(
    [BeginTransactionRecord(name="t"), EndTransactionRecord(), AbortTransactionRecord()]
)


def _encoded(records: list[MetadataRecord], markers: list[MetadataRecord]) -> bytes:
    """A frame of ``records`` and then ``markers`` (a batch holds at least one record)."""
    assume(records + markers)
    return encode_batch(RecordBatch(7, 1, 0, (*records, *markers)))


@given(record_sequences(max_steps=40), st.lists(MARKERS, max_size=3))
def test_trusted_decode_builds_the_records_validation_builds(
    records: list[MetadataRecord], markers: list[MetadataRecord]
) -> None:
    data = _encoded(records, markers)
    trusted, _ = decode_batch(data, trusted=True)
    validated, _ = decode_batch(data)
    assert trusted == validated
    for fast, checked in zip(trusted.records, validated.records, strict=True):
        # repr tells an IntEnum from its int and a tuple from a list, == does not.
        assert repr(fast) == repr(checked)
        assert fast.model_fields_set == checked.model_fields_set
        assert hash(fast) == hash(checked)
        assert fast.model_dump() == checked.model_dump()
        assert decode_record(encode_record(checked), trusted=True) == checked


@given(record_sequences(max_steps=40), st.lists(MARKERS, max_size=3))
def test_a_trusted_batch_replays_views_that_read_as_its_records(
    records: list[MetadataRecord], markers: list[MetadataRecord]
) -> None:
    data = _encoded(records, markers)
    records = records + markers
    trusted, _ = decode_batch(data, trusted=True)
    assert trusted.record_count == len(records)
    for replayable, record in zip(trusted.replayable, records, strict=True):
        # the hot types a controller's log is made of, and only those
        assert isinstance(replayable, RecordView) == (type(record).__name__ in VIEWED)
        if not isinstance(replayable, RecordView):
            assert type(replayable) is type(record)
            assert replayable == record
            continue
        assert replayable.record_class is type(record)
        assert type(replayable).__name__ == type(record).__name__  # replay errors name it
        for name in type(record).model_fields:
            # repr tells an IntEnum from its int, == does not
            assert repr(getattr(replayable, name)) == repr(getattr(record, name))
        assert replayable.record() == record
    assert trusted.records == tuple(records)
    assert trusted.records is trusted.records  # built once
    # A batch from elsewhere holds its records as they are, as does one decoded for a
    # reader that keeps its records.
    validated, _ = decode_batch(data)
    assert validated.replayable is validated.records
    kept, _ = decode_batch(data, trusted=True, views=False)
    assert kept.replayable is kept.records
    assert kept.records == tuple(records)
    assert not any(isinstance(record, RecordView) for record in kept.records)


VIEWED = {
    "RangeRecord",
    "S3StreamRecord",
    "PartitionChangeRecord",
    "PartitionRecord",
    "RemoveS3StreamRecord",
    "S3StreamObjectRecord",
    "AssignedS3ObjectIdRecord",
    "RemoveS3ObjectRecord",
    "RemoveRangeRecord",
    "RemoveS3StreamObjectRecord",
}


def test_a_batch_decoded_from_our_storage_is_a_batch_like_any_other() -> None:
    records = (
        FeatureLevelRecord(name="a", feature_level=1),
        RemoveS3StreamRecord(stream_id=3),
    )
    built = RecordBatch(5, 1, 99, records)
    data = encode_batch(built)

    def decode() -> RecordBatch:
        """A batch whose records were not built yet: one per check."""
        return decode_batch(data, trusted=True)[0]

    assert isinstance(decode().replayable[1], RecordView)
    assert decode() == built
    assert built == decode()
    assert hash(decode()) == hash(built)
    assert repr(decode()) == repr(built).replace("size=None", f"size={len(data)}")
    assert (decode().last_offset, decode().next_offset) == (6, 7)
    assert pickle.loads(pickle.dumps(decode())) == built
    assert copy.copy(decode()) == built
    with pytest.raises(dataclasses.FrozenInstanceError):
        decode().epoch = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del decode().records
    later = built.replace(append_time_ms=100)
    assert later == RecordBatch(5, 1, 100, records)
    assert later != built
    assert built != (5, 1, 99, records)
    with pytest.raises(TypeError, match="no field 'offset'"):
        built.replace(offset=1)
    match built:
        case RecordBatch(base_offset, epoch, append_time_ms, matched, _):
            assert (base_offset, epoch, append_time_ms, matched) == (5, 1, 99, records)
    with pytest.raises(ValueError, match="at least one record"):
        RecordBatch(0, 1, 0, ())
    with pytest.raises(ValueError, match="base_offset must be >= 0"):
        RecordBatch(-1, 1, 0, records)


def _fields(model: BaseModel) -> tuple[object, ...]:
    """A model's field values in order, nested models as tuples (the encoder's input)."""
    return tuple(_field(value) for value in model.__dict__.values())


def _field(value: object) -> object:
    if isinstance(value, BaseModel):
        return _fields(value)
    if isinstance(value, tuple):
        return tuple(_field(item) for item in value)
    return value


@given(record_sequences(max_steps=40), st.lists(MARKERS, max_size=3))
def test_a_record_encoder_writes_the_bytes_of_the_record_it_was_given_the_fields_of(
    records: list[MetadataRecord], markers: list[MetadataRecord]
) -> None:
    for record in records + markers:
        encode = record_encoder(type(record))
        fields = dict(zip(type(record).model_fields, _fields(record), strict=True))
        assert encode(**fields) == encode_record(record)
        # Fields left out take their defaults, as the model's constructor gives them.
        given = {name: fields[name] for name in record.model_fields_set}
        assert encode(**given) == encode_record(type(record)(**record.model_dump()))


def test_a_record_encoder_refuses_an_unknown_field_and_wants_the_required_ones() -> None:
    encode = record_encoder(FeatureLevelRecord)
    assert encode(name="x", feature_level=2) == encode_record(
        FeatureLevelRecord(name="x", feature_level=2)
    )
    with pytest.raises(TypeError):
        encode(name="x", feature_level=2, level=3)
    with pytest.raises(TypeError):
        encode(feature_level=2)


def test_trusted_decode_of_an_older_shorter_record_fills_its_defaults() -> None:
    import msgpack

    topic = uuid.UUID(int=9)
    # A PartitionChangeRecord as a writer that knew only its first four fields sent it.
    short = msgpack.packb([5, 0, 3, msgpack.ExtType(1, topic.bytes), [1, 2], 4], use_bin_type=True)
    record = decode_record(short, trusted=True)
    assert record == PartitionChangeRecord(partition_id=3, topic_id=topic, isr=(1, 2), leader=4)
    # A type replay takes as views: a short array is validated into a record as well.
    stream = msgpack.packb([501, 0, 7, 2], use_bin_type=True)
    batch, _ = decode_batch(encode_frame(0, 1, 0, 1, stream), trusted=True)
    assert batch.replayable == (S3StreamRecord(stream_id=7, epoch=2),)
    assert type(batch.replayable[0]) is S3StreamRecord
    assert batch.replayable[0].state is StreamState.OPENED


def test_trusted_decode_still_reports_an_unknown_type_or_a_bad_enum() -> None:
    import msgpack

    with pytest.raises(CorruptRecordError, match="unknown record api_key 999"):
        decode_record(msgpack.packb([999, 0]), trusted=True)
    # ScramMechanism has no member 9: the enum conversion fails even when trusted.
    credential = UserScramCredentialRecord(
        name="u",
        mechanism=ScramMechanism(1),
        salt=b"s",
        stored_key=b"k",
        server_key=b"v",
        iterations=4096,
    )
    wire = msgpack.unpackb(encode_record(credential))
    wire[3] = 9
    with pytest.raises(CorruptRecordError):
        decode_record(msgpack.packb(wire, use_bin_type=True), trusted=True)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([], "a record is an array"),
        ([[5], 0], "unknown record api_key"),
        (7, "a record is an array"),
        ([5, "v0", 1], "version 'v0' is not supported"),
    ],
)
def test_trusted_decode_names_what_is_wrong_with_a_malformed_record(
    record: object, message: str
) -> None:
    import msgpack

    # Good records first: their types' builders are then cached for the fast lookup.
    viewed = RemoveS3StreamRecord(stream_id=1)
    good = encode_record(FeatureLevelRecord(name="a", feature_level=1)) + encode_record(viewed)
    payload = good + msgpack.packb(record)
    with pytest.raises(CorruptRecordError, match=message) as caught:
        decode_batch(encode_frame(40, 1, 0, 3, payload), trusted=True)
    assert caught.value.offset == 40
    # The checked path that named the error built records: views are still used after.
    batch, _ = decode_batch(encode_frame(0, 1, 0, 1, encode_record(viewed)), trusted=True)
    assert isinstance(batch.replayable[0], RecordView)


def _frames() -> tuple[bytes, bytes]:
    first = encode_batch(RecordBatch(0, 1, 5, (FeatureLevelRecord(name="a", feature_level=1),)))
    second = encode_batch(RecordBatch(1, 1, 6, (FeatureLevelRecord(name="b", feature_level=2),)))
    return first, second


def test_decoded_records_share_one_uuid_object_per_id() -> None:
    topic = uuid.UUID(int=42)
    records = tuple(PartitionChangeRecord(topic_id=topic, partition_id=i) for i in range(3))
    batch, _ = decode_batch(encode_batch(RecordBatch(0, 1, 0, records)), 0)
    ids = [record.topic_id for record in batch.records if isinstance(record, PartitionChangeRecord)]
    assert ids == [topic] * 3
    assert ids[0] is ids[1] is ids[2]  # one object, not one per partition


def test_iter_batches_yields_positions() -> None:
    first, second = _frames()
    assert [(pos, b.base_offset) for pos, b in iter_batches(first + second)] == [
        (0, 0),
        (len(first), 1),
    ]


def test_torn_frame_is_reported_as_truncated_with_its_position() -> None:
    first, second = _frames()
    data = first + second[:-3]
    with pytest.raises(CorruptRecordError) as caught:
        list(iter_batches(data, source="log-0"))
    assert caught.value.truncated
    assert caught.value.position == len(first)
    assert "position=" in str(caught.value)
    assert "log-0" in str(caught.value)


def test_a_flipped_byte_fails_the_crc() -> None:
    first, _ = _frames()
    damaged = bytearray(first)
    damaged[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError, match="CRC32C mismatch") as caught:
        decode_batch(bytes(damaged))
    assert not caught.value.truncated
    assert caught.value.position == 0


def _reframe(body: bytes) -> bytes:
    import crc32c

    return struct.pack(">II", len(body) + 4, crc32c.crc32c(body)) + body


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1", "payload is not valid msgpack"),
        (b"\x90\x90", "payload is not valid msgpack (ExtraData"),
        (b"\x91\x92\xcd\x03\xe7\x00", "unknown record api_key 999"),
        (b"\x91\x92\x0c\x05", "version 5 is not supported"),
        (b"\x91\x93\x0c\x00\xa1x", "FeatureLevelRecord.feature_level"),
        (b"\x92\x90\x90", "header says 1 records"),
    ],
)
@pytest.mark.parametrize("trusted", [False, True])
def test_garbage_with_a_valid_crc_names_the_offset_and_reason(
    payload: bytes, reason: str, trusted: bool
) -> None:
    body = struct.pack(">BqiqI", 1, 42, 1, 0, 1) + payload
    with pytest.raises(CorruptRecordError) as caught:
        decode_batch(_reframe(body), trusted=trusted)
    assert caught.value.offset == 42
    assert reason in str(caught.value)


@pytest.mark.parametrize("trusted", [False, True])
def test_a_frame_with_a_negative_base_offset_does_not_decode(trusted: bool) -> None:
    record = FeatureLevelRecord(name="a", feature_level=1)
    frame = encode_frame(-1, 1, 0, 1, encode_record(record))
    with pytest.raises(CorruptRecordError, match="base_offset must be >= 0"):
        decode_batch(frame, trusted=trusted)


def test_unknown_frame_format_is_refused() -> None:
    body = struct.pack(">BqiqI", 9, 42, 1, 0, 0) + b"\x90"
    with pytest.raises(CorruptRecordError, match="frame format 9"):
        decode_batch(_reframe(body))


@pytest.mark.parametrize("length", [0, 2**31])
def test_absurd_frame_length_is_refused(length: int) -> None:
    with pytest.raises(CorruptRecordError, match="out of range") as caught:
        decode_batch(struct.pack(">I", length) + b"\x00" * 40)
    assert not caught.value.truncated


def test_a_batch_needs_records_and_a_valid_offset() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        RecordBatch(0, 1, 0, ())
    with pytest.raises(ValueError, match="base_offset"):
        RecordBatch(-1, 1, 0, (FeatureLevelRecord(name="a", feature_level=1),))
    batch = RecordBatch(10, 1, 0, (FeatureLevelRecord(name="a", feature_level=1),) * 3)
    assert (batch.last_offset, batch.next_offset) == (12, 13)
