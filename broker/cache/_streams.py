"""The stream metadata manager: where is the data of stream S at offsets [a, b)?

An every-delta consumer that keeps its own reference to the newest image (retain new,
swap, release old; images whose offset did not change are skipped, as AutoMQ does).
``await fetch(...)`` answers from that image. A fetch that needs data newer than the
image is parked and retried on each new image, holding no image while it waits (AutoMQ
#252 deadlocked when the publisher blocked on such a fetch; here the publisher never
waits for a fetch, and a fetch never pins an image).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio

from broker._tasks import Notifier
from broker.errors import BrokerError, FetchTimeoutError, StreamFetchError
from broker.metadata import MetadataImage, Provenance, RangeMetadata, StreamObject
from broker.metadata.pipeline import HoldingConsumer, MetadataUpdate

__all__ = ["FetchResult", "StreamManagerStatistics", "StreamMetadataManager"]


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Where the data of a fetched stream range is, from one image."""

    stream_id: int
    start_offset: int
    end_offset: int
    objects: tuple[StreamObject, ...]
    """Objects holding the data, in offset order."""
    ranges: tuple[RangeMetadata, ...]
    """Ranges overlapping the request (which node wrote which part)."""
    provenance: Provenance
    """The image the answer came from."""


@dataclass(frozen=True, slots=True)
class StreamManagerStatistics:
    """The stream metadata manager's counters."""

    offset: int
    images: int
    skipped: int
    fetches: int
    parked: int
    """Fetches waiting for a newer image right now."""
    woken: int
    timeouts: int


class StreamMetadataManager(HoldingConsumer):
    """Answers stream fetches from its own current image."""

    def __init__(self, *, fetch_timeout: float = 30.0, name: str = "stream-metadata") -> None:
        super().__init__(name)
        self.fetch_timeout = fetch_timeout
        self._new_image = Notifier()
        self._parked: set[object] = set()
        self._images = 0
        self._skipped = 0
        self._fetches = 0
        self._woken = 0
        self._timeouts = 0

    def on_metadata_update_nowait(self, update: MetadataUpdate) -> None:
        """Hold the new image (unless its offset did not move) and wake parked fetches."""
        if update.image.offset == self._holder.offset:
            self._skipped += 1
            return
        self._holder.set(update.image)
        self._images += 1
        self._new_image.notify()

    def _lookup(
        self, image: MetadataImage, stream_id: int, start: int, end: int
    ) -> FetchResult | None:
        stream = image.streams.streams.get(stream_id)
        if stream is None:
            raise StreamFetchError(
                stream_id, f"no such stream in the image at offset {image.offset}"
            )
        if start < stream.start_offset:
            raise StreamFetchError(
                stream_id,
                f"offset {start} was trimmed (the stream starts at {stream.start_offset})",
            )
        objects = stream.objects_overlapping(start, end)
        covered = max((o.end_offset for o in objects), default=start)
        if covered < end:
            return None  # not committed yet in this image
        return FetchResult(
            stream_id,
            start,
            end,
            tuple(objects),
            tuple(stream.ranges_overlapping(start, end)),
            image.provenance,
        )

    async def fetch(self, stream_id: int, start_offset: int, end_offset: int) -> FetchResult:
        """Where the data of ``[start_offset, end_offset)`` is, waiting for a newer image
        while the current one does not hold it yet (up to ``fetch_timeout`` seconds)."""
        if end_offset <= start_offset:
            raise BrokerError(f"empty fetch range [{start_offset}, {end_offset})")
        self._fetches += 1
        started = time.monotonic()
        ticket = object()
        try:
            with anyio.fail_after(self.fetch_timeout):
                while True:
                    if self._holder.offset >= 0:
                        with self._holder.lease() as image:
                            result = self._lookup(image, stream_id, start_offset, end_offset)
                        if result is not None:
                            return result
                    self._parked.add(ticket)  # parked: holding no image
                    await self._new_image.wait()
                    self._parked.discard(ticket)
                    self._woken += 1
        except TimeoutError:
            self._timeouts += 1
            raise FetchTimeoutError(
                stream_id=stream_id,
                start_offset=start_offset,
                end_offset=end_offset,
                waited=time.monotonic() - started,
                image_offset=self._holder.offset,
            ) from None
        finally:
            self._parked.discard(ticket)

    def statistics(self) -> StreamManagerStatistics:
        """The manager's counters now: images seen, fetches, and fetches waiting."""
        return StreamManagerStatistics(
            offset=self._holder.offset,
            images=self._images,
            skipped=self._skipped,
            fetches=self._fetches,
            parked=len(self._parked),
            woken=self._woken,
            timeouts=self._timeouts,
        )
