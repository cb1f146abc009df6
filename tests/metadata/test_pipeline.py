"""Loader and publisher: gate, delivery modes, isolation, errors, transactions."""

from __future__ import annotations

import uuid

import anyio
import pytest
from structlog.testing import capture_logs

from broker.errors import LoaderHaltedError
from broker.metadata import Lease, Provenance, lifetime_statistics
from broker.metadata.pipeline import (
    DeliveryMode,
    HoldingConsumer,
    MetadataPipeline,
    MetadataPublisher,
    MetadataUpdate,
)
from broker.metadata.records import (
    AbortTransactionRecord,
    BeginTransactionRecord,
    EndTransactionRecord,
    NoOpRecord,
    PartitionChangeRecord,
)
from broker.metadata.sources import InMemoryRecordSource
from tests.helpers import BlockingConsumer, FailingConsumer, RecordingConsumer, topic_records

A, B = uuid.UUID(int=1), uuid.UUID(int=2)


def leader_change(partition: int, leader: int) -> PartitionChangeRecord:
    return PartitionChangeRecord(partition_id=partition, topic_id=A, leader=leader)


def seeded_source(batches: int = 10) -> InMemoryRecordSource:
    source = InMemoryRecordSource()
    source.append_nowait(topic_records(A, "orders", 4))
    for i in range(batches - 1):
        source.append_nowait([leader_change(i % 4, 1 + i % 2)])
    return source


async def test_other_tasks_run_while_the_loader_catches_up_a_long_read() -> None:
    # 5,000 one-record batches, all in one read: the loader yields to the event loop
    # now and then (every CATCH_UP_SLICE), not after every batch, nor only per read.
    source = seeded_source(5000)
    seen: list[int] = []
    async with MetadataPipeline(source) as pipeline:

        async def watch() -> None:
            while not pipeline.loader.caught_up:
                seen.append(pipeline.loader.statistics().records)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(watch)
            await pipeline.loader.wait_caught_up()
    midway = {records for records in seen if 0 < records < 5000}
    assert len(midway) >= 3
    assert len(seen) < 5000 / 4  # not a turn per batch


# --- catch-up gate ------------------------------------------------------------------------


async def test_nothing_is_published_before_the_loader_reaches_the_high_water_mark() -> None:
    source = seeded_source(50)
    hwm = source.next_offset
    consumer = RecordingConsumer("cache")
    async with MetadataPipeline(source, max_records_per_image=3) as pipeline:
        pipeline.add_consumer(consumer, DeliveryMode.EVERY_DELTA, queue_size=100)
        await pipeline.loader.wait_caught_up()
        await consumer.wait_for(hwm - 1)
        assert consumer.offsets[0] == hwm - 1  # no early, partial or empty image
        stats = pipeline.statistics()
        assert stats.loader.images > 1  # it did group internally
        assert stats.images_published == 1
    consumer.close()


async def test_an_empty_log_publishes_nothing_until_a_record_arrives() -> None:
    source = InMemoryRecordSource()
    consumer = RecordingConsumer("cache")
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(consumer, DeliveryMode.LATEST_IMAGE)
        await anyio.wait_all_tasks_blocked()
        assert consumer.offsets == []
        assert not pipeline.loader.caught_up
        source.append_nowait(topic_records(A, "orders", 1))
        await consumer.wait_for(1)
        assert consumer.offsets == [1]
    consumer.close()


# --- delivery ----------------------------------------------------------------------------


async def test_every_delta_consumer_gets_each_delta_in_order() -> None:
    source = seeded_source(1)
    consumer = RecordingConsumer("streams")
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(consumer, DeliveryMode.EVERY_DELTA)
        await consumer.wait_for(source.next_offset - 1)
        for i in range(20):
            source.append_nowait([leader_change(i % 4, 1 + i % 2)])
            await consumer.wait_for(source.next_offset - 1)
    assert consumer.offsets == list(range(4, 25))
    # Each delta applies onto the previous image (the first one onto EMPTY).
    for previous, delta in zip(consumer.offsets, consumer.deltas[1:], strict=False):
        assert delta is not None
        assert delta.image.offset == previous
    consumer.close()


