"""The pipeline under load and under cancellation: counts always balance."""

from __future__ import annotations

import random

import anyio
import pytest
from anyio.lowlevel import checkpoint

from broker.metadata import lifetime_statistics
from broker.metadata.pipeline import DeliveryMode, ImageHolder, MetadataPipeline, MetadataUpdate
from broker.metadata.sources import InMemoryRecordSource
from broker.sim import SyntheticController, WorkloadConfig
from tests.helpers import FailingConsumer, RecordingConsumer


class StreamManagerLike:
    """An every-delta consumer that checks the deltas chain and keeps its own image."""

    def __init__(self) -> None:
        self.holder = ImageHolder("stream-manager")
        self.previous = -1
        self.broken_chain = 0
        self.updates = 0

    @property
    def name(self) -> str:
        return "stream-manager"

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        assert update.delta is not None
        if update.delta.image.offset != self.previous:
            self.broken_chain += 1
        # Both sides of the delta are readable for the whole callback.
        _ = update.delta.image.streams, update.image.streams
        await checkpoint()
        self.holder.set(update.image)
        self.previous = update.image.offset
        self.updates += 1


@pytest.mark.slow
async def test_ten_thousand_batches_with_fifty_concurrent_readers() -> None:
    base = lifetime_statistics()
    source = InMemoryRecordSource()
    controller = SyntheticController(WorkloadConfig(seed=11, topics=20, partitions_per_topic=5))
    batches = list(controller.batches(10_000))
    assert len(batches) >= 10_000
    cache = RecordingConsumer("metadata-cache")
    streams = StreamManagerLike()
    reads = 0
    done = anyio.Event()

    async def reader() -> None:
        nonlocal reads
        while not done.is_set():
            with cache.holder.lease() as image:
                await checkpoint()  # the pipeline moves on while we hold it
                assert image.topics.partition_count() >= 0
                reads += 1
            await checkpoint()

    async with MetadataPipeline(source, max_records_per_image=500) as pipeline:
        pipeline.add_consumer(cache, DeliveryMode.LATEST_IMAGE)
        pipeline.add_consumer(streams, DeliveryMode.EVERY_DELTA, queue_size=8)
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(reader)
            for batch in batches:
                source.append_batch_nowait(batch)
                await checkpoint()
            await cache.wait_for(batches[-1].last_offset)
            with await streams.holder.wait_for_offset(batches[-1].last_offset):
                pass
            done.set()
        stats = pipeline.statistics()
        assert stats.replay_errors == 0
        assert stats.consumer_faults == 0
        assert stats.loader.offset == batches[-1].last_offset
    cache.close()
    streams.holder.close()
    assert streams.broken_chain == 0
    assert reads > 1000
    after = lifetime_statistics()
    assert after.reference_count_errors == base.reference_count_errors
    assert after.released_reads == base.released_reads
    assert after.live == base.live


class CancellingConsumer(RecordingConsumer):
    """Cancels the whole pipeline from inside its callback on its k-th update."""

    def __init__(self, name: str, after: int, scope: anyio.CancelScope) -> None:
        super().__init__(name)
        self.after = after
        self.scope = scope

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        await super().on_metadata_update(update)
        if len(self.offsets) >= self.after:
            self.scope.cancel()
        await checkpoint()


async def test_cancellation_at_random_points_leaves_every_count_balanced() -> None:
    base = lifetime_statistics()
    for seed in range(40):
        rng = random.Random(seed)
        source = InMemoryRecordSource()
        controller = SyntheticController(
            WorkloadConfig(seed=seed, topics=5, partitions_per_topic=3)
        )
        consumers: list[RecordingConsumer] = []
        with anyio.CancelScope() as scope:
            async with MetadataPipeline(
                source, max_records_per_image=rng.choice((1, 5, 50))
            ) as pipeline:
                cancelling = CancellingConsumer("canceller", rng.randint(1, 40), scope)
                consumers = [RecordingConsumer("cache"), FailingConsumer("buggy"), cancelling]
                pipeline.add_consumer(consumers[0], DeliveryMode.LATEST_IMAGE)
                pipeline.add_consumer(consumers[1], DeliveryMode.EVERY_DELTA, queue_size=2)
                pipeline.add_consumer(cancelling, rng.choice(list(DeliveryMode)), queue_size=1)

                async def killer(steps: int) -> None:
                    for _ in range(steps):
                        await checkpoint()
                    scope.cancel()

                async def lessee() -> None:
                    while True:
                        with pipeline.lease() as image:
                            await checkpoint()
                            _ = image.topics

                async with anyio.create_task_group() as tg:
                    tg.start_soon(killer, rng.randint(0, 400))
                    for _ in range(3):
                        tg.start_soon(lessee)
                    for batch in controller.batches(200):
                        source.append_batch_nowait(batch)
                        if rng.random() < 0.5:
                            await checkpoint()
                    await anyio.sleep_forever()
        assert scope.cancelled_caught
        for consumer in consumers:
            consumer.close()
        after = lifetime_statistics()
        assert after.live == base.live, f"seed {seed}: {after.oldest_live}"
        assert after.reference_count_errors == base.reference_count_errors
