"""The publisher: hands every new image to async consumers, each at its own pace.

Ownership (``automq-image-lifetime.md`` rules 1-3): the publisher retains the image once
per consumer *before* handing it over; the consumer's runner releases that reference
when the consumer's callback returns (a consumer that keeps the image retains it itself,
e.g. with an ImageHolder). Every-delta deliveries also lease the delta's base image, so
a consumer can read both sides of the change; both leases are taken all-or-nothing.

Two delivery modes:

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

import enum
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import anyio
import structlog
from anyio.abc import TaskGroup

from broker.errors import BrokerError
from broker.metadata._delta import MetadataDelta
from broker.metadata._holder import ImageHolder
from broker.metadata._image import MetadataImage, Provenance
from broker.metadata._refcount import (
    DerivedKey,
    Lease,
    lifetime_statistics,
    release_all,
    retain_all,
)
from broker.metadata._tasks import single_cause

__all__ = [
    "ConsumerStatistics",
    "DeliveryMode",
    "LoadManifest",
    "MetadataConsumer",
    "MetadataPublisher",
    "MetadataUpdate",
    "PublisherStatistics",
    "Subscription",
]

logger = structlog.get_logger(__name__)


class DeliveryMode(enum.Enum):
    EVERY_DELTA = "every-delta"
    LATEST_IMAGE = "latest-image"


@dataclass(frozen=True, slots=True)
class LoadManifest:
    """How an image was loaded."""

    source: str
    """``log`` (batches of the log), ``snapshot``, or ``image`` (a catch-up delta from
    EMPTY built for a consumer that joined late)."""
    provenance: Provenance
    base_offset: int
    """First offset the image's delta covers (-1 when it covers none)."""
    batches: int
    records: int
    bytes: int | None
    """Encoded size of the batches, when the source knows it."""
    elapsed: float
    """Seconds spent replaying and applying."""
    replay_errors: int = 0
    """Records of this group that failed to replay and were skipped."""


@dataclass(frozen=True, slots=True)
class MetadataUpdate:
    """What a consumer receives. ``image`` (and ``delta.image``) are leased for the
    duration of the callback; retain what you keep."""

    image: MetadataImage
    delta: MetadataDelta | None
    """The change from the consumer's previous image; ``None`` in latest-image mode."""
    manifest: LoadManifest
    coalesced: int = 0
    """Images released unseen since the previous update (latest-image mode)."""


@runtime_checkable
class MetadataConsumer(Protocol):
    @property
    def name(self) -> str: ...

    async def on_metadata_update(self, update: MetadataUpdate) -> None: ...


@dataclass(frozen=True, slots=True)
class ConsumerStatistics:
    name: str
    mode: DeliveryMode
    images_delivered: int
    last_offset: int
    """Offset of the newest image whose callback completed (-1: none yet)."""
    lag_images: int
    """Images published that this consumer has not processed yet."""
    lag_offset: int
    """Publisher's offset minus this consumer's."""
    queued: int
    coalesced: int
    faults: int
    stalls: int
    stalled_seconds: float


@dataclass(frozen=True, slots=True)
class PublisherStatistics:
    current_offset: int
    images_published: int
    consumers: tuple[ConsumerStatistics, ...]
    consumer_faults: int
    consumers_removed: int
    live_images: int

    def consumer(self, name: str) -> ConsumerStatistics:
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


class _Delivery:
    __slots__ = ("leases", "sequence", "update")

    def __init__(
        self, leases: list[Lease[MetadataImage]], update: MetadataUpdate, sequence: int
    ) -> None:
        self.leases = leases
        self.update = update
        self.sequence = sequence

    def release(self) -> None:
        release_all(self.leases)


