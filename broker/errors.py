"""The error tree: one root, a few subclasses that say what went wrong.

Every error carries the fields a user needs to find the cause (record type, offset,
image provenance, recorded sites) as attributes, and puts them in its message::

    BrokerError
    ├── ConfigurationError        an option or setting that cannot work
    ├── CorruptRecordError        bytes that should hold a batch do not decode
    ├── ReplayError               a record that cannot apply to the image
    ├── LoaderHaltedError         the loader stopped at a record (halt mode)
    ├── SnapshotRequiredError     the offset is older than the log keeps
    ├── LifetimeError             the ownership rules were broken
    │   ├── ReferenceCountError   retain of a dead image, release below zero
    │   └── ImageReleasedError    a read of a released image
    ├── HolderClosedError         an image holder used after close()
    ├── FetchTimeoutError         a stream fetch waited too long for a newer image
    ├── StreamFetchError          a stream fetch that can never succeed
    ├── WriterFencedError         another writer claimed the log
    ├── LogUnavailableError       the log's store did not answer in time
    ├── ListenError               a listener cannot open its address (also an OSError)
    └── ProtocolError             a Kafka client sent what cannot be answered
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BrokerError",
    "ConfigurationError",
    "CorruptRecordError",
    "FetchTimeoutError",
    "HolderClosedError",
    "ImageReleasedError",
    "LifetimeError",
    "ListenError",
    "LoaderHaltedError",
    "LogUnavailableError",
    "ProtocolError",
    "ReferenceCountError",
    "ReplayError",
    "SnapshotRequiredError",
    "StreamFetchError",
    "WriterFencedError",
]


class BrokerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigurationError(BrokerError):
    """An option or setting has a value that cannot work; the message names it."""


class CorruptRecordError(BrokerError):
    """Bytes that should hold a record batch do not decode.

    ``position`` is the byte position of the bad frame in its file or buffer,
    ``offset`` the log offset when it is known. ``truncated`` is true when the data
    simply ends inside a frame (a torn write at the tail of a log).
    """

    def __init__(
        self,
        reason: str,
        *,
        position: int | None = None,
        offset: int | None = None,
        source: str | None = None,
        truncated: bool = False,
    ) -> None:
        self.reason = reason
        self.truncated = truncated
        self.position = position
        self.offset = offset
        self.source = source
        where = []
        if source is not None:
            where.append(f"source={source}")
        if offset is not None:
            where.append(f"offset={offset}")
        if position is not None:
            where.append(f"position={position}")
        suffix = f" ({', '.join(where)})" if where else ""
        super().__init__(f"corrupt record batch: {reason}{suffix}")


class ReplayError(BrokerError):
    """A record cannot be applied to the image it was replayed onto.

    The delta it was replayed into is left exactly as it was before the record.
    """

    def __init__(self, record_type: str, reason: str, *, offset: int | None = None) -> None:
        self.record_type = record_type
        self.reason = reason
        self.offset = offset
        at = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"cannot replay {record_type}{at}: {reason}")


class SnapshotRequiredError(BrokerError):
    """The requested offset is older than the log keeps; load the newest snapshot."""

    def __init__(self, offset: int, log_start: int) -> None:
        self.offset = offset
        self.log_start = log_start
        super().__init__(
            f"offset {offset} is no longer in the log (it starts at {log_start}); "
            "load the newest snapshot and continue after it"
        )


class LoaderHaltedError(BrokerError):
    """The loader runs in halt mode and stopped at a record it could not replay."""

    def __init__(self, cause: ReplayError) -> None:
        self.cause = cause
        super().__init__(f"metadata loader halted: {cause}")


class LifetimeError(BrokerError):
    """Misuse of a reference-counted image: the ownership rules were broken."""

    def __init__(self, message: str, *, image: str, sites: Sequence[str] = ()) -> None:
        self.image = image
        self.sites = tuple(sites)
        if self.sites:
            message += "\nRecent access records:\n" + "\n".join(f"  {s}" for s in self.sites)
        super().__init__(message)


class HolderClosedError(BrokerError):
    """An image holder was used after ``close()``: it holds no image any more."""


class ReferenceCountError(LifetimeError):
    """Retain of a dead image or release below zero (Netty's IllegalReferenceCount)."""

    def __init__(
        self, *, image: str, ref_count: int, change: int, sites: Sequence[str] = ()
    ) -> None:
        self.ref_count = ref_count
        self.change = change
        verb = "increment" if change > 0 else "decrement"
        super().__init__(
            f"refCnt: {ref_count}, {verb}: {abs(change)} on {image}", image=image, sites=sites
        )


class ImageReleasedError(LifetimeError):
    """A released (dead) image was read; it never answers with stale data."""

    def __init__(self, *, image: str, what: str, sites: Sequence[str] = ()) -> None:
        self.what = what
        super().__init__(
            f"{image} was read ({what}) after its last reference was released",
            image=image,
            sites=sites,
        )


class FetchTimeoutError(BrokerError):
    """A stream fetch waited for a newer image longer than its timeout."""

    def __init__(
        self,
        *,
        stream_id: int,
        start_offset: int,
        end_offset: int,
        waited: float,
        image_offset: int,
    ) -> None:
        self.stream_id = stream_id
        self.start_offset = start_offset
        self.end_offset = end_offset
        self.waited = waited
        self.image_offset = image_offset
        super().__init__(
            f"fetch of stream {stream_id} [{start_offset}, {end_offset}) timed out after "
            f"{waited:.3f}s; newest image is at offset {image_offset} and does not hold it"
        )


class WriterFencedError(BrokerError):
    """Another writer claimed the log with a newer epoch: this writer may not append."""

    def __init__(self, epoch: int, current: int) -> None:
        self.epoch = epoch
        self.current = current
        super().__init__(f"writer epoch {epoch} was fenced: the log belongs to epoch {current} now")


class LogUnavailableError(BrokerError):
    """A record log's store (etcd) could not be reached before the deadline."""


class StreamFetchError(BrokerError):
    """A fetch that can never succeed: unknown stream, or data already trimmed."""

    def __init__(self, stream_id: int, reason: str) -> None:
        self.stream_id = stream_id
        self.reason = reason
        super().__init__(f"cannot fetch stream {stream_id}: {reason}")


class ListenError(BrokerError, OSError):
    """A listener cannot open its address (in use, not this machine's, not allowed)."""

    def __init__(self, host: str, port: int, reason: str, errno: int | None = None) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.errno = errno


class ProtocolError(BrokerError):
    """A Kafka client sent something the listener cannot answer: its connection closes."""
