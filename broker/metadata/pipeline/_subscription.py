"""One consumer registered with a publisher, and the task that feeds it.

Ownership: every delivery carries the leases the publisher took for this consumer
before handing over; the subscription releases them when the consumer's callback
returns, when a newer image replaces an unseen one (latest-image), or when the
subscription is removed with deliveries still queued.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import anyio

from broker._histogram import HistogramSnapshot, LatencyHistogram
from broker._logging import get_logger
from broker.errors import ConfigurationError
from broker.metadata import Lease, MetadataImage, release_all
from broker.metadata.pipeline._updates import (
    DeliveryMode,
    ImmediateConsumer,
    MetadataConsumer,
    MetadataUpdate,
)

__all__ = ["ConsumerStatistics", "Subscription"]

logger = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumerStatistics:
    """One consumer's progress, as its publisher sees it."""

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
    """Images released unseen because a newer one arrived first (latest-image)."""
    faults: int
    """Callbacks that raised (each reported, none fatal)."""
    stalls: int
    """Times the publisher waited for room in this consumer's queue (every-delta)."""
    stalled_seconds: float
    publish_latency: HistogramSnapshot
    """Seconds from an image's publication to the end of this consumer's callback."""


class _Delivery:
    """An update and the leases taken for it, released exactly once."""

    __slots__ = ("leases", "published", "sequence", "update")

    def __init__(
        self, leases: list[Lease[MetadataImage]], update: MetadataUpdate, sequence: int
    ) -> None:
        self.leases = leases
        self.update = update
        self.sequence = sequence
        self.published = time.perf_counter()

    def release(self) -> None:
        release_all(self.leases)


class _Owner(Protocol):
    """What a subscription needs from its publisher."""

    def remove_consumer(self, name: str, *, reason: str = "removed") -> None: ...


class Subscription:
    """A consumer registered with the publisher, and the task that feeds it."""

    def __init__(
        self,
        owner: _Owner,
        consumer: MetadataConsumer,
        mode: DeliveryMode,
        queue_size: int,
        stall_timeout: float | None,
    ) -> None:
        if queue_size < 1:
            raise ConfigurationError(f"queue_size must be at least 1, got {queue_size}")
        self.consumer = consumer
        self.name = consumer.name
        self.mode = mode
        self.stall_timeout = stall_timeout
        self._owner = owner
        self._send, self._receive = anyio.create_memory_object_stream[_Delivery](
            queue_size if mode is DeliveryMode.EVERY_DELTA else 0
        )
        self._pending: _Delivery | None = None
        self.immediate = mode is DeliveryMode.LATEST_IMAGE and isinstance(
            consumer, ImmediateConsumer
        )
        """A latest-image consumer with a synchronous ``on_metadata_update_nowait``: it is
        handed each image at once, in the publisher's call, and needs no task."""
        self._wake = anyio.Event()
        self._scope = anyio.CancelScope()
        self.initialized = False
        """Whether the consumer was handed its first image (a delta from EMPTY)."""
        self.removed = False
        self.images_delivered = 0
        self.last_offset = -1
        self.last_sequence = 0
        self.coalesced = 0
        self.faults = 0
        self.stalls = 0
        self.stalled_seconds = 0.0
        self.publish_latency = LatencyHistogram()
        self._coalesced_since = 0

    def __repr__(self) -> str:
        return f"<Subscription {self.name!r} {self.mode.value}>"

    # the publisher's side -------------------------------------------------------------

    def offer_nowait(self, delivery: _Delivery) -> bool:
        """Hand over without waiting; False if an every-delta queue is full."""
        if self.immediate:
            try:
                self._deliver_now(delivery)
            finally:
                delivery.release()
            return True
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
            self._owner.remove_consumer(self.name, reason="stalled longer than stall_timeout")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # removed while we waited
        finally:
            self.stalled_seconds += time.monotonic() - started
            if not handed_over:
                delivery.release()

    def remove(self) -> None:
        """Stop the consumer's task; what is still queued is released by :meth:`drain`."""
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
        """Feed the consumer until removed (the publisher's task group runs this)."""
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
                self.drain()

    async def _deliver(self, delivery: _Delivery) -> None:
        update = delivery.update
        if self._coalesced_since:
            update = MetadataUpdate(update.image, None, update.manifest, self._coalesced_since)
            self._coalesced_since = 0
        try:
            await self.consumer.on_metadata_update(update)
        except Exception as exc:  # a faulty consumer is reported, never fatal to others
            self._fault(update, exc)
        self._delivered(update, delivery)

    def _deliver_now(self, delivery: _Delivery) -> None:
        update = delivery.update
        assert isinstance(self.consumer, ImmediateConsumer)
        try:
            self.consumer.on_metadata_update_nowait(update)
        except Exception as exc:  # a faulty consumer is reported, never fatal to others
            self._fault(update, exc)
        self._delivered(update, delivery)

    def _fault(self, update: MetadataUpdate, exc: Exception) -> None:
        self.faults += 1
        logger.error(
            "consumer_fault",
            consumer=self.name,
            offset=update.image.offset,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )

    def _delivered(self, update: MetadataUpdate, delivery: _Delivery) -> None:
        self.images_delivered += 1
        self.last_offset = update.image.offset
        self.last_sequence = delivery.sequence
        self.publish_latency.observe(time.perf_counter() - delivery.published)

    def drain(self) -> None:
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

    def statistics(self, *, published: int, current_offset: int) -> ConsumerStatistics:
        """Progress against the publisher's ``published`` images and ``current_offset``."""
        return ConsumerStatistics(
            name=self.name,
            mode=self.mode,
            images_delivered=self.images_delivered,
            last_offset=self.last_offset,
            lag_images=max(0, published - self.last_sequence),
            lag_offset=max(0, current_offset - self.last_offset),
            queued=self._send.statistics().current_buffer_used + (self._pending is not None),
            coalesced=self.coalesced,
            faults=self.faults,
            stalls=self.stalls,
            stalled_seconds=self.stalled_seconds,
            publish_latency=self.publish_latency.snapshot(),
        )
