"""The seed scenario of AutoMQ #2087, end to end, under the new ownership.

loader -> publisher -> metadata cache + stream metadata manager (+ failover monitor),
200 concurrent METADATA tasks and failover-check tasks over 20k images of churn with
failovers. No ReferenceCountError, no ImageReleasedError, no leak (the suite runs at
PARANOID), and every answer consistent with exactly one image: an independent oracle
records, per image, each topic's (leader, epoch, error) and every answer is compared
with the oracle's entry for the offset the answer says it came from.
"""

from __future__ import annotations

import random

import anyio
import pytest
from anyio.lowlevel import checkpoint

from broker.cache import (
    ErrorCode,
    FailoverIndex,
    FailoverMonitor,
    FailoverStatus,
    MetadataCache,
    MetadataRequest,
    MetadataResponse,
    StreamMetadataManager,
    check_partition,
    partitions_in_failover,
)
from broker.metadata import MetadataImage, lifetime_statistics
from broker.metadata.pipeline import DeliveryMode, MetadataPipeline, MetadataUpdate
from broker.metadata.records import NO_LEADER
from broker.metadata.sources import InMemoryRecordSource
from broker.sim import SyntheticController, WorkloadConfig

CLUSTER = "seed-cluster"
IMAGES = 20_000
WATCHED = tuple(f"topic-{i:05d}" for i in range(1, 9))
"""Topics the oracle follows (a fixed set keeps it cheap; answers are checked on them)."""
TopicAnswer = tuple[tuple[int, int, int], ...]


class Oracle:
    """Every image's expected per-topic answer, computed without the cache's code."""

    def __init__(self) -> None:
        # Readers may ask before the first image is published: the cache then answers
        # from the empty image (offset -1), which knows no topic.
        self.expected: dict[int, dict[str, int]] = {-1: {}}

    @property
    def name(self) -> str:
        return "oracle"

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        image = update.image
        by_name = image.topics.by_name
        self.expected[image.offset] = {
            name: hash(self.topic(image, by_name[name])) for name in WATCHED if name in by_name
        }

    def topic(self, image: MetadataImage, topic_id: object) -> TopicAnswer:
        index = FailoverIndex.build(CLUSTER, image.kv.values)  # not the cache's incremental one
        topic = image.topics.by_id[topic_id]  # type: ignore[index]
        rows = []
        for partition_id in sorted(topic.partitions.keys()):
            partition = topic.partitions[partition_id]
            registered = (
                partition.leader != NO_LEADER and image.cluster.broker(partition.leader) is not None
            )
            status, _ = check_partition(index, image.streams, topic.id, partition_id, partition)
            ok = registered and status in (FailoverStatus.HEALTHY, FailoverStatus.NO_META_STREAM)
            error = ErrorCode.NONE if ok else ErrorCode.LEADER_NOT_AVAILABLE
            rows.append((partition.leader if ok else -1, partition.leader_epoch, int(error)))
        return tuple(rows)


def answered(response: MetadataResponse) -> dict[str, int]:
    return {
        topic.name: hash(
            tuple((p.leader_id, p.leader_epoch, int(p.error_code)) for p in topic.partitions)
        )
        for topic in response.topics
        if topic.error_code is ErrorCode.NONE and topic.name in WATCHED
    }


@pytest.mark.slow
async def test_seed_scenario_two_hundred_readers_twenty_thousand_images() -> None:
    base = lifetime_statistics()
    source = InMemoryRecordSource()
    config = WorkloadConfig(
        seed=2087,
        cluster_id=CLUSTER,
        brokers=6,
        topics=12,
        partitions_per_topic=4,
        failover_steps_apart=20,
        node_event_interval_ms=0,  # failovers as often as drawn: many of them in 20k images
    )
    controller = SyntheticController(config)
    cache = MetadataCache(CLUSTER, rng=random.Random(1))
    streams = StreamMetadataManager()
    monitor = FailoverMonitor(CLUSTER, interval=60)
    oracle = Oracle()
    answers: list[tuple[int, dict[str, int]]] = []
    unavailable_seen = 0
    failover_checks = 0
    errors: list[BaseException] = []
    done = anyio.Event()

    async def metadata_task(worker: int) -> None:
        nonlocal unavailable_seen
        rng = random.Random(worker)
        while not done.is_set():
            try:
                if rng.random() < 0.05:
                    request = MetadataRequest(version=rng.choice((1, 5, 9, 12, 13)))
                else:
                    request = MetadataRequest.for_topics(*rng.sample(WATCHED, 2))
                if rng.random() < 0.1:  # from a worker thread, while the loop publishes
                    response = await anyio.to_thread.run_sync(cache.metadata, request)
                else:
                    response = cache.metadata(request)
                answers.append((response.provenance.offset, answered(response)))
                unavailable_seen += sum(
                    p.error_code is ErrorCode.LEADER_NOT_AVAILABLE
                    for t in response.topics
                    for p in t.partitions
                )
            except Exception as exc:
                errors.append(exc)
            for _ in range(rng.randint(1, 4)):  # each task asks every few scheduling rounds
                await checkpoint()

    async def failover_check_task() -> None:
        nonlocal failover_checks
        while not done.is_set():
            try:
                with cache.lease() as image:
                    await checkpoint()  # images are published meanwhile
                    partitions_in_failover(image, CLUSTER)
                    failover_checks += 1
            except Exception as exc:
                errors.append(exc)
            await checkpoint()

    async with monitor, MetadataPipeline(source, max_records_per_image=1) as pipeline:
        pipeline.add_consumer(oracle, DeliveryMode.EVERY_DELTA, queue_size=256)
        pipeline.add_consumer(cache, DeliveryMode.LATEST_IMAGE)
        pipeline.add_consumer(streams, DeliveryMode.EVERY_DELTA, queue_size=256)
        pipeline.add_consumer(monitor, DeliveryMode.LATEST_IMAGE)
        async with anyio.create_task_group() as tg:
            for worker in range(200):
                tg.start_soon(metadata_task, worker)
            for _ in range(10):
                tg.start_soon(failover_check_task)
            images = 0
            while images < IMAGES:
                # The controller appends in bursts; the 210 reader tasks run between them.
                for _ in range(16):
                    for batch in controller.churn():
                        source.append_batch_nowait(batch)
                        images += 1
                await checkpoint()
            with await cache.wait_for_offset(source.next_offset - 1):
                pass
            with await streams.wait_for_offset(source.next_offset - 1):
                pass
            done.set()
        stats = pipeline.statistics()
        monitor_stats = monitor.statistics()

    cache.close()
    streams.close()
    assert errors == []
    assert stats.loader.images >= IMAGES
    assert stats.consumer_faults == 0
    assert controller.failovers_completed > 10
    assert monitor_stats.completed > 0
    assert unavailable_seen > 0  # readers did see partitions mid-failover
    assert failover_checks > 100
    assert len(answers) > 10_000
    for offset, topics in answers:
        expected = oracle.expected[offset]
        for name, digest in topics.items():
            assert expected[name] == digest, f"answer at offset {offset} mixes images for {name}"
    after = lifetime_statistics()
    assert after.reference_count_errors == base.reference_count_errors
    assert after.released_reads == base.released_reads
    assert after.live == base.live
