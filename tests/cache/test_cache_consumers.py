"""The cache, the stream metadata manager and the failover monitor as pipeline consumers."""

from __future__ import annotations

import uuid

import anyio
import pytest
from structlog.testing import capture_logs

from broker.cache import (
    ErrorCode,
    FailoverMonitor,
    MetadataCache,
    MetadataRequest,
    StreamMetadataManager,
)
from broker.errors import FetchTimeoutError, StreamFetchError
from broker.metadata import MetadataDelta, lifetime_statistics
from broker.metadata.pipeline import DeliveryMode, LoadManifest, MetadataPipeline, MetadataUpdate
from broker.metadata.records import RangeRecord, S3StreamObjectRecord, S3StreamRecord
from broker.metadata.sources import InMemoryRecordSource
from broker.sim import SyntheticController, WorkloadConfig
from tests.helpers import RecordingConsumer, topic_records

A = uuid.UUID(int=1)
CLUSTER = "sim-cluster"


async def test_cache_answers_from_one_lease_and_reports_provenance() -> None:
    source = InMemoryRecordSource()
    controller = SyntheticController(WorkloadConfig(seed=2, topics=4, partitions_per_topic=3))
    source.extend(controller.batches(50))
    cache = MetadataCache(CLUSTER)
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(cache, DeliveryMode.LATEST_IMAGE)
        with await cache.wait_for_offset(source.next_offset - 1) as image:
            live = image.ref_count
            response = cache.metadata(MetadataRequest())
            assert image.ref_count == live  # the request's lease is back
            assert response.provenance == image.provenance
            names = sorted(image.topics.by_name)
        assert [t.name for t in response.topics] == names
        first = names[0]
        topic_id = cache.topic_id(first)
        assert topic_id is not None
        assert cache.topic_name(topic_id) == first
        assert cache.topic_id("nope") is None
        assert [b.node_id for b in cache.alive_brokers()] == [b.node_id for b in response.brokers]
        description = cache.describe_cluster()
        assert description.cluster_id == CLUSTER
        assert description.controller_id in {b.node_id for b in description.brokers}
        leader = cache.partition_leader(first, 0)
        assert leader.error_code is ErrorCode.NONE
        assert leader.leader_id == response.topic(first).partitions[0].leader_id
        assert cache.partition_leader(first, 99).error_code is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert cache.requests == 1
    cache.close()


# --- stream metadata manager -----------------------------------------------------------------

STREAM = 3


def stream_created() -> list[object]:
    return [
        *topic_records(A, "orders", 1),
        S3StreamRecord(stream_id=STREAM, epoch=0, range_index=0),
        RangeRecord(
            stream_id=STREAM, epoch=0, range_index=0, start_offset=0, end_offset=0, node_id=1
        ),
    ]


def commit(object_id: int, start: int, end: int) -> list[object]:
    return [
        S3StreamObjectRecord(
            object_id=object_id, stream_id=STREAM, start_offset=start, end_offset=end
        ),
        RangeRecord(
            stream_id=STREAM, epoch=0, range_index=0, start_offset=0, end_offset=end, node_id=1
        ),
    ]


async def test_a_parked_fetch_holds_no_image_and_wakes_on_a_later_one() -> None:
    source = InMemoryRecordSource()
    source.append_nowait(stream_created())  # type: ignore[arg-type]
    streams = StreamMetadataManager()
    results = []
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(streams, DeliveryMode.EVERY_DELTA)
        with await pipeline.wait_for_offset(source.next_offset - 1):
            pass

        async def fetcher() -> None:
            results.append(await streams.fetch(STREAM, 0, 100))

        async with anyio.create_task_group() as tg:
            tg.start_soon(fetcher)
            await anyio.wait_all_tasks_blocked()
            assert streams.statistics().parked == 1
            with streams.lease() as image:
                assert image.ref_count == 4  # loader, publisher, manager, this lease: not the fetch
            source.append_nowait(commit(10, 0, 60))  # type: ignore[arg-type]
            await anyio.wait_all_tasks_blocked()
            assert streams.statistics().parked == 1  # 60 < 100: still waiting
            source.append_nowait(commit(11, 60, 120))  # type: ignore[arg-type]
    (result,) = results
    assert [o.object_id for o in result.objects] == [10, 11]
    assert result.provenance.offset == source.next_offset - 1
    stats = streams.statistics()
    assert (stats.parked, stats.woken, stats.fetches) == (0, 2, 1)
    streams.close()


