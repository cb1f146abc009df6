"""The whole pipeline in one ``async with``: publisher, loader, optional snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from broker._logging import get_logger
from broker._tasks import single_cause
from broker.metadata import Lease, MetadataImage
from broker.metadata.pipeline._loader import LoaderStatistics, MetadataLoader, ReplayErrorPolicy
from broker.metadata.pipeline._publisher import MetadataPublisher, PublisherStatistics
from broker.metadata.pipeline._subscription import ConsumerStatistics, Subscription
from broker.metadata.pipeline._updates import DeliveryMode, MetadataConsumer
from broker.metadata.sources import RecordSource

__all__ = ["MetadataPipeline", "PipelineStatistics"]

logger = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PipelineStatistics:
    """The loader's and the publisher's statistics together."""

    loader: LoaderStatistics
    publisher: PublisherStatistics

    @property
    def current_offset(self) -> int:
        """Offset of the newest published image."""
        return self.publisher.current_offset

    @property
    def images_published(self) -> int:
        """Images the publisher handed to its consumers."""
        return self.publisher.images_published

    @property
    def replay_errors(self) -> int:
        """Records the loader could not replay."""
        return self.loader.replay_errors

    @property
    def consumer_faults(self) -> int:
        """Consumer callbacks that raised."""
        return self.publisher.consumer_faults

    @property
    def live_images(self) -> int:
        """Images created and not yet released, process-wide."""
        return self.publisher.live_images

    @property
    def consumers(self) -> tuple[ConsumerStatistics, ...]:
        """Each consumer's progress."""
        return self.publisher.consumers


class MetadataPipeline(anyio.AsyncContextManagerMixin):
    """Loader and publisher on one source.

    ::

        async with MetadataPipeline(source) as pipeline:
            pipeline.add_consumer(cache, DeliveryMode.LATEST_IMAGE)
            with await pipeline.wait_for_offset(0) as image:
                ...

    After the block every image the pipeline held is released.
    """

    def __init__(
        self,
        source: RecordSource,
        *,
        max_records_per_image: int = 10_000,
        on_replay_error: ReplayErrorPolicy = "skip",
        manage_gc: bool = True,
        name: str = "metadata",
    ) -> None:
        self.source = source
        self.publisher = MetadataPublisher(f"{name}.publisher")
        self.loader = MetadataLoader(
            source,
            self.publisher,
            max_records_per_image=max_records_per_image,
            on_replay_error=on_replay_error,
            manage_gc=manage_gc,
            name=f"{name}.loader",
        )

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[MetadataPipeline]:
        with single_cause():
            async with self.publisher, self.loader:
                yield self

    def add_consumer(
        self,
        consumer: MetadataConsumer,
        mode: DeliveryMode = DeliveryMode.EVERY_DELTA,
        *,
        queue_size: int = 16,
        stall_timeout: float | None = None,
    ) -> Subscription:
        """Register ``consumer``; it receives the current image first, then every one
        after it (``mode``: every delta, with a queue of ``queue_size``, or only the latest
        image). A consumer stalled longer than ``stall_timeout`` seconds is removed."""
        return self.publisher.add_consumer(
            consumer, mode, queue_size=queue_size, stall_timeout=stall_timeout
        )

    def remove_consumer(self, name: str) -> None:
        """Stop delivering to consumer ``name`` and release what was queued for it."""
        self.publisher.remove_consumer(name)

    def lease(self) -> Lease[MetadataImage]:
        """A lease on the newest published image."""
        return self.publisher.lease()

    async def wait_for_offset(self, offset: int) -> Lease[MetadataImage]:
        """A lease on the first published image at ``offset`` or later (waits for it)."""
        return await self.publisher.wait_for_offset(offset)

    def statistics(self) -> PipelineStatistics:
        """The loader's and the publisher's counters now."""
        return PipelineStatistics(self.loader.statistics(), self.publisher.statistics())
