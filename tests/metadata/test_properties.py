"""Round-trip and chunking properties of replay, apply and write (issue: foundation)."""

from __future__ import annotations

import itertools
import tracemalloc
import uuid
from collections.abc import Sequence
from typing import cast

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from broker.errors import ReplayError
from broker.metadata import Lease, MetadataDelta, MetadataImage, Provenance, replay_records
from broker.metadata.records import (
    KeyValue,
    KVRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RecordBatch,
    RemoveKVRecord,
    RemoveS3StreamRecord,
    S3StreamRecord,
    TopicRecord,
    decode_batch,
    encode_batch,
    encode_record,
)
from broker.metadata.sources import Snapshot, SnapshotEncoder, encoded_records
from tests.strategies import record_sequences

PROVENANCE = Provenance(offset=99, epoch=3, append_time_ms=1234)


@given(record_sequences())
def test_write_then_replay_onto_empty_gives_an_equal_image(records: list[MetadataRecord]) -> None:
    with Lease(replay_records(records, PROVENANCE)) as image:
        written = list(image.write())
        with Lease(replay_records(written, PROVENANCE)) as rebuilt:
            assert rebuilt == image
            # And writing is stable: the rebuilt image writes the same records.
            assert list(rebuilt.write()) == written


@given(record_sequences())
def test_encoded_records_are_the_written_records_encoded(records: list[MetadataRecord]) -> None:
    """The pieces' own encoders, walked without an encoder's memory, give the bytes of
    ``image.write()`` record by record (what the simulation's fingerprint hashes)."""
    with Lease(replay_records(records, PROVENANCE)) as image:
        runs = list(encoded_records(image))
        written = list(image.write())
    assert b"".join(data for data, _ in runs) == b"".join(map(encode_record, written))
    assert sum(count for _, count in runs) == len(written)


def _replayed_skipping_errors(
    base: MetadataImage, records: Sequence[MetadataRecord]
) -> tuple[list[tuple[str, str, int | None]], int, list[MetadataRecord]]:
    """Replay ``records`` onto ``base`` as the loader does, skipping a record that fails:
    the errors, the records replayed and what the image then writes."""
    delta = MetadataDelta(base)
    errors = []
    first = 0
    while first < len(records):
        try:
            delta.replay_all(records[first:], first)
            break
        except ReplayError as error:
            errors.append((error.record_type, error.reason, error.offset))
            first = cast(int, error.offset) + 1  # numbered from the first record
    with Lease(delta.apply(PROVENANCE)) as image:
        return errors, delta.records, list(image.write())


@given(record_sequences(), record_sequences())
def test_replaying_a_trusted_batch_as_replay_takes_it_is_replaying_its_records(
    records: list[MetadataRecord], unrelated: list[MetadataRecord]
) -> None:
    """Views (see RecordView) replay as their records, errors included: onto an
    unrelated image, some records of a valid sequence fail."""
    assume(records)
    data = encode_batch(RecordBatch(0, 1, 0, tuple(records)))
    batch, _ = decode_batch(data, trusted=True)
    with Lease(replay_records(unrelated, PROVENANCE)) as base:
        for onto in (MetadataImage.EMPTY, base):
            assert _replayed_skipping_errors(onto, batch.replayable) == _replayed_skipping_errors(
                onto, records
            )


@given(record_sequences(), st.data())
def test_any_chunking_gives_the_same_image_as_one_delta(
    records: list[MetadataRecord], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(0, len(records)), max_size=6)))
    bounds = [0, *cuts, len(records)]
    image = MetadataImage.EMPTY
    for start, end in itertools.pairwise(bounds):
        delta = MetadataDelta(image)
        delta.replay_all(records[start:end])
        next_image = delta.apply(PROVENANCE)
        image.release()  # a no-op for EMPTY
        image = next_image
    with Lease(image), Lease(replay_records(records, PROVENANCE)) as whole:
        assert image == whole


