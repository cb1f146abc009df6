"""The publisher: hands every new image to async consumers, each at its own pace.

Ownership (``automq-image-lifetime.md`` rules 1-3): the publisher retains the image once
per consumer *before* handing it over; the consumer's subscription releases that
reference when the consumer's callback returns (a consumer that keeps the image retains
it itself, e.g. with an ImageHolder). Every-delta deliveries also lease the delta's
base image, so a consumer can read both sides of the change; both leases are taken
all-or-nothing.

Two delivery modes (:class:`DeliveryMode`):

* every-delta: each (delta, image, manifest) in order through a bounded queue. When the
  queue is full the publisher (and so the loader) waits: back-pressure, logged and
  counted as a stall. ``stall_timeout`` disconnects a consumer stalled that long.
* latest-image: only the newest image; one it has not reached yet is released unseen
  when a newer one arrives (coalescing), so a slow reader never holds the pipeline or
  pins old images.

Consumers run in their own tasks: a slow, failing or blocked consumer does not delay the
others (beyond the back-pressure of a full every-delta queue it asked for).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from broker._logging import get_logger
from broker._tasks import single_cause
from broker.errors import BrokerError
from broker.metadata import (
    DerivedKey,
    Lease,
    MetadataDelta,
    MetadataImage,
    lifetime_statistics,
    retain_all,
)
from broker.metadata.pipeline._holder import ImageHolder
from broker.metadata.pipeline._subscription import ConsumerStatistics, Subscription, _Delivery
from broker.metadata.pipeline._updates import (
    DeliveryMode,
    LoadManifest,
    MetadataConsumer,
    MetadataUpdate,
)

__all__ = ["MetadataPublisher", "PublisherStatistics"]

logger = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PublisherStatistics:
    """The publisher and each of its consumers."""

    current_offset: int
    images_published: int
    consumers: tuple[ConsumerStatistics, ...]
    consumer_faults: int
    """Consumer callbacks that raised, removed consumers included."""
    consumers_removed: int
    live_images: int
    """Images alive in this process (every holder and queue counts)."""

    def consumer(self, name: str) -> ConsumerStatistics:
        """The statistics of the consumer called ``name``; KeyError if there is none."""
        for stats in self.consumers:
            if stats.name == name:
                return stats
        raise KeyError(name)


# A late consumer's first delta (EMPTY -> image) is built once per image, kept while the
# image lives, and shared by every consumer that joins at that image.
def _build_full_delta(image: MetadataImage) -> MetadataDelta:
    delta = MetadataDelta.creating(image)
    delta.freeze()
    return delta


FULL_DELTA: DerivedKey[MetadataDelta] = DerivedKey("full-delta", _build_full_delta)


class MetadataPublisher(anyio.AsyncContextManagerMixin):
    """Fans each published image out to its consumers.

    ``async with MetadataPublisher() as publisher:`` owns one task per consumer; leaving
    the block stops them and releases every image the publisher or its queues held.
    """

    def __init__(self, name: str = "publisher") -> None:
        self.name = name
        self._holder = ImageHolder(f"{name}.current")
        self._subscriptions: dict[str, Subscription] = {}
        self._task_group: TaskGroup | None = None
        self._sequence = 0
        self._faults_of_removed = 0
        self._removed = 0

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[MetadataPublisher]:
        with single_cause():
            try:
                async with anyio.create_task_group() as task_group:
                    self._task_group = task_group
                    try:
                        yield self
                    finally:
                        task_group.cancel_scope.cancel()
            finally:
                self._task_group = None
                for subscription in list(self._subscriptions.values()):
                    subscription.remove()
                    subscription.drain()
                self._subscriptions.clear()
                self._holder.close()

    # consumers -------------------------------------------------------------------------

    def add_consumer(
        self,
        consumer: MetadataConsumer,
        mode: DeliveryMode = DeliveryMode.EVERY_DELTA,
        *,
        queue_size: int = 16,
        stall_timeout: float | None = None,
    ) -> Subscription:
        """Register a consumer; it first gets the current image (a delta from EMPTY in
        every-delta mode), then every later one."""
        if self._task_group is None:
            raise BrokerError("add consumers inside `async with publisher:`")
        if consumer.name in self._subscriptions:
            raise BrokerError(f"a consumer named {consumer.name!r} is already registered")
        subscription = Subscription(self, consumer, mode, queue_size, stall_timeout)
        self._subscriptions[consumer.name] = subscription
        if not subscription.immediate:
            self._task_group.start_soon(subscription.run, name=f"consumer:{consumer.name}")
        with self._holder.lease() as current:
            if current.offset >= 0:
                delivery = self._delivery(
                    subscription, current, None, LoadManifest.of_image(current)
                )
                if not subscription.offer_nowait(delivery):  # pragma: no cover - fresh queue
                    delivery.release()
        return subscription

    def remove_consumer(self, name: str, *, reason: str = "removed") -> None:
        """Stop feeding a consumer and release everything queued for it."""
        subscription = self._subscriptions.pop(name, None)
        if subscription is None:
            return
        self._removed += 1
        self._faults_of_removed += subscription.faults
        subscription.remove()
        logger.info("consumer_removed", consumer=name, reason=reason)

    @property
    def consumers(self) -> tuple[str, ...]:
        """Names of the registered consumers, in registration order."""
        return tuple(self._subscriptions)

    # publishing ------------------------------------------------------------------------

    @property
    def current_offset(self) -> int:
        """Offset of the newest published image (-1 before the first)."""
        return self._holder.offset

    def lease(self) -> Lease[MetadataImage]:
        """The newest published image, retained for the caller."""
        return self._holder.lease()

    async def wait_for_offset(self, offset: int) -> Lease[MetadataImage]:
        """Wait until an image at ``offset`` or later is published, and lease it."""
        return await self._holder.wait_for_offset(offset)

    def _delivery(
        self,
        subscription: Subscription,
        image: MetadataImage,
        delta: MetadataDelta | None,
        manifest: LoadManifest,
    ) -> _Delivery:
        """Retain for one consumer before handing over (all-or-nothing)."""
        if subscription.mode is DeliveryMode.LATEST_IMAGE:
            update = MetadataUpdate(image, None, manifest)
            leases = retain_all([image])
        else:
            if delta is None or not subscription.initialized:
                delta = image.derived(FULL_DELTA)
                if manifest.source == "log":
                    manifest = LoadManifest.of_image(image)
            update = MetadataUpdate(image, delta, manifest)
            leases = retain_all([delta.image, image])
        subscription.initialized = True
        return _Delivery(leases, update, self._sequence)

    async def publish(
        self, delta: MetadataDelta, image: MetadataImage, manifest: LoadManifest
    ) -> None:
        """Hand ``image`` (the result of ``delta``) to every consumer.

        The caller keeps its own reference. Waits only while an every-delta queue is
        full (back-pressure); cancellation releases whatever was not handed over.
        """
        delta.freeze()
        self._holder.set(image)
        self._sequence += 1
        waiting: list[tuple[Subscription, _Delivery]] = []
        try:
            for subscription in list(self._subscriptions.values()):
                delivery = self._delivery(subscription, image, delta, manifest)
                if not subscription.offer_nowait(delivery):
                    waiting.append((subscription, delivery))
            while waiting:
                subscription, delivery = waiting[0]
                del waiting[0]
                await subscription.offer(delivery)
        finally:
            for _, delivery in waiting:
                delivery.release()

    # introspection -----------------------------------------------------------------------

    def statistics(self) -> PublisherStatistics:
        """A snapshot of the publisher's and every consumer's counters."""
        subscriptions = list(self._subscriptions.values())
        current = self.current_offset
        return PublisherStatistics(
            current_offset=current,
            images_published=self._sequence,
            consumers=tuple(
                s.statistics(published=self._sequence, current_offset=current)
                for s in subscriptions
            ),
            consumer_faults=self._faults_of_removed + sum(s.faults for s in subscriptions),
            consumers_removed=self._removed,
            live_images=lifetime_statistics().live,
        )
