"""The AutoMQ failure (#2087) reproduced with the old ownership, and impossible with the new.

Old: the loader hands one reference to two consumers; one releases "its" reference while
the metadata cache still answers METADATA from the image -> ``refCnt: 0, increment: 1``.
New: every consumer keeps its image in an ImageHolder and every reader leases.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import anyio
import pytest
from anyio.lowlevel import checkpoint

from broker.errors import ImageReleasedError, ReferenceCountError
from broker.metadata import (
    DerivedKey,
    MetadataDelta,
    MetadataImage,
    Provenance,
    lifetime_statistics,
)
from broker.metadata.pipeline import ImageHolder
from broker.metadata.records import PartitionChangeRecord, PartitionRecord, TopicRecord

TOPIC = uuid.UUID(int=1)
PARTITIONS = 8
STREAM_INDEX = DerivedKey("failover-stream-index", lambda image: dict(image.topics.by_id))


def first_image() -> MetadataImage:
    delta = MetadataDelta(MetadataImage.EMPTY)
    delta.replay(TopicRecord(name="orders", topic_id=TOPIC))
    for p in range(PARTITIONS):
        delta.replay(
            PartitionRecord(partition_id=p, topic_id=TOPIC, replicas=(1, 2), isr=(1, 2), leader=1)
        )
    return delta.apply(Provenance(PARTITIONS, 1, 0))


def next_image(image: MetadataImage, rng: random.Random) -> MetadataImage:
    delta = MetadataDelta(image)
    delta.replay(
        PartitionChangeRecord(
            partition_id=rng.randrange(PARTITIONS), topic_id=TOPIC, leader=rng.choice((1, 2))
        )
    )
    return delta.apply(Provenance(image.offset + 1, 1, 0))


def check_failover(image: MetadataImage) -> int:
    """What the cache does per METADATA request: retain, read every partition, release."""
    image.retain()
    try:
        index = image.derived(STREAM_INDEX)
        return sum(1 for topic in index.values() for _ in topic.partitions)
    finally:
        image.release()


class WrongStreamManager:
    """The pre-#2882 stream metadata manager: releases the image it never retained."""

    def __init__(self) -> None:
        self.image: MetadataImage | None = None

    def on_image(self, image: MetadataImage) -> None:
        if self.image is not None:
            self.image.release()
        self.image = image


class WrongCache:
    """The pre-#2089 metadata cache: keeps the image reference it was handed."""

    def __init__(self) -> None:
        self.image: MetadataImage | None = None

    def on_image(self, image: MetadataImage) -> None:
        self.image = image

    def metadata(self) -> int:
        assert self.image is not None
        return check_failover(self.image)


def test_the_old_ownership_fails_loudly_naming_the_image_and_the_sites() -> None:
    rng = random.Random(1)
    cache, streams = WrongCache(), WrongStreamManager()
    image = first_image()
    published: list[MetadataImage] = []
    for _ in range(2):
        cache.on_image(image)
        streams.on_image(image)  # shares the loader's reference instead of its own
        published.append(image)
        image = next_image(image, rng)
    # The stream manager moved to the second image and released the first one: the
    # reference the cache was still using. The cache now answers METADATA from it.
    stale = published[0]
    cache.image = stale
    with pytest.raises(ReferenceCountError) as caught:
        cache.metadata()
    message = str(caught.value)
    assert "refCnt: 0, increment: 1" in message
    assert f"offset={stale.offset}, epoch=1" in message
    assert "in on_image" in message  # where the wrong release happened
    with pytest.raises(ImageReleasedError, match=f"offset={stale.offset}"):
        _ = stale.topics
    # Clean up what the broken design leaves behind.
    published[1].release()
    image.release()


class Consumer:
    """Every consumer the right way: its own reference, in a holder."""

    def __init__(self, name: str) -> None:
        self.holder = ImageHolder(name)

    def on_image(self, image: MetadataImage) -> None:
        self.holder.set(image)


async def test_the_holder_protocol_survives_100k_interleaved_operations() -> None:
    rng = random.Random(7)
    cache, streams = Consumer("metadata-cache"), Consumer("stream-manager")
    created: list[MetadataImage] = []
    operations = 0
    errors: list[BaseException] = []
    done = anyio.Event()
    base = lifetime_statistics()

    async def loader() -> None:
        nonlocal operations
        image = first_image()
        created.append(image)
        while not done.is_set():
            for consumer in (cache, streams):
                consumer.on_image(image)
            new = next_image(image, rng)
            created.append(new)
            image.release()  # the loader's own reference, after hand-off
            image = new
            operations += 1
            await checkpoint()
        image.release()

    async def metadata_request(worker: int) -> None:
        nonlocal operations
        while not done.is_set():
            try:
                with cache.holder.lease() as image:
                    await checkpoint()  # another task publishes meanwhile
                    assert check_failover(image) == PARTITIONS
                    operations += 1
                if worker == 0:
                    with streams.holder.lease() as image:
                        await anyio.to_thread.run_sync(check_failover, image)
                        operations += 1
            except Exception as exc:
                errors.append(exc)
            if operations >= 100_000:
                done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(loader)
        for worker in range(8):
            tg.start_soon(metadata_request, worker)
    cache.holder.close()
    streams.holder.close()
    assert errors == []
    assert operations >= 100_000
    # Every count went back to zero: each image was released by its last owner.
    assert all(image.ref_count == 0 for image in created)
    assert lifetime_statistics().live == base.live
    assert lifetime_statistics().reference_count_errors == base.reference_count_errors


@pytest.mark.integration
def test_the_suite_fails_a_test_that_leaks_an_image(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((Path(__file__).parents[1] / "conftest.py").read_text())
    pytester.makepyfile(
        test_leaky="""
        import uuid
        from broker.metadata import Lease, MetadataDelta, MetadataImage, Provenance
        from broker.metadata.records import TopicRecord

        def make():
            delta = MetadataDelta(MetadataImage.EMPTY)
            delta.replay(TopicRecord(name="t", topic_id=uuid.UUID(int=1)))
            return delta.apply(Provenance(0, 1, 0))

        KEPT = []

        def test_leaks():
            image = make()
            image.retain()

        def test_keeps_a_reference():
            KEPT.append(make())

        def test_balanced():
            with Lease(make()) as image:
                assert image.is_live
        """
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    # The leaking tests pass their own asserts and then fail in the suite's teardown.
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(["*1 image(s) leaked: garbage-collected without release()*"])
    result.stdout.fnmatch_lines(["*1 image(s) still hold references after the test*"])