async def test_a_late_consumer_first_gets_the_delta_from_empty_then_every_later_one() -> None:
    source = seeded_source(10)
    early, late = RecordingConsumer("early"), RecordingConsumer("late")
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(early)
        await early.wait_for(source.next_offset - 1)
        pipeline.add_consumer(late, DeliveryMode.EVERY_DELTA)
        await late.wait_for(source.next_offset - 1)
        first = late.deltas[0]
        assert first is not None
        assert first.image.is_empty
        assert first.image.is_immortal
        assert late.manifests[0] == "image"
        with pipeline.lease() as current, Lease(first.apply(current.provenance)) as rebuilt:
            assert rebuilt == current
        source.append_nowait([leader_change(0, 2)])
        await late.wait_for(source.next_offset - 1)
        assert late.offsets == [13, 14]
        assert late.manifests[1] == "log"
    early.close()
    late.close()


async def test_latest_image_consumer_skips_images_it_did_not_reach_and_releases_them() -> None:
    source = seeded_source(1)
    slow = BlockingConsumer("slow-cache")
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(slow, DeliveryMode.LATEST_IMAGE)
        await slow.entered.wait()  # stuck on the first image
        live_before = lifetime_statistics().live
        for i in range(10):
            source.append_nowait([leader_change(0, 1 + i % 2)])
            with await pipeline.wait_for_offset(source.next_offset - 1):
                pass
        # Skipped images were released: only the newest (and the one in the callback)
        # are pinned on the slow consumer's behalf.
        assert lifetime_statistics().live <= live_before + 2
        assert pipeline.statistics().publisher.consumer("slow-cache").lag_images == 11
        slow.release.set()
        await slow.wait_for(source.next_offset - 1)
        assert slow.offsets == [4, 14]
        assert slow.coalesced == 9
        assert pipeline.statistics().publisher.consumer("slow-cache").lag_images == 0
    slow.close()


# --- isolation ---------------------------------------------------------------------------


async def test_an_immediate_latest_image_consumer_holds_each_image_as_it_is_published() -> None:
    # A holding consumer swaps images synchronously: the publisher hands each image over
    # in its own call, so readers of the consumer always read the newest image (derived
    # state they build lands on the image the next delta is applied to).
    source = seeded_source(1)
    holder = HoldingConsumer("cache")
    published: list[tuple[int, int]] = []

    class Witness(RecordingConsumer):
        async def on_metadata_update(self, update: MetadataUpdate) -> None:
            published.append((update.image.offset, holder.offset))
            await super().on_metadata_update(update)

    witness = Witness("witness")
    with holder:
        async with MetadataPipeline(source, max_records_per_image=1) as pipeline:
            subscription = pipeline.add_consumer(holder, DeliveryMode.LATEST_IMAGE)
            assert subscription.immediate
            pipeline.add_consumer(witness, DeliveryMode.EVERY_DELTA, queue_size=64)
            for i in range(20):
                batch = source.append_nowait([leader_change(i % 4, 1 + i % 2)])
                with await pipeline.wait_for_offset(batch.last_offset):
                    assert holder.offset >= batch.last_offset  # no task had to run first
            await witness.wait_for(source.next_offset - 1)
            stats = pipeline.statistics().publisher.consumer("cache")
    witness.close()
    # The every-delta witness runs later than each publish: the holder is never behind it.
    assert all(held >= offset for offset, held in published)
    assert stats.images_delivered == pipeline.statistics().publisher.images_published
    assert stats.coalesced == 0


async def test_a_failing_and_a_blocked_consumer_do_not_stop_the_others() -> None:
    source = seeded_source(1)
    failing = FailingConsumer("buggy")
    blocked = BlockingConsumer("stuck-forever")
    healthy = RecordingConsumer("healthy")
    with capture_logs() as logs:
        async with MetadataPipeline(source) as pipeline:
            pipeline.add_consumer(failing, DeliveryMode.EVERY_DELTA)
            pipeline.add_consumer(blocked, DeliveryMode.LATEST_IMAGE)
            pipeline.add_consumer(healthy, DeliveryMode.EVERY_DELTA)
            for i in range(30):
                source.append_nowait([leader_change(i % 4, 1 + i % 2)])
            await healthy.wait_for(source.next_offset - 1)
            await anyio.wait_all_tasks_blocked()
            stats = pipeline.statistics()
            assert stats.consumer_faults == len(failing.offsets) > 0
            assert stats.publisher.consumer("buggy").faults == len(failing.offsets)
            assert stats.publisher.consumer("stuck-forever").images_delivered == 0
            assert stats.loader.offset == source.next_offset - 1
    assert healthy.offsets[-1] == source.next_offset - 1
    faults = [e for e in logs if e["event"] == "consumer_fault"]
    assert faults[0]["consumer"] == "buggy"
    assert "consumer bug" in faults[0]["error"]
    for consumer in (failing, blocked, healthy):
        consumer.close()


