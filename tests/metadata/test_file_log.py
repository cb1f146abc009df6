"""The file log: recovery of torn tails, mid-log corruption, snapshots and restart."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import anyio
import anyio.lowlevel
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from broker.errors import BrokerError, CorruptRecordError, SnapshotRequiredError
from broker.metadata import Lease, MetadataImage
from broker.metadata.pipeline import DeliveryMode, MetadataPipeline, SnapshotWriter
from broker.metadata.records import PartitionChangeRecord, RecordBatch, encode_frame
from broker.metadata.sources import FileRecordLog, InMemoryRecordSource
from broker.metadata.sources import _file_log as file_log
from broker.metadata.sources import _memory as memory
from broker.metadata.sources._source import take_batches
from broker.sim import SyntheticController, WorkloadConfig
from tests.helpers import RecordingConsumer, replay_batches, topic_records

A = uuid.UUID(int=1)


def change(partition: int, leader: int) -> PartitionChangeRecord:
    return PartitionChangeRecord(partition_id=partition, topic_id=A, leader=leader)


async def write_log(directory: Path, changes: int = 4, **options: object) -> list[RecordBatch]:
    async with await FileRecordLog.open(directory, **options) as log:  # type: ignore[arg-type]
        batches = [await log.append(topic_records(A, "orders", 2))]
        for i in range(changes):
            batches.append(await log.append([change(i % 2, 1 + i % 2)]))
        return batches


def segment(directory: Path) -> Path:
    (path,) = sorted((directory / "segments").glob("*.log"))
    return path


async def test_reopen_resumes_after_the_last_batch(tmp_path: Path) -> None:
    batches = await write_log(tmp_path)
    async with await FileRecordLog.open(tmp_path) as log:
        assert log.recovery.truncated_offset is None
        assert log.recovery.batches == len(batches)
        assert await log.high_water_mark() == batches[-1].next_offset
        assert await log.read(0, 1000) == batches
        appended = await log.append([change(0, 2)])
        assert appended.base_offset == batches[-1].next_offset


@pytest.mark.parametrize("garbage", [b"\x00\x00", b"\x00\x00\x01\x00partial", b"\xff" * 40])
async def test_a_torn_tail_is_reported_with_its_offset_and_truncated(
    tmp_path: Path, garbage: bytes
) -> None:
    batches = await write_log(tmp_path)
    path = segment(tmp_path)
    clean_size = path.stat().st_size
    with path.open("ab") as file:
        file.write(garbage)
    with capture_logs() as logs:
        async with await FileRecordLog.open(tmp_path) as log:
            assert log.recovery.truncated_offset == batches[-1].next_offset
            assert log.recovery.truncated_bytes == len(garbage)
            assert await log.read(0, 1000) == batches
            await log.append([change(1, 1)])
    assert path.stat().st_size > clean_size
    (event,) = [e for e in logs if e["event"] == "log_tail_truncated"]
    assert event["offset"] == batches[-1].next_offset
    assert event["position"] == clean_size


async def test_a_half_written_last_frame_is_a_torn_tail(tmp_path: Path) -> None:
    batches = await write_log(tmp_path)
    path = segment(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # the last frame lost its end
    async with await FileRecordLog.open(tmp_path) as log:
        assert log.recovery.truncated_offset == batches[-1].base_offset
        assert await log.read(0, 1000) == batches[:-1]


async def test_corruption_in_the_middle_is_an_error_not_a_skip(tmp_path: Path) -> None:
    batches = await write_log(tmp_path)
    path = segment(tmp_path)
    data = bytearray(path.read_bytes())
    second_frame = batches[0].encoded_size or 0
    assert second_frame == 0  # appended batches carry no size; find it by decoding
    async with await FileRecordLog.open(tmp_path) as log:
        first = (await log.read(0, 1))[0]
    assert first.encoded_size is not None
    data[first.encoded_size + 12] ^= 0xFF  # inside the second frame
    path.write_bytes(bytes(data))
    before = open_files()
    with pytest.raises(CorruptRecordError) as caught:
        await FileRecordLog.open(tmp_path)
    assert open_files() == before
    assert caught.value.position == first.encoded_size
    assert "CRC32C mismatch" in str(caught.value)
    assert str(path) in str(caught.value)


async def test_opening_checks_frames_and_a_read_decodes_their_records(tmp_path: Path) -> None:
    # A frame with a good CRC whose record does not decode (api key 999): opening, which
    # checks frames as Kafka's recovery checks batches, keeps it; reading it fails and
    # names its offset and file, and the frames before it still read.
    batches = await write_log(tmp_path)
    next_offset = batches[-1].next_offset
    bad = encode_frame(next_offset, 1, 0, 1, msgpack.packb([999, 0]))
    with segment(tmp_path).open("ab") as file:
        file.write(bad)
    async with await FileRecordLog.open(tmp_path) as log:
        assert log.recovery.truncated_offset is None
        assert log.recovery.batches == len(batches) + 1
        assert await log.high_water_mark() == next_offset + 1
        assert await log.read(0, next_offset) == batches
        with pytest.raises(CorruptRecordError, match="unknown record api_key 999") as caught:
            await log.read(next_offset, 1000)
    assert caught.value.offset == next_offset
    assert caught.value.position == segment(tmp_path).stat().st_size - len(bad)  # in the file
    assert str(segment(tmp_path)) in str(caught.value)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=12),
    segment_bytes=st.sampled_from([1, 150, 400, 1 << 20]),
    start=st.integers(0, 11),
    max_records=st.integers(0, 20),
)
def test_a_read_from_the_file_takes_the_batches_a_read_of_them_would(
    sizes: list[int], segment_bytes: int, start: int, max_records: int
) -> None:
    # A read finds its frames in the index and reads and decodes only those: the same
    # batches as take_batches over every batch, across segments, for any read size.
    async def check(directory: Path) -> None:
        async with await FileRecordLog.open(
            directory, fsync="never", segment_bytes=segment_bytes
        ) as log:
            await log.append(topic_records(A, "orders", 2))
            for i, size in enumerate(sizes):
                await log.append([change(i % 2, 1 + (i + n) % 3) for n in range(size)])
        async with await FileRecordLog.open(directory, fsync="never") as log:
            everything = await log.read(0, 10_000)  # from the file: nothing in the tail
            assert [b.next_offset for b in everything][-1] == await log.high_water_mark()
            first = everything[min(start, len(everything) - 1)]
            expected = take_batches(everything[everything.index(first) :], max_records)
            assert await log.read(first.base_offset, max_records) == expected

    with tempfile.TemporaryDirectory() as directory:
        anyio.run(check, Path(directory))


async def test_a_clean_close_spares_the_next_open_its_scan(tmp_path: Path) -> None:
    batches = await write_log(tmp_path, changes=10, segment_bytes=200, fsync="never")
    checkpoint = tmp_path / file_log.CHECKPOINT_NAME
    assert checkpoint.exists()
    async with await FileRecordLog.open(tmp_path) as log:
        assert not checkpoint.exists()  # appends follow: it would be stale
        assert log.recovery.segments > 2
        assert log.recovery.indexed_segments == log.recovery.segments
        assert log.recovery.batches == len(batches)
        assert await log.read(0, 10_000) == batches
        batches.append(await log.append([change(0, 3)]))
    async with await FileRecordLog.open(tmp_path) as log:  # the new frame is indexed too
        assert log.recovery.indexed_segments == log.recovery.segments
        assert await log.read(0, 10_000) == batches


async def test_a_log_left_in_a_cancelled_scope_is_still_closed_with_its_index(
    tmp_path: Path,
) -> None:
    with anyio.CancelScope() as scope:
        async with await FileRecordLog.open(tmp_path, fsync="never") as log:
            batch = await log.append([change(0, 1)])
            scope.cancel()
            await anyio.lowlevel.checkpoint()  # cancelled here: the block exits
    assert scope.cancelled_caught
    with pytest.raises(BrokerError, match="closed"):
        await log.append([change(0, 2)])
    async with await FileRecordLog.open(tmp_path) as reopened:
        assert reopened.recovery.indexed_segments == 1
        assert await reopened.read(0, 10) == [batch]


async def test_without_a_clean_close_the_next_open_scans_every_frame(tmp_path: Path) -> None:
    batches = await write_log(tmp_path, fsync="never")
    crashed = await FileRecordLog.open(tmp_path, fsync="never")
    batches.append(await crashed.append([change(1, 3)]))
    # ``crashed`` is never closed before the next open, as after a crash
    async with await FileRecordLog.open(tmp_path) as log:
        assert log.recovery.indexed_segments == 0
        assert log.recovery.batches == len(batches)
        assert await log.read(0, 1000) == batches
    crashed.close()


@pytest.mark.parametrize("damage", ["garbage", "flipped", "empty"])
async def test_a_damaged_checkpoint_is_reported_and_the_log_scanned(
    tmp_path: Path, damage: str
) -> None:
    batches = await write_log(tmp_path)
    checkpoint = tmp_path / file_log.CHECKPOINT_NAME
    data = bytearray(checkpoint.read_bytes())
    if damage == "garbage":
        data = bytearray(b"\x00\x01garbage")
    elif damage == "flipped":
        data[-3] ^= 0xFF
    else:
        data = bytearray()
    checkpoint.write_bytes(bytes(data))
    with capture_logs() as logs:
        async with await FileRecordLog.open(tmp_path) as log:
            assert log.recovery.indexed_segments == 0
            assert await log.read(0, 1000) == batches
    assert [e["event"] for e in logs] == ["log_checkpoint_ignored"]


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_an_offset_gap_between_segments_is_an_error(tmp_path: Path) -> None:
    await write_log(tmp_path, segment_bytes=1)  # one batch per segment
    paths = sorted((tmp_path / "segments").glob("*.log"))
    assert len(paths) == 5
    paths[2].unlink()
    before = open_files()
    with pytest.raises(CorruptRecordError, match="the previous one ends before"):
        await FileRecordLog.open(tmp_path)
    assert open_files() == before  # the two segments before the gap were closed


async def test_segments_roll_and_reads_cross_them(tmp_path: Path) -> None:
    batches = await write_log(tmp_path, changes=10, segment_bytes=200, fsync="never")
    async with await FileRecordLog.open(tmp_path) as log:
        assert log.recovery.segments > 2
        assert await log.read(0, 10_000) == batches
        middle = batches[5].base_offset
        assert (await log.read(middle, 2))[0] == batches[5]
        assert len(await log.read(middle, 2)) == 2


async def test_a_reader_at_the_tail_gets_the_appended_batches_without_a_file_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_log, "TAIL_CACHE_RECORDS", 5)
    async with await FileRecordLog.open(tmp_path, fsync="never") as log:
        batches = [await log.append(topic_records(A, "orders", 2))]
        batches += [await log.append([change(i % 2, 1 + i % 2)]) for i in range(8)]
        tail = await log.read(batches[-3].base_offset, 100)
        assert tail == batches[-3:]
        assert all(read is appended for read, appended in zip(tail, batches[-3:], strict=True))
        assert len(await log.read(batches[-3].base_offset, 2)) == 2  # max_records holds
        everything = await log.read(0, 100)
        assert everything == batches
        assert everything[0] is not batches[0]  # evicted long ago: read back from the file


async def test_a_read_lets_other_tasks_run_while_it_decodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_log, "DECODE_SLICE", 0.0)  # a slice per frame
    batches = await write_log(tmp_path, changes=20)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with await FileRecordLog.open(tmp_path) as log, anyio.create_task_group() as tasks:
        tasks.start_soon(tick)
        await anyio.lowlevel.checkpoint()
        before = ticks
        assert await log.read(0, 1000) == batches
        during = ticks - before
        tasks.cancel_scope.cancel()
    assert during >= len(batches) - 1


async def test_snapshot_plus_log_restart_gives_the_image_of_a_full_replay(tmp_path: Path) -> None:
    controller = SyntheticController(WorkloadConfig(seed=5, topics=6, partitions_per_topic=4))
    batches = list(controller.batches(400))
    consumer = RecordingConsumer("cache")
    async with await FileRecordLog.open(tmp_path, fsync="never", segment_bytes=4096) as log:
        async with MetadataPipeline(log, max_records_per_image=50) as pipeline:
            writer = SnapshotWriter(log, every_records=300)
            pipeline.add_consumer(writer, DeliveryMode.EVERY_DELTA)
            pipeline.add_consumer(consumer, DeliveryMode.LATEST_IMAGE)
            for batch in batches:
                await log.append_batch(batch)
                with await pipeline.wait_for_offset(batch.last_offset):
                    pass  # one image per batch, and the writer takes every image
            await consumer.wait_for(batches[-1].last_offset)
        assert writer.snapshots >= 2
        assert log.log_start > 0  # segments below the snapshot were deleted
    consumer.close()

    restarted = RecordingConsumer("restarted")
    with capture_logs() as logs:
        async with (
            await FileRecordLog.open(tmp_path) as log,
            MetadataPipeline(log) as pipeline,
        ):
            pipeline.add_consumer(restarted, DeliveryMode.EVERY_DELTA)
            await restarted.wait_for(batches[-1].last_offset)
            assert pipeline.statistics().loader.snapshots_loaded == 1
            with pipeline.lease() as loaded, Lease(replay_batches(batches)) as full:
                assert loaded == full
    assert any(e["event"] == "snapshot_loaded" for e in logs)
    restarted.close()


async def test_a_writer_waited_for_has_written_the_snapshot_that_was_due() -> None:
    """Closing the pipeline stops a snapshot being written; waiting for the writer first
    keeps the one the last image made due."""
    controller = SyntheticController(WorkloadConfig(seed=5, topics=6, partitions_per_topic=4))
    batches = list(controller.batches(60))
    log = InMemoryRecordSource("log")
    async with MetadataPipeline(log) as pipeline:
        writer = SnapshotWriter(log, every_records=10)
        pipeline.add_consumer(writer, DeliveryMode.LATEST_IMAGE)
        await log.append_batches(batches)
        with await pipeline.wait_for_offset(batches[-1].last_offset) as image:
            await writer.wait_for_offset(image.offset)
    assert writer.seen_offset == batches[-1].last_offset
    assert writer.snapshots >= 1
    snapshot = await log.latest_snapshot()
    assert snapshot is not None
    assert snapshot.provenance.offset == writer.last_offset


async def test_a_corrupt_newest_snapshot_falls_back_to_the_older_one(tmp_path: Path) -> None:
    batches = await write_log(tmp_path)
    async with await FileRecordLog.open(tmp_path) as log:
        async with MetadataPipeline(log) as pipeline:
            with await pipeline.wait_for_offset(batches[-1].last_offset) as image:
                await log.save_snapshot(image)
            last = await log.append([change(0, 2)])
            with await pipeline.wait_for_offset(last.last_offset) as image:
                await log.save_snapshot(image)
        newest = sorted((tmp_path / "snapshots").glob("*.snapshot"))[-1]
        newest.write_bytes(newest.read_bytes()[:-3])
        with capture_logs() as logs:
            snapshot = await log.latest_snapshot()
        assert snapshot is not None
        assert snapshot.provenance.offset == batches[-1].last_offset
        assert any(e["event"] == "snapshot_invalid" for e in logs)


async def test_in_memory_source_keeps_what_readers_went_past_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "TAIL_RECORDS", 3)
    monkeypatch.setattr(memory, "COMPACT_MAX", 1)
    source = InMemoryRecordSource()
    batches = [source.append_nowait(topic_records(A, "orders", 2))]
    batches += [source.append_nowait([change(i % 2, 1 + i % 2)]) for i in range(20)]
    for appended in batches:  # a loader at the tail, batch by batch, gets them as appended
        assert await source.read(appended.base_offset, 1) == [appended]
        assert (await source.read(appended.base_offset, 1))[0] is appended
    # What readers went past is frames now; a reader behind decodes equal batches.
    kept = [entry for entry in source._batches if isinstance(entry, RecordBatch)]
    assert len(kept) < len(batches) / 2
    again = await source.read(0, 1000)
    assert again == batches
    assert again[0] is not batches[0]
    assert again[-1] is batches[-1]  # the tail stays as appended
    # Truncation drops encoded and object batches alike.
    with await _loaded(source) as image:
        await source.save_snapshot(image)
    assert await source.truncate_before(batches[10].base_offset) == 10
    assert await source.read(batches[10].base_offset, 1000) == batches[10:]


async def test_in_memory_source_compresses_what_readers_went_past_in_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "TAIL_RECORDS", 3)
    monkeypatch.setattr(memory, "COMPACT_MAX", 1)
    monkeypatch.setattr(memory, "CHUNK_RECORDS", 4)
    source = InMemoryRecordSource()
    batches = [source.append_nowait(topic_records(A, "orders", 2))]
    batches += [source.append_nowait([change(i % 2, 1 + i % 2)]) for i in range(40)]
    for appended in batches:
        assert await source.read(appended.base_offset, 1) == [appended]
    chunks = {entry.packed for entry in source._batches if isinstance(entry, memory._Sealed)}
    assert len(chunks) > 5
    # A reader from any batch, the first of a chunk or one inside it, reads equal batches.
    for start in range(len(batches)):
        assert await source.read(batches[start].base_offset, 1000) == batches[start:]
    with await _loaded(source) as image:
        await source.save_snapshot(image)
    assert await source.truncate_before(batches[13].base_offset) == 13
    assert await source.read(batches[13].base_offset, 1000) == batches[13:]
    # Sealing goes on after the truncation, and what it sealed reads back the same.
    more = [source.append_nowait([change(0, 2)]) for _ in range(20)]
    for appended in more:
        await source.read(appended.base_offset, 1)
    assert await source.read(batches[13].base_offset, 1000) == batches[13:] + more
    assert len({e.packed for e in source._batches if isinstance(e, memory._Sealed)}) > 5


async def test_in_memory_source_encodes_as_fast_as_a_reader_reads_many_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reader that gets many batches per read (a loader behind by a few appends) must
    not leave a growing backlog of object batches behind it: at 100k partitions that
    was 200k pydantic records, 150 MiB, when each read encoded a fixed amount."""
    monkeypatch.setattr(memory, "TAIL_RECORDS", 3)
    monkeypatch.setattr(memory, "COMPACT_MAX", 2)
    source = InMemoryRecordSource()
    appended = [source.append_nowait(topic_records(A, "orders", 2))]
    position = 0
    for round_ in range(30):
        appended += [source.append_nowait([change(i % 2, 1 + round_ % 2)]) for i in range(6)]
        read = await source.read(position, 1000)
        position = read[-1].next_offset
        objects = sum(len(e.records) for e in source._batches if isinstance(e, RecordBatch))
        assert objects <= 3 + 6 + 3, round_  # the tail, the read, the first batch
    assert await source.read(0, 1000) == appended