@given(record_sequences(), record_sequences())
def test_snapshot_over_an_unrelated_image_gives_the_snapshotted_image(
    records: list[MetadataRecord], unrelated: list[MetadataRecord]
) -> None:
    with (
        Lease(replay_records(records, PROVENANCE)) as image,
        Lease(replay_records(unrelated, PROVENANCE)) as other,
    ):
        delta = MetadataDelta(other, snapshot=True)
        delta.replay_all(image.write())
        delta.finish_snapshot()
        with Lease(delta.apply(PROVENANCE)) as loaded:
            assert loaded == image


@given(record_sequences())
def test_replay_never_mutates_the_base_image(records: list[MetadataRecord]) -> None:
    with Lease(replay_records(records, PROVENANCE)) as image:
        before = list(image.write())
        delta = MetadataDelta(image, snapshot=True)
        delta.finish_snapshot()  # deletes everything, in the delta only
        with Lease(delta.apply(PROVENANCE)) as emptied:
            assert emptied.is_empty
        assert list(image.write()) == before


@given(record_sequences())
def test_creating_delta_equals_replaying_the_written_image(records: list[MetadataRecord]) -> None:
    with Lease(replay_records(records, PROVENANCE)) as image:
        built = MetadataDelta.creating(image)
        replayed = MetadataDelta(MetadataImage.EMPTY)
        replayed.replay_all(image.write())
        assert built.changed_areas() == replayed.changed_areas()
        assert built.created_topic_ids() == replayed.created_topic_ids()
        assert built.deleted_topics() == replayed.deleted_topics() == ()
        for broker in range(-1, 5):
            assert built.leadership_changes(broker) == replayed.leadership_changes(broker)
        with (
            Lease(built.apply(PROVENANCE)) as from_built,
            Lease(replayed.apply(PROVENANCE)) as from_replay,
        ):
            assert from_built == from_replay == image
        # Both keep working as deltas: a snapshot finish over them agrees too.
        built.finish_snapshot()
        replayed.finish_snapshot()
        with Lease(built.apply(PROVENANCE)) as a, Lease(replayed.apply(PROVENANCE)) as b:
            assert a == b


@given(record_sequences(), st.data())
def test_a_snapshot_encoder_following_images_writes_what_each_image_writes(
    records: list[MetadataRecord], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(0, len(records)), max_size=4)))
    encoder = SnapshotEncoder()
    image = MetadataImage.EMPTY
    for start, end in itertools.pairwise([0, *cuts, len(records)]):
        delta = MetadataDelta(image)
        delta.replay_all(records[start:end])
        next_image = delta.apply(PROVENANCE)
        image.release()
        image = next_image
        encoded, info = encoder.encode(image)
        snapshot = Snapshot.from_bytes(encoded, name="s")
        assert snapshot.records == tuple(image.write())  # same records, same order
        assert snapshot.provenance == image.provenance
        assert info.records == len(snapshot.records)
    image.release()


def test_a_snapshot_encoder_reencodes_only_the_pieces_a_delta_changed() -> None:
    topic = uuid.UUID(int=7)
    records: list[MetadataRecord] = [TopicRecord(name="t", topic_id=topic)]
    records += [
        PartitionRecord(partition_id=p, topic_id=topic, replicas=(1,), isr=(1,), leader=1)
        for p in range(50)
    ]
    encoder = SnapshotEncoder()
    with Lease(replay_records(records, PROVENANCE)) as first:
        encoder.encode(first)
        assert (encoder.reused, encoder.encoded) == (0, 51)  # the topic and its 50 partitions
        delta = MetadataDelta(first)
        delta.replay(PartitionChangeRecord(partition_id=3, topic_id=topic, leader=-1))
        with Lease(delta.apply(PROVENANCE)) as second:
            encoded, _ = encoder.encode(second)
            # The changed topic again, one partition in it; 49 partitions reused.
            assert (encoder.reused, encoder.encoded) == (49, 53)
            assert Snapshot.from_bytes(encoded, name="s").records == tuple(second.write())