class Subscription:
    """A consumer registered with the publisher, and the task that feeds it."""

    def __init__(
        self,
        publisher: MetadataPublisher,
        consumer: MetadataConsumer,
        mode: DeliveryMode,
        queue_size: int,
        stall_timeout: float | None,
    ) -> None:
        if queue_size < 1:
            raise BrokerError(f"queue_size must be at least 1, got {queue_size}")
        self.consumer = consumer
        self.name = consumer.name
        self.mode = mode
        self.stall_timeout = stall_timeout
        self._publisher = publisher
        self._send, self._receive = anyio.create_memory_object_stream[_Delivery](
            queue_size if mode is DeliveryMode.EVERY_DELTA else 0
        )
        self._pending: _Delivery | None = None
        self._wake = anyio.Event()
        self._scope = anyio.CancelScope()
        self.initialized = False
        self.removed = False
        self.images_delivered = 0
        self.last_offset = -1
        self.last_sequence = 0
        self.coalesced = 0
        self.faults = 0
        self.stalls = 0
        self.stalled_seconds = 0.0
        self._coalesced_since = 0

    def __repr__(self) -> str:
        return f"<Subscription {self.name!r} {self.mode.value}>"

    # the publisher's side -------------------------------------------------------------

    def offer_nowait(self, delivery: _Delivery) -> bool:
        """Hand over without waiting; False if an every-delta queue is full."""
        if self.mode is DeliveryMode.LATEST_IMAGE:
            replaced, self._pending = self._pending, delivery
            if replaced is not None:
                replaced.release()
                self.coalesced += 1
                self._coalesced_since += 1
            self._wake.set()
            return True
        try:
            self._send.send_nowait(delivery)
        except anyio.WouldBlock:
            return False
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            delivery.release()  # removed meanwhile
        return True

    async def offer(self, delivery: _Delivery) -> None:
        """Hand over an every-delta delivery, waiting for room (back-pressure)."""
        self.stalls += 1
        logger.warning(
            "consumer_stalled",
            consumer=self.name,
            offset=delivery.update.image.offset,
            queued=self._send.statistics().current_buffer_used,
            stall_timeout=self.stall_timeout,
        )
        started = time.monotonic()
        handed_over = False
        try:
            with anyio.fail_after(self.stall_timeout):
                await self._send.send(delivery)
            handed_over = True
        except TimeoutError:
            self.faults += 1
            self._publisher.remove_consumer(self.name, reason="stalled longer than stall_timeout")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # removed while we waited
        finally:
            self.stalled_seconds += time.monotonic() - started
            if not handed_over:
                delivery.release()

    def remove(self) -> None:
        self.removed = True
        self._scope.cancel()
        self._send.close()

    # the consumer's side --------------------------------------------------------------

    async def _next(self) -> _Delivery:
        if self.mode is DeliveryMode.EVERY_DELTA:
            # Take what is queued without a checkpoint per item (anyio's receive() yields
            # every time): a consumer behind by n images catches up in one turn.
            try:
                return self._receive.receive_nowait()
            except anyio.WouldBlock:
                return await self._receive.receive()
        while self._pending is None:
            self._wake = anyio.Event()
            await self._wake.wait()
        delivery, self._pending = self._pending, None
        return delivery

    async def run(self) -> None:
        with self._scope:
            try:
                while True:
                    delivery = await self._next()
                    try:
                        await self._deliver(delivery)
                    finally:
                        delivery.release()
            except anyio.EndOfStream:
                pass
            finally:
                self._drain()

    async def _deliver(self, delivery: _Delivery) -> None:
        update = delivery.update
        if self._coalesced_since:
            update = MetadataUpdate(update.image, None, update.manifest, self._coalesced_since)
            self._coalesced_since = 0
        try:
            await self.consumer.on_metadata_update(update)
        except Exception as exc:  # a faulty consumer is reported, never fatal to others
            self.faults += 1
            self._publisher._faults += 1
            logger.error(
                "consumer_fault",
                consumer=self.name,
                offset=update.image.offset,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
        self.images_delivered += 1
        self.last_offset = update.image.offset
        self.last_sequence = delivery.sequence

    def _drain(self) -> None:
        """Release everything queued for this consumer (on removal and shutdown)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.release()
        while True:
            try:
                self._receive.receive_nowait().release()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self._receive.close()  # a publisher still waiting to send gets BrokenResourceError

    def statistics(self) -> ConsumerStatistics:
        publisher = self._publisher
        return ConsumerStatistics(
            name=self.name,
            mode=self.mode,
            images_delivered=self.images_delivered,
            last_offset=self.last_offset,
            lag_images=max(0, publisher._sequence - self.last_sequence),
            lag_offset=max(0, publisher.current_offset - self.last_offset),
            queued=self._send.statistics().current_buffer_used + (self._pending is not None),
            coalesced=self.coalesced,
            faults=self.faults,
            stalls=self.stalls,
            stalled_seconds=self.stalled_seconds,
        )


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
        self._faults = 0
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
                    subscription._drain()
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
        self._task_group.start_soon(subscription.run, name=f"consumer:{consumer.name}")
        with self._holder.lease() as current:
            if current.offset >= 0:
                delivery = self._delivery(subscription, current, None, self._manifest_for(current))
                if not subscription.offer_nowait(delivery):  # pragma: no cover - fresh queue
                    delivery.release()
        return subscription

    def remove_consumer(self, name: str, *, reason: str = "removed") -> None:
        """Stop feeding a consumer and release everything queued for it."""
        subscription = self._subscriptions.pop(name, None)
        if subscription is None:
            return
        self._removed += 1
        subscription.remove()
        logger.info("consumer_removed", consumer=name, reason=reason)

    @property
    def consumers(self) -> tuple[str, ...]:
        return tuple(self._subscriptions)

    # publishing ------------------------------------------------------------------------

    @property
    def current_offset(self) -> int:
        return self._holder.offset

    def lease(self) -> Lease[MetadataImage]:
        """The newest published image, retained for the caller."""
        return self._holder.lease()

    async def wait_for_offset(self, offset: int) -> Lease[MetadataImage]:
        """Wait until an image at ``offset`` or later is published, and lease it."""
        return await self._holder.wait_lease(offset)

    def _manifest_for(self, image: MetadataImage) -> LoadManifest:
        return LoadManifest("image", image.provenance, -1, 0, 0, None, 0.0)

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
                    manifest = self._manifest_for(image)
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
        return PublisherStatistics(
            current_offset=self.current_offset,
            images_published=self._sequence,
            consumers=tuple(s.statistics() for s in self._subscriptions.values()),
            consumer_faults=self._faults,
            consumers_removed=self._removed,
            live_images=lifetime_statistics().live,
        )