async def test_in_memory_source_keeps_its_snapshot_compressed() -> None:
    source = InMemoryRecordSource()
    controller = SyntheticController(WorkloadConfig(seed=2, topics=20, partitions_per_topic=50))
    batches = list(controller.batches(200))
    source.extend(batches)
    image = replay_batches(batches)
    try:
        info = await source.save_snapshot(image)
        ((_, _, kept),) = source._snapshots
        assert len(kept) < info.encoded_size / 3
        snapshot = await source.latest_snapshot()
        assert snapshot is not None
        assert snapshot.provenance == image.provenance
        assert list(snapshot.records) == list(image.write())
    finally:
        image.release()


async def _loaded(source: InMemoryRecordSource) -> Lease[MetadataImage]:
    async with MetadataPipeline(source) as pipeline:
        return await pipeline.wait_for_offset(source.next_offset - 1)


async def test_in_memory_source_falls_back_to_its_snapshot_when_truncated() -> None:
    source = InMemoryRecordSource()
    source.append_nowait(topic_records(A, "orders", 2))
    consumer = RecordingConsumer("cache")
    async with MetadataPipeline(source) as pipeline:
        with await pipeline.wait_for_offset(2) as image:
            await source.save_snapshot(image)
    for i in range(3):
        source.append_nowait([change(i % 2, 2)])
    assert await source.truncate_before(100) == 1  # only what the snapshot covers
    with pytest.raises(SnapshotRequiredError, match="offset 0"):
        await source.read(0, 10)
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(consumer, DeliveryMode.EVERY_DELTA)
        await consumer.wait_for(5)
        assert pipeline.statistics().loader.snapshots_loaded == 1
    consumer.close()