def test_a_snapshot_encoder_reencodes_only_the_kv_chunk_a_key_changed_in() -> None:
    """The KV map writes a KVRecord per chunk of keys whose boundaries depend on the
    keys: a key added, changed or removed re-encodes its chunk, not every chunk after
    it (a cluster's KV holds a key per partition)."""
    keys = [f"key-{index:05d}" for index in range(5000)]
    records: list[MetadataRecord] = [
        KVRecord(key_values=tuple(KeyValue(key=k, value=k.encode()) for k in keys))
    ]
    encoder = SnapshotEncoder()
    with Lease(replay_records(records, PROVENANCE)) as first:
        encoder.encode(first)
        chunks = encoder.encoded
        assert chunks == len([r for r in first.write() if isinstance(r, KVRecord)]) > 2
        for change in (
            KVRecord(key_values=(KeyValue(key="key-02500x", value=b"new"),)),  # a new key
            KVRecord(key_values=(KeyValue(key="key-01000", value=b"changed"),)),
            RemoveKVRecord(keys=("key-04000",)),
        ):
            delta = MetadataDelta(first)
            delta.replay(change)
            with Lease(delta.apply(PROVENANCE)) as second:
                before = encoder.encoded, encoder.reused
                encoded, _ = encoder.encode(second)
                assert encoder.encoded - before[0] == 1, change
                assert encoder.reused - before[1] == chunks - 1
                assert Snapshot.from_bytes(encoded, name="s").records == tuple(second.write())
            encoder.encode(first)  # back to the first image's pieces for the next change


def test_a_snapshot_encoder_reencodes_only_the_streams_a_delta_changed() -> None:
    records: list[MetadataRecord] = [S3StreamRecord(stream_id=s, epoch=0) for s in range(30)]
    encoder = SnapshotEncoder()
    with Lease(replay_records(records, PROVENANCE)) as first:
        encoder.encode(first)
        assert (encoder.reused, encoder.encoded) == (0, 30)
        delta = MetadataDelta(first)
        delta.replay(S3StreamRecord(stream_id=7, epoch=1))
        with Lease(delta.apply(PROVENANCE)) as second:
            encoded, _ = encoder.encode(second)
            assert (encoder.reused, encoder.encoded) == (29, 31)
            assert Snapshot.from_bytes(encoded, name="s").records == tuple(second.write())
            delta = MetadataDelta(second)
            delta.replay(TopicRecord(name="t", topic_id=uuid.UUID(int=1)))
            with Lease(delta.apply(PROVENANCE)) as third:  # the streams map is the same
                encoded, _ = encoder.encode(third)
                assert (encoder.reused, encoder.encoded) == (59, 32)  # + the new topic
                assert Snapshot.from_bytes(encoded, name="s").records == tuple(third.write())


def test_a_snapshot_encoder_reuses_runs_of_entries_around_changed_added_and_removed_ones() -> None:
    records: list[MetadataRecord] = [
        S3StreamRecord(stream_id=s, epoch=0) for s in range(0, 2000, 2)
    ]
    encoder = SnapshotEncoder()
    with Lease(replay_records(records, PROVENANCE)) as first:
        encoder.encode(first)
        delta = MetadataDelta(first)
        delta.replay_all(
            [
                S3StreamRecord(stream_id=0, epoch=1),  # the first entry
                S3StreamRecord(stream_id=1000, epoch=1),  # two together
                S3StreamRecord(stream_id=1002, epoch=1),
                S3StreamRecord(stream_id=601, epoch=0),  # a new one between reused ones
                RemoveS3StreamRecord(stream_id=1400),
                S3StreamRecord(stream_id=1999, epoch=0),  # a new last entry
                S3StreamRecord(stream_id=1998, epoch=1),  # and the old last one
            ]
        )
        with Lease(delta.apply(PROVENANCE)) as second:
            encoded, info = encoder.encode(second)
            assert (encoder.reused, encoder.encoded) == (995, 1006)
            assert Snapshot.from_bytes(encoded, name="s").records == tuple(second.write())
            assert info.records == len(tuple(second.write()))
            delta = MetadataDelta(second)
            delta.replay(TopicRecord(name="t", topic_id=uuid.UUID(int=1)))
            with Lease(delta.apply(PROVENANCE)) as third:  # the same streams map, reused whole
                encoded, _ = encoder.encode(third)
                assert Snapshot.from_bytes(encoded, name="s").records == tuple(third.write())