async def test_fetch_timeout_and_cancellation_leave_nothing_parked() -> None:
    source = InMemoryRecordSource()
    source.append_nowait(stream_created())  # type: ignore[arg-type]
    streams = StreamMetadataManager(fetch_timeout=0.05)
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(streams, DeliveryMode.EVERY_DELTA)
        with await pipeline.wait_for_offset(source.next_offset - 1):
            pass
        with pytest.raises(
            FetchTimeoutError, match=r"fetch of stream 3 \[0, 10\) timed out"
        ) as caught:
            await streams.fetch(STREAM, 0, 10)
        assert caught.value.image_offset == source.next_offset - 1
        with anyio.CancelScope() as scope:
            scope.cancel()
            await streams.fetch(STREAM, 0, 10)
        stats = streams.statistics()
        assert (stats.parked, stats.timeouts) == (0, 1)
        with pytest.raises(StreamFetchError, match="no such stream"):
            await streams.fetch(99, 0, 10)
    streams.close()


async def test_a_consumer_waiting_on_a_fetch_does_not_block_the_publisher() -> None:
    """AutoMQ #252: a consumer's fetch needs the next image; the pipeline must go on."""
    source = InMemoryRecordSource()
    source.append_nowait(stream_created())  # type: ignore[arg-type]
    streams = StreamMetadataManager(fetch_timeout=10)

    class Reader(RecordingConsumer):
        async def on_metadata_update(self, update: MetadataUpdate) -> None:
            if not self.offsets:
                await streams.fetch(STREAM, 0, 50)  # committed only in a later image
            await super().on_metadata_update(update)

    reader = Reader("reader")
    async with MetadataPipeline(source, max_records_per_image=1) as pipeline:
        pipeline.add_consumer(streams, DeliveryMode.EVERY_DELTA)
        pipeline.add_consumer(reader, DeliveryMode.EVERY_DELTA, queue_size=1)
        with await pipeline.wait_for_offset(source.next_offset - 1):
            pass
        source.append_nowait(commit(1, 0, 50))  # type: ignore[arg-type]
        source.append_nowait(commit(2, 50, 80))  # type: ignore[arg-type]
        await reader.wait_for(source.next_offset - 1)
    assert reader.offsets == [3, 5, 7]
    streams.close()
    reader.close()


async def test_the_stream_manager_skips_images_whose_offset_did_not_change() -> None:
    source = InMemoryRecordSource()
    source.append_nowait(topic_records(A, "orders", 1))
    streams = StreamMetadataManager()
    async with MetadataPipeline(source) as pipeline:
        pipeline.add_consumer(streams, DeliveryMode.EVERY_DELTA)
        with await streams.wait_for_offset(1) as image:
            manifest = LoadManifest("log", image.provenance, -1, 0, 0, None, 0.0)
            await streams.on_metadata_update(MetadataUpdate(image, MetadataDelta(image), manifest))
        assert streams.statistics().skipped == 1
        assert streams.statistics().images == 1
    streams.close()


# --- failover monitor ------------------------------------------------------------------------


async def test_the_monitor_sees_failovers_start_and_complete() -> None:
    base = lifetime_statistics()
    source = InMemoryRecordSource()
    config = WorkloadConfig(
        seed=4, brokers=5, topics=6, partitions_per_topic=4, failover_steps_apart=3
    )
    controller = SyntheticController(config)
    source.extend(controller.bootstrap())
    monitor = FailoverMonitor(CLUSTER, interval=60)
    seen_in_failover = 0
    with capture_logs() as logs:
        async with monitor, MetadataPipeline(source, max_records_per_image=1) as pipeline:
            pipeline.add_consumer(monitor, DeliveryMode.LATEST_IMAGE)
            while controller.failovers_completed < 2:
                for batch in controller.churn():
                    source.append_batch_nowait(batch)
                    await monitor.wait_checked(batch.last_offset)
                    seen_in_failover = max(
                        seen_in_failover, monitor.statistics().partitions_in_failover
                    )
            # Drain: once the last failover completed nothing is left in failover.
            for batch in controller.churn():
                source.append_batch_nowait(batch)
                await monitor.wait_checked(batch.last_offset)
            stats = monitor.statistics()
    assert seen_in_failover > 0
    assert stats.completed >= seen_in_failover
    assert stats.partitions_in_failover == 0
    started = [e for e in logs if e["event"] == "partitions_in_failover"]
    completed = [e for e in logs if e["event"] == "failover_completed"]
    assert sum(e["count"] for e in started) == sum(e["count"] for e in completed) == stats.completed
    assert "last range is not owned by the leader" in {r for e in started for r in e["reasons"]}
    assert all(len(e["sample"]) <= 10 for e in started)
    # Counted since the test began: earlier tests provoke refcount errors on purpose.
    assert lifetime_statistics().reference_count_errors == base.reference_count_errors
