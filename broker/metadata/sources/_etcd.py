"""A metadata log on etcd: many brokers follow one replicated log.

We do not write our own consensus: etcd (Raft) stores the log. Under a key prefix::

    head                      next offset | writer epoch | log start   (3 x int64)
    log/<base offset, 20 d>   one batch frame (the batch codec: length, CRC32C, records)
    snapshots/<offset, 20 d>/manifest, snapshots/<offset>/<chunk, 6 d>

Offsets are an explicit counter in ``head``, advanced by the same transaction that
writes the batch. A writer first *claims* the log (epoch + 1); every append compares
the whole head, so two writers can never interleave or fork the log, and a stale
writer's append is refused with WriterFencedError (fencing by epoch).

Followers read batches by key range and wait with an etcd watch from the revision of
their last read, so no append is missed. When etcd is unreachable the source reports
the outage once, retries with backoff and resumes from its offset when etcd returns:
the loader simply waits, keeping its last good image live, and nothing is replayed
twice or skipped. Log truncated below a snapshot (or etcd history compacted) sends a
lagging follower to the newest snapshot (SnapshotRequiredError, handled by the loader).

Client: aetcd (async, on grpc's asyncio API), chosen over etcetra (pins grpcio 1.62 and
protobuf 4) and python-etcd3 (synchronous, unmaintained).
"""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import anyio
import anyio.lowlevel
from grpc import aio as grpc_aio

from broker._logging import get_logger
from broker._tasks import single_cause
from broker.errors import (
    BrokerError,
    CorruptRecordError,
    LogUnavailableError,
    SnapshotRequiredError,
    WriterFencedError,
)
from broker.metadata import MetadataImage
from broker.metadata.records import MetadataRecord, RecordBatch, decode_batch, encode_batch
from broker.metadata.sources._etcd_url import parse_etcd_url
from broker.metadata.sources._source import (
    Snapshot,
    SnapshotEncoder,
    SnapshotInfo,
    next_batch,
    take_batches,
)

__all__ = ["EtcdLogStatistics", "EtcdRecordLog"]

logger = get_logger(__name__)

T = TypeVar("T")
_HEAD = struct.Struct(">qqq")
SNAPSHOT_CHUNK_BYTES = 1024 * 1024
SNAPSHOTS_KEPT = 2


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


_TRANSIENT = (
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
    aetcd.exceptions.InternalError,
    grpc_aio.AioRpcError,
    OSError,
)


async def _recognise_cancellation() -> None:
    """grpc raises a *new* CancelledError for a call it cancelled, without the message
    anyio marks its own cancellations with, so anyio's cancel scope would not catch it.
    A checkpoint re-raises the cancellation through anyio when our scope was cancelled;
    otherwise the caller re-raises the original (a cancellation from elsewhere)."""
    await anyio.lowlevel.checkpoint()


@dataclass(frozen=True, slots=True)
class _Head:
    next_offset: int
    epoch: int
    log_start: int

    def encode(self) -> bytes:
        return _HEAD.pack(self.next_offset, self.epoch, self.log_start)

    @classmethod
    def decode(cls, value: bytes) -> _Head:
        if len(value) != _HEAD.size:
            raise CorruptRecordError(f"etcd log head of {len(value)} bytes, expected {_HEAD.size}")
        return cls(*_HEAD.unpack(value))


@dataclass(frozen=True, slots=True)
class EtcdLogStatistics:
    """The etcd log's counters and state."""

    appends: int
    reads: int
    outages: int
    """Times etcd became unreachable."""
    unavailable: bool
    """Whether it is unreachable right now."""
    epoch: int | None
    """The epoch this process writes with (None: a follower)."""