def test_a_snapshot_encoder_keeps_the_bytes_and_a_few_words_per_map_entry() -> None:
    """What it remembers for reuse is about the size of the snapshot, not several times
    the image: at 100k partitions, a dict entry, a tuple and a bytes object per map entry
    made it larger than the image it encodes."""
    topic = uuid.UUID(int=1)
    records: list[MetadataRecord] = [S3StreamRecord(stream_id=s, epoch=0) for s in range(5000)]
    records.append(TopicRecord(name="t", topic_id=topic))
    records += [
        PartitionRecord(partition_id=p, topic_id=topic, replicas=(1, 2), isr=(1, 2), leader=1)
        for p in range(5000)
    ]
    with Lease(replay_records(records, PROVENANCE)) as image:
        encoder = SnapshotEncoder()
        tracemalloc.start()
        try:
            encoded, _ = encoder.encode(image)
            size = len(encoded)
            del encoded
            kept = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        entries = 10_000
        assert kept <= size + 64 * entries
        encoder.encode(image)  # and what it remembers serves: nothing is encoded again
        assert (encoder.reused, encoder.encoded) == (5000 + 1, entries + 1)  # streams, topic


def test_a_snapshot_encoder_pauses_between_slices_and_writes_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from broker.metadata.sources import _source

    records: list[MetadataRecord] = [S3StreamRecord(stream_id=s, epoch=0) for s in range(1000)]
    with Lease(replay_records(records, PROVENANCE)) as image:
        whole, _ = SnapshotEncoder().encode(image)
        monkeypatch.setattr(_source, "SNAPSHOT_SLICE_SECONDS", 0.0)
        pauses: list[None] = []
        sliced, _ = SnapshotEncoder().encode(image, pause=lambda: pauses.append(None))
    assert sliced == whole
    assert len(pauses) == 1000 // 64 + 1  # the clock is read every 64 records


async def test_a_log_encodes_its_snapshot_in_turns_with_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker thread goes through the event loop between slices: one holding the
    GIL for seconds made every request wait for it after each system call."""
    from broker.metadata.sources import InMemoryRecordSource, _source

    turns: list[None] = []
    monkeypatch.setattr(_source, "SNAPSHOT_SLICE_SECONDS", 0.0)
    monkeypatch.setattr(_source, "_nothing", lambda: turns.append(None))
    records: list[MetadataRecord] = [S3StreamRecord(stream_id=s, epoch=0) for s in range(1000)]
    log = InMemoryRecordSource("log")
    with Lease(replay_records(records, PROVENANCE)) as image:
        info = await log.save_snapshot(image)
    assert info.records == 1000
    assert len(turns) == 1000 // 64 + 1
    snapshot = await log.latest_snapshot()
    assert snapshot is not None
    assert len(snapshot.records) == 1000


async def test_a_cancelled_snapshot_stops_at_its_next_turn_and_saves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shutdown cancels the writer mid-snapshot: the worker stops at its next pause,
    not after the whole image, and the log and its encoder are as they were."""
    import anyio

    from broker.metadata.sources import InMemoryRecordSource, _source

    turns: list[None] = []
    monkeypatch.setattr(_source, "SNAPSHOT_SLICE_SECONDS", 0.0)
    records: list[MetadataRecord] = [S3StreamRecord(stream_id=s, epoch=0) for s in range(1000)]
    log = InMemoryRecordSource("log")
    with Lease(replay_records(records, PROVENANCE)) as image:
        with anyio.CancelScope() as scope:

            def turn_then_cancel() -> None:  # runs on the event loop, between slices
                turns.append(None)
                scope.cancel()

            monkeypatch.setattr(_source, "_nothing", turn_then_cancel)
            await log.save_snapshot(image)
        assert scope.cancelled_caught
        assert len(turns) == 1  # stopped at the pause after the first turn
        assert await log.latest_snapshot() is None
        monkeypatch.setattr(_source, "_nothing", lambda: None)
        info = await log.save_snapshot(image)
    assert info.records == 1000
    snapshot = await log.latest_snapshot()
    assert snapshot is not None
    assert list(snapshot.records) == records