async def test_a_full_every_delta_queue_applies_back_pressure_and_is_visible() -> None:
    source = seeded_source(1)
    slow = BlockingConsumer("slow-streams")
    with capture_logs() as logs:
        # One image per batch, so each append is one more delivery.
        async with MetadataPipeline(source, max_records_per_image=1) as pipeline:
            pipeline.add_consumer(slow, DeliveryMode.EVERY_DELTA, queue_size=2)
            await slow.entered.wait()
            for i in range(5):
                source.append_nowait([leader_change(0, 1 + i % 2)])
            await anyio.wait_all_tasks_blocked()
            stats = pipeline.statistics()
            # 1 in the callback + 2 queued; the loader waits to hand over the next one.
            assert stats.publisher.consumer("slow-streams").queued == 2
            assert stats.publisher.consumer("slow-streams").stalls == 1
            assert stats.loader.offset < source.next_offset - 1
            slow.release.set()
            await slow.wait_for(source.next_offset - 1)
    assert any(e["event"] == "consumer_stalled" for e in logs)
    assert slow.offsets == list(range(4, 10))
    slow.close()


async def test_a_consumer_stalled_past_its_timeout_is_removed_and_its_queue_released() -> None:
    source = seeded_source(1)
    stuck = BlockingConsumer("stuck-streams")
    healthy = RecordingConsumer("healthy")
    async with MetadataPipeline(source, max_records_per_image=1) as pipeline:
        pipeline.add_consumer(stuck, DeliveryMode.EVERY_DELTA, queue_size=1, stall_timeout=0.05)
        pipeline.add_consumer(healthy, DeliveryMode.EVERY_DELTA)
        await stuck.entered.wait()
        for i in range(5):
            source.append_nowait([leader_change(0, 1 + i % 2)])
        await healthy.wait_for(source.next_offset - 1)
        stats = pipeline.statistics()
        assert "stuck-streams" not in pipeline.publisher.consumers
        assert stats.publisher.consumers_removed == 1
    stuck.close()
    healthy.close()


async def test_removing_a_consumer_releases_everything_queued_for_it() -> None:
    source = seeded_source(1)
    slow = BlockingConsumer("slow")
    async with MetadataPipeline(source, max_records_per_image=1) as pipeline:
        pipeline.add_consumer(slow, DeliveryMode.EVERY_DELTA, queue_size=8)
        await slow.entered.wait()
        for i in range(6):
            source.append_nowait([leader_change(0, 1 + i % 2)])
        with await pipeline.wait_for_offset(source.next_offset - 1):
            pass
        pinned = lifetime_statistics().live
        pipeline.remove_consumer("slow")
        await anyio.wait_all_tasks_blocked()
        assert lifetime_statistics().live < pinned
        assert pipeline.publisher.consumers == ()
    slow.close()


# --- bad records -------------------------------------------------------------------------


async def test_a_bad_record_is_reported_with_its_offset_and_skipped() -> None:
    source = seeded_source(1)
    consumer = RecordingConsumer("cache")
    with capture_logs() as logs:
        async with MetadataPipeline(source) as pipeline:
            pipeline.add_consumer(consumer, DeliveryMode.LATEST_IMAGE)
            source.append_nowait(
                [PartitionChangeRecord(partition_id=0, topic_id=B, leader=2), leader_change(1, 2)]
            )
            await consumer.wait_for(6)
            with pipeline.lease() as image:
                partition = image.topics.partition(A, 1)
                assert partition is not None
                assert partition.leader == 2  # the good record after the bad one applied
            assert pipeline.statistics().replay_errors == 1
    errors = [e for e in logs if e["event"] == "replay_error"]
    assert len(errors) == 1
    assert errors[0]["offset"] == 5
    assert errors[0]["record_type"] == "PartitionChangeRecord"
    assert "does not exist" in errors[0]["reason"]
    consumer.close()


async def test_every_bad_record_of_a_batch_is_reported_and_the_good_ones_around_apply() -> None:
    source = seeded_source(1)
    consumer = RecordingConsumer("cache")
    bad = PartitionChangeRecord(partition_id=0, topic_id=B, leader=2)
    with capture_logs() as logs:
        async with MetadataPipeline(source) as pipeline:
            pipeline.add_consumer(consumer, DeliveryMode.LATEST_IMAGE)
            source.append_nowait([leader_change(0, 2), bad, leader_change(1, 2), bad])
            await consumer.wait_for(8)
            with pipeline.lease() as image:
                leaders = [image.topics.partition(A, p) for p in (0, 1)]
                assert [p.leader if p else None for p in leaders] == [2, 2]
            assert pipeline.statistics().replay_errors == 2
    assert [e["offset"] for e in logs if e["event"] == "replay_error"] == [6, 8]
    consumer.close()