async def test_file_log_waits_for_appends(tmp_path: Path) -> None:
    async with await FileRecordLog.open(tmp_path, fsync="never") as log:
        got: list[int] = []

        async def reader() -> None:
            got.extend(b.base_offset for b in await log.read(0, 10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            await log.append(topic_records(A, "orders", 1))
        assert got == [0]


class CountingFsync:
    """os.fsync, counted (installed over os.fsync by a test)."""

    def __init__(self) -> None:
        self.real = os.fsync
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.real(fd)


async def test_appends_that_wait_together_share_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = CountingFsync()
    monkeypatch.setattr(os, "fsync", fsync)
    async with await FileRecordLog.open(tmp_path, fsync="always") as log:
        first = await log.append(topic_records(A, "orders", 2))
        before = fsync.calls
        acknowledged: list[RecordBatch] = []

        async def append(i: int) -> None:
            batch = await log.append([change(i % 2, 1 + i % 2)])
            # acknowledged only once durable: a reader (the loader) already sees it
            assert await log.high_water_mark() >= batch.next_offset
            acknowledged.append(batch)

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(append, i)
        assert len(acknowledged) == 40
        assert fsync.calls - before < 10  # 40 appends, a handful of group commits

        grouped = [RecordBatch(log.next_offset + i, 1, 0, (change(i % 2, 1),)) for i in range(30)]
        before = fsync.calls
        await log.append_batches(grouped)
        assert fsync.calls - before == 1  # one fsync for the whole group
        assert await log.high_water_mark() == grouped[-1].next_offset
        expected = [first, *sorted(acknowledged, key=lambda b: b.base_offset), *grouped]
    async with await FileRecordLog.open(tmp_path) as reopened:
        assert await reopened.read(0, 10_000) == expected


async def test_a_failed_fsync_is_retried_by_the_next_append_not_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await FileRecordLog.open(tmp_path, fsync="always") as log:
        await log.append(topic_records(A, "orders", 2))

        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        fsync = CountingFsync()
        monkeypatch.setattr(os, "fsync", failing)
        with pytest.raises(OSError, match="Input/output error"):
            await log.append([change(0, 2)])
        hwm = await log.high_water_mark()  # the failed append is not shown to readers
        monkeypatch.setattr(os, "fsync", fsync)
        batch = await log.append([change(1, 2)])
        assert fsync.calls >= 1  # the earlier, unsynced write was synced with this one
        assert await log.high_water_mark() == batch.next_offset
        assert batch.next_offset == hwm + 2
