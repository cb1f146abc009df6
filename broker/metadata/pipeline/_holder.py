"""The holder of "the current image": the pattern every consumer and the cache use.

AutoMQ's fix for ``refCnt: 0, increment: 1`` (#2089) in one object: ``set(new)`` retains
the new image, swaps it in under a lock, then releases the old one; ``lease()`` reads
the current image and retains it in one atomic step, so a reader can never retain an
image that a concurrent ``set`` already released. Safe from event-loop tasks and from
worker threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Self

import anyio
from anyio.lowlevel import EventLoopToken, current_token

from broker.errors import HolderClosedError
from broker.metadata import Lease, MetadataImage
from broker.metadata.pipeline._updates import MetadataUpdate

__all__ = ["HoldingConsumer", "ImageHolder"]

# Sites recorded for leak reports point past this module, at the holder's caller.
_LIFETIME_INTERNAL = True


@dataclass(eq=False)
class _Waiter:
    min_offset: int
    event: anyio.Event
    token: EventLoopToken
    thread: int = field(default_factory=threading.get_ident)

    def wake(self) -> None:
        if threading.get_ident() == self.thread:
            self.event.set()
        else:  # set() ran in a worker thread: hand the wake-up to the waiter's loop
            anyio.from_thread.run_sync(self.event.set, token=self.token)


class ImageHolder:
    """Holds one reference to the current image on behalf of its owner."""

    def __init__(self, name: str = "image") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._image = MetadataImage.EMPTY
        self._closed = False
        self._waiters: list[_Waiter] = []
        self.swaps = 0
        """How many images ``set`` installed."""

    def __repr__(self) -> str:
        return f"<ImageHolder {self.name!r} {self._image.describe()}>"

    @property
    def offset(self) -> int:
        """Offset of the held image (-1 while it is EMPTY); needs no lease."""
        return self._image.offset

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called: the holder then holds no image."""
        return self._closed

    def set(self, image: MetadataImage) -> None:
        """Hold ``image`` from now on: retain it, swap it in, release the old one.

        The caller keeps its own reference. Retaining a dead image raises
        ReferenceCountError before anything changes.
        """
        image.retain()
        with self._lock:
            if self._closed:
                image.release()
                raise HolderClosedError(f"holder {self.name!r} is closed")
            old, self._image = self._image, image
            self.swaps += 1
            ready = [w for w in self._waiters if image.offset >= w.min_offset]
            if ready:
                self._waiters = [w for w in self._waiters if w not in ready]
        try:
            old.release()
        finally:
            for waiter in ready:
                waiter.wake()

    def lease(self) -> Lease[MetadataImage]:
        """Retain the current image and hand it out: ``with holder.lease() as image:``."""
        with self._lock:
            if self._closed:
                raise HolderClosedError(f"holder {self.name!r} is closed")
            image = self._image
            # Under the lock: a concurrent set() cannot release it between read and retain.
            image.retain()
        return Lease(image)

    async def wait_for_offset(self, min_offset: int) -> Lease[MetadataImage]:
        """Wait until the held image reaches ``min_offset``, then lease it.

        ``with await holder.wait_for_offset(n) as image:``. Holds no image while it
        waits; cancelled (e.g. by ``anyio.fail_after``), it retains nothing.
        """
        while True:
            with self._lock:
                if self._closed:
                    raise HolderClosedError(f"holder {self.name!r} is closed")
                if self._image.offset >= min_offset:
                    image = self._image
                    image.retain()
                    return Lease(image)
                waiter = _Waiter(min_offset, anyio.Event(), current_token())
                self._waiters.append(waiter)
            try:
                await waiter.event.wait()
            finally:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def close(self) -> None:
        """Release the held image and refuse further use; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            old, self._image = self._image, MetadataImage.EMPTY
            waiters, self._waiters = self._waiters, []
        try:
            old.release()
        finally:
            for waiter in waiters:
                waiter.wake()

    def __enter__(self) -> ImageHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HoldingConsumer:
    """A consumer that keeps the newest image it was given in its own holder.

    The base of the metadata cache, the stream metadata manager and the failover
    monitor: each takes its own reference on hand-off (AutoMQ #2089/#2882) and every
    read leases from it.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._holder = ImageHolder(name)

    @property
    def name(self) -> str:
        """The consumer's name in events and statistics."""
        return self._name

    @property
    def offset(self) -> int:
        """Offset of the held image (-1 before the first one)."""
        return self._holder.offset

    def on_metadata_update_nowait(self, update: MetadataUpdate) -> None:
        """Hold the new image (retain new, swap, release old): a constant-time swap, so a
        latest-image publisher hands it over at once (see ImmediateConsumer)."""
        self._holder.set(update.image)

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        """The same as :meth:`on_metadata_update_nowait` (every-delta delivery)."""
        self.on_metadata_update_nowait(update)

    def lease(self) -> Lease[MetadataImage]:
        """The held image, retained for the caller: ``with consumer.lease() as image:``."""
        return self._holder.lease()

    async def wait_for_offset(self, offset: int) -> Lease[MetadataImage]:
        """Wait until the held image reaches ``offset``, then lease it."""
        return await self._holder.wait_for_offset(offset)

    def close(self) -> None:
        """Release the held image; idempotent."""
        self._holder.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