class EtcdRecordLog(anyio.AsyncContextManagerMixin):
    """A RecordLog stored in etcd. ``async with EtcdRecordLog(url) as log:``"""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        open_timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.host, self.port, prefix = parse_etcd_url(url)
        self.open_timeout = open_timeout
        """Seconds opening may wait for etcd before it fails with LogUnavailableError
        (once open, an outage is waited out: appends and reads retry)."""
        self._prefix = prefix.encode()
        self._head_key = self._prefix + b"head"
        self._log_prefix = self._prefix + b"log/"
        self._snapshot_prefix = self._prefix + b"snapshots/"
        self._name = name or f"etcd://{self.host}:{self.port}{prefix}"
        self._client = aetcd.Client(host=self.host, port=self.port, timeout=int(max(timeout, 1)))
        self._epoch: int | None = None
        self._next_offset = 0
        self._unavailable_since: float | None = None
        self._appends = 0
        self._reads = 0
        self._snapshot_encoder = SnapshotEncoder()  # reuses unchanged pieces
        self._outages = 0
        self._last_error = ""

    @property
    def name(self) -> str:
        """The log's name in events and errors (its endpoint and prefix)."""
        return self._name

    @property
    def epoch(self) -> int | None:
        """The epoch this process writes with (None: a follower)."""
        return self._epoch

    @property
    def next_offset(self) -> int:
        """The next offset as this process last saw it."""
        return self._next_offset

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[EtcdRecordLog]:
        with single_cause():
            try:
                with anyio.move_on_after(self.open_timeout) as opening:
                    head = await self._retrying("open", self._head, report=False)
                    self._next_offset = head.next_offset
                if opening.cancelled_caught:
                    raise LogUnavailableError(
                        f"etcd at {self.host}:{self.port} did not answer within "
                        f"{self.open_timeout:g}s ({self._last_error or 'no answer'})"
                    )
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self._client.close()

    # resilience ------------------------------------------------------------------------

    async def _retrying(
        self, what: str, operation: Callable[[], Awaitable[T]], *, report: bool = True
    ) -> T:
        """Run ``operation`` until etcd answers; report an outage once, and its end
        (unless not ``report``: opening fails with the outage as its error instead)."""
        delay = 0.05
        while True:
            try:
                result = await operation()
            except anyio.get_cancelled_exc_class():
                await _recognise_cancellation()
                raise
            except _TRANSIENT as error:
                self._last_error = _one_line(error)
                if self._unavailable_since is None:
                    self._unavailable_since = time.monotonic()
                    self._outages += 1
                    if report:
                        logger.warning(
                            "etcd_unavailable", log=self.name, operation=what, error=str(error)
                        )
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if self._unavailable_since is not None:
                down = time.monotonic() - self._unavailable_since
                self._unavailable_since = None
                if report:
                    logger.warning(
                        "etcd_recovered", log=self.name, operation=what, seconds=round(down, 3)
                    )
            return result

    # head ------------------------------------------------------------------------------

    async def _head(self) -> _Head:
        found = await self._client.get(self._head_key)
        head = _Head.decode(found.value) if found is not None else _Head(0, 0, 0)
        self._next_offset = head.next_offset
        return head

    async def _swap_head(self, current: _Head, new: _Head, *extra: object) -> bool:
        """Replace the head (and do ``extra`` operations) only if it is still ``current``."""
        t = self._client.transactions
        if current == _Head(0, 0, 0):
            compare = [t.version(self._head_key) == 0]
        else:
            compare = [t.value(self._head_key) == current.encode()]
        succeeded, _ = await self._client.transaction(
            compare=compare, success=[*extra, t.put(self._head_key, new.encode())], failure=[]
        )
        return bool(succeeded)

    async def high_water_mark(self) -> int:
        """Offset after the last committed record (0 for an empty log)."""
        return (await self._retrying("high_water_mark", self._head)).next_offset

    # writing ---------------------------------------------------------------------------

    async def claim(self) -> int:
        """Become the writer: take the next epoch, fencing every earlier writer."""

        async def claim_once() -> int | None:
            head = await self._head()
            new = _Head(head.next_offset, head.epoch + 1, head.log_start)
            return new.epoch if await self._swap_head(head, new) else None

        while (epoch := await self._retrying("claim", claim_once)) is None:
            pass  # raced with another claim or append: read the head again
        self._epoch = epoch
        logger.info("etcd_writer_claimed", log=self.name, epoch=epoch)
        return epoch

    def _log_key(self, offset: int) -> bytes:
        return self._log_prefix + b"%020d" % offset

    async def append(
        self,
        records: Sequence[MetadataRecord],
        *,
        epoch: int = 1,
        append_time_ms: int | None = None,
    ) -> RecordBatch:
        """Append records at the head; ``epoch`` is ignored (the writer's epoch is used)."""
        if self._epoch is None:
            await self.claim()
        assert self._epoch is not None
        return await self._append(
            lambda head: next_batch(head.next_offset, records, self._epoch or 0, append_time_ms)
        )

    async def append_batch(self, batch: RecordBatch) -> None:
        """Append a batch built elsewhere; its base offset must be the head's next offset."""
        if self._epoch is None:
            await self.claim()
        await self._append(lambda head: batch)

    async def append_batches(self, batches: Sequence[RecordBatch]) -> None:
        """Append consecutive batches, in order (one transaction each: every one checks
        the head, so a fenced writer stops at the first)."""
        for batch in batches:
            await self.append_batch(batch)

    async def _append(self, make: Callable[[_Head], RecordBatch]) -> RecordBatch:
        epoch = self._epoch
        assert epoch is not None

        async def append_once() -> RecordBatch | None:
            head = await self._head()
            if head.epoch != epoch:
                raise WriterFencedError(epoch, head.epoch)
            batch = make(head)
            if batch.base_offset != head.next_offset:
                # A retry after a lost answer: the batch may already be in the log.
                if head.next_offset == batch.next_offset and await self._holds(batch):
                    return batch
                raise BrokerError(
                    f"{self.name}: batch offset {batch.base_offset} "
                    f"is not the next offset {head.next_offset}"
                )
            frame = encode_batch(batch)
            new = _Head(batch.next_offset, epoch, head.log_start)
            put = self._client.transactions.put(self._log_key(batch.base_offset), frame)
            return batch if await self._swap_head(head, new, put) else None

        while (batch := await self._retrying("append", append_once)) is None:
            pass  # the head moved under us (a claim fences us on the next attempt)
        self._next_offset = batch.next_offset
        self._appends += 1
        return batch

    async def _holds(self, batch: RecordBatch) -> bool:
        found = await self._client.get(self._log_key(batch.base_offset))
        return found is not None and found.value == encode_batch(batch)

    # reading ---------------------------------------------------------------------------

    async def read(self, start_offset: int, max_records: int) -> list[RecordBatch]:
        """Batches from ``start_offset`` on that are committed (waits on a watch while
        there are none), up to ``max_records`` records; SnapshotRequiredError below the log
        start."""
        while True:
            head, batches, revision = await self._retrying(
                "read", lambda: self._range(start_offset, max_records)
            )
            if start_offset < head.log_start:
                raise SnapshotRequiredError(start_offset, head.log_start)
            if batches:
                self._reads += 1
                return batches
            await self._wait_for_append(revision)

    async def _range(
        self, start_offset: int, max_records: int
    ) -> tuple[_Head, list[RecordBatch], int]:
        head = await self._head()
        if start_offset >= head.next_offset or start_offset < head.log_start:
            return head, [], 0
        # Every batch holds at least one record: max_records offsets hold enough batches.
        end = min(head.next_offset, start_offset + max_records)
        found = await self._client.get_range(self._log_key(start_offset), self._log_key(end))
        batches = take_batches(self._decoded(found, start_offset), max_records)
        return head, batches, found.header.revision

    def _decoded(self, found: Any, expected: int) -> Iterator[RecordBatch]:
        """The batches of a range read, decoded (validated: another process wrote them)
        as the caller goes on, each checked to follow the one before."""
        for kv in found:
            batch, _ = decode_batch(kv.value, source=f"{self.name}{kv.key.decode()}")
            if batch.base_offset != expected:
                raise CorruptRecordError(
                    f"batch has offset {batch.base_offset}, expected {expected}",
                    offset=expected,
                    source=self.name,
                )
            yield batch
            expected = batch.next_offset

    async def _wait_for_append(self, revision: int) -> None:
        """Wait for any change under the log prefix after ``revision`` (at most 1 s, then
        the caller reads again, so a lost watch costs a second, never an append)."""
        try:
            await self._client.watch_prefix_once(
                self._prefix, timeout=1, start_revision=revision + 1 if revision else None
            )
        except anyio.get_cancelled_exc_class():
            await _recognise_cancellation()
            raise
        except (aetcd.exceptions.WatchTimeoutError, aetcd.exceptions.RevisionCompactedError):
            return
        except _TRANSIENT:
            await anyio.sleep(0.05)  # the next read reports the outage

    # snapshots and retention ------------------------------------------------------------

    def _snapshot_key(self, offset: int, part: str) -> bytes:
        return self._snapshot_prefix + b"%020d/" % offset + part.encode()

    async def save_snapshot(self, image: MetadataImage) -> SnapshotInfo:
        """Write ``image`` as chunks and a manifest (the encoding in a worker thread)."""
        name = f"{self.name}@{image.offset}"
        data, info = await self._snapshot_encoder.encode_in_worker(image, name)
        chunks = [
            data[i : i + SNAPSHOT_CHUNK_BYTES] for i in range(0, len(data), SNAPSHOT_CHUNK_BYTES)
        ]
        offset = image.offset

        async def write() -> None:
            for index, chunk in enumerate(chunks):
                await self._client.put(self._snapshot_key(offset, f"{index:06d}"), chunk)
            # The manifest goes last: a snapshot without it is incomplete and ignored.
            await self._client.put(
                self._snapshot_key(offset, "manifest"), struct.pack(">qq", len(chunks), len(data))
            )

        await self._retrying("save_snapshot", write)
        logger.info(
            "snapshot_written", log=self.name, offset=offset, bytes=len(data), chunks=len(chunks)
        )
        await self._retrying("prune_snapshots", self._prune_snapshots)
        return info

    async def _snapshot_offsets(self) -> list[int]:
        found = await self._client.get_prefix(self._snapshot_prefix, keys_only=True)
        offsets = {
            int(kv.key[len(self._snapshot_prefix) :].split(b"/")[0])
            for kv in found
            if kv.key.endswith(b"/manifest")
        }
        return sorted(offsets, reverse=True)

    async def _prune_snapshots(self) -> None:
        for offset in (await self._snapshot_offsets())[SNAPSHOTS_KEPT:]:
            await self._client.delete_prefix(self._snapshot_prefix + b"%020d/" % offset)

    async def latest_snapshot(self) -> Snapshot | None:
        """The newest valid snapshot (an invalid one is reported and skipped), or None."""

        async def newest() -> Snapshot | None:
            for offset in await self._snapshot_offsets():
                manifest = await self._client.get(self._snapshot_key(offset, "manifest"))
                if manifest is None:
                    continue
                count, size = struct.unpack(">qq", manifest.value)
                parts = []
                for index in range(count):
                    chunk = await self._client.get(self._snapshot_key(offset, f"{index:06d}"))
                    if chunk is None:
                        break
                    parts.append(chunk.value)
                data = b"".join(parts)
                try:
                    if len(data) != size:
                        raise CorruptRecordError(f"snapshot holds {len(data)} of {size} bytes")
                    return Snapshot.from_bytes(data, name=f"{self.name}@{offset}")
                except CorruptRecordError as error:
                    logger.warning(
                        "snapshot_invalid", log=self.name, offset=offset, reason=str(error)
                    )
            return None

        return await self._retrying("latest_snapshot", newest)

    async def truncate_before(self, offset: int) -> int:
        """Move the log start up to ``offset`` (no further than the newest snapshot
        covers) and delete the batches below it; returns how many offsets were dropped."""

        async def truncate_once() -> int | None:
            snapshots = await self._snapshot_offsets()
            covered = snapshots[0] + 1 if snapshots else 0
            head = await self._head()
            limit = min(offset, covered, head.next_offset)
            # Only whole batches go: the new start is the first batch at or after the limit.
            new_start = await self._batch_start_at_or_after(limit, head)
            if new_start <= head.log_start:
                # Nothing to move; still clear what an earlier, interrupted truncation
                # may have left below the start (its delete is a separate call).
                await self._delete_below(head.log_start)
                return 0
            new = _Head(head.next_offset, head.epoch, new_start)
            if not await self._swap_head(head, new):
                return None
            # Everything below the new start, not only since the old one: idempotent,
            # so a retry after a lost delete leaves no key behind.
            await self._delete_below(new_start)
            return new_start - head.log_start

        while (dropped := await self._retrying("truncate", truncate_once)) is None:
            pass
        return dropped

    async def _delete_below(self, start: int) -> None:
        if start > 0:
            await self._client.delete_range(self._log_key(0), self._log_key(start))

    async def _batch_start_at_or_after(self, offset: int, head: _Head) -> int:
        window = 256
        while offset < head.next_offset:
            end = min(head.next_offset, offset + window)
            found = await self._client.get_range(self._log_key(offset), self._log_key(end))
            for kv in found:
                return int(kv.key[len(self._log_prefix) :])
            offset, window = end, window * 2
        return head.next_offset

    async def compact_history(self) -> int:
        """Compact etcd's revision history up to now (what an operator's retention does)."""
        found = await self._client.get(self._head_key)
        if found is None:
            return 0
        revision: int = found.header.revision
        await self._client.compact(revision)
        return revision

    def statistics(self) -> EtcdLogStatistics:
        """The log's counters and state now."""
        return EtcdLogStatistics(
            appends=self._appends,
            reads=self._reads,
            outages=self._outages,
            unavailable=self._unavailable_since is not None,
            epoch=self._epoch,
        )