async def test_halt_mode_stops_at_the_bad_record_and_keeps_the_last_good_image() -> None:
    source = seeded_source(1)
    consumer = RecordingConsumer("cache")
    pipeline = MetadataPipeline(source, on_replay_error="halt")

    async def run() -> None:
        async with pipeline:
            pipeline.add_consumer(consumer, DeliveryMode.LATEST_IMAGE)
            await consumer.wait_for(4)
            source.append_nowait(
                [leader_change(1, 2), PartitionChangeRecord(partition_id=9, topic_id=A, leader=2)]
            )
            source.append_nowait([leader_change(2, 2)])
            await pipeline.loader.wait_stopped()
            assert pipeline.statistics().loader.halted is not None
            with pipeline.lease() as image:
                assert image.offset == 5  # the record before the bad one

    with pytest.raises(LoaderHaltedError, match="at offset 6") as caught:
        await run()
    assert caught.value.cause.offset == 6
    assert consumer.offsets[-1] == 5
    consumer.close()


# --- transactions ------------------------------------------------------------------------


async def test_a_transaction_lands_in_one_image_and_an_aborted_one_in_none() -> None:
    source = seeded_source(1)
    consumer = RecordingConsumer("streams")
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(consumer, DeliveryMode.EVERY_DELTA)
        await consumer.wait_for(4)
        source.append_nowait([BeginTransactionRecord(name="move"), leader_change(0, 2)])
        source.append_nowait([leader_change(1, 2)])
        await anyio.wait_all_tasks_blocked()
        assert consumer.offsets == [4]  # nothing published mid-transaction
        source.append_nowait([leader_change(2, 2), EndTransactionRecord()])
        await consumer.wait_for(9)
        assert consumer.offsets == [4, 9]
        source.append_nowait(
            [BeginTransactionRecord(), leader_change(3, 2), AbortTransactionRecord()]
        )
        source.append_nowait([NoOpRecord()])
        await consumer.wait_for(13)
        with pipeline.lease() as image:
            partition = image.topics.partition(A, 3)
            assert partition is not None
            assert partition.leader == 1  # the aborted change never applied
        assert pipeline.statistics().loader.transactions_aborted == 1
    consumer.close()


async def test_records_before_a_transaction_in_the_same_group_are_their_own_image() -> None:
    source = seeded_source(1)
    source.append_nowait([leader_change(0, 2), BeginTransactionRecord(), leader_change(1, 2)])
    source.append_nowait([EndTransactionRecord()])
    consumer = RecordingConsumer("streams")
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(consumer, DeliveryMode.EVERY_DELTA)
        await consumer.wait_for(8)
        # Offsets 0-5 were applied as one image before the transaction, 6-8 as another;
        # only the second is published (the gate opens at offset 8).
        assert pipeline.statistics().loader.images == 2
        assert consumer.offsets == [8]
    consumer.close()


# --- ownership at shutdown -----------------------------------------------------------------


async def test_publisher_refuses_consumers_outside_its_block() -> None:
    publisher = MetadataPublisher()
    consumer = RecordingConsumer("x")
    with pytest.raises(Exception, match="inside `async with publisher:`"):
        publisher.add_consumer(consumer)
    async with publisher:
        publisher.add_consumer(consumer)
        with pytest.raises(Exception, match="already registered"):
            publisher.add_consumer(consumer)
    consumer.close()


async def test_after_the_pipeline_block_no_image_is_left_alive() -> None:
    base = lifetime_statistics().live
    source = seeded_source(30)
    consumers = [RecordingConsumer("a"), BlockingConsumer("b"), RecordingConsumer("c")]
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(consumers[0], DeliveryMode.EVERY_DELTA)
        pipeline.add_consumer(consumers[1], DeliveryMode.EVERY_DELTA, queue_size=4)
        pipeline.add_consumer(consumers[2], DeliveryMode.LATEST_IMAGE)
        await consumers[0].wait_for(source.next_offset - 1)
        for i in range(8):
            source.append_nowait([leader_change(0, 1 + i % 2)])
        await anyio.wait_all_tasks_blocked()
        assert lifetime_statistics().live > base
    for consumer in consumers:
        consumer.close()
    assert lifetime_statistics().live == base


def test_manifest_fields() -> None:
    provenance = Provenance(3, 1, 0)
    assert provenance.offset == 3
