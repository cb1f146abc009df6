"""The in-memory source: the embedded default for tests, examples and the simulation.

Record objects are large (a PartitionChangeRecord takes about 760 bytes as a pydantic
model, 36 as a frame), and a log holds every record since the last snapshot: at 100k
partitions that is hundreds of thousands. So only the newest batches stay objects;
the ones a reader has gone past are encoded, a few at a time as reads go on, their
frames compressed together every ``CHUNK_RECORDS`` records, and a reader behind them
decodes them again (``decode_batch(trusted=True)``: this source encoded them itself).
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import anyio
from anyio.lowlevel import checkpoint

from broker._tasks import Notifier
from broker.errors import BrokerError, SnapshotRequiredError
from broker.metadata import MetadataImage, Provenance
from broker.metadata.records import MetadataRecord, RecordBatch, decode_batch, encode_batch
from broker.metadata.sources._source import (
    Snapshot,
    SnapshotEncoder,
    SnapshotInfo,
    next_batch,
    take_batches,
)

__all__ = ["InMemoryRecordSource"]

TAIL_RECORDS = 2_000
"""Records behind the newest read position that stay objects (readers just behind the
tail, such as a second consumer, read them without decoding). Few: a record object is
about a kilobyte, and a reader further behind decodes at a few microseconds a record
(20k of them were 20 MiB of a 100k-partition simulation's memory)."""
COMPACT_MAX = 256
"""Records encoded in one step of the event loop, of those readers went past (a few
milliseconds: the loop is never held for long; 1024 measured up to 14 ms at 10k
partitions under load and 55 ms at 100k, 4096 added 30 ms to the worst loop delay of a
catch-up). A read encodes at least as many records as it returns, in steps of this
many, so encoding keeps pace with the appends however large the batches."""


CHUNK_RECORDS = 4_096
"""Records whose frames are compressed together once readers went past them (zlib level
1: a fifth of their size, at about 0.2 µs a record). A log keeps every record since the
last snapshot, half a million at 100k partitions: 14 MB of frames, 3 MB compressed."""


@dataclass(frozen=True, slots=True)
class _Compact:
    """A batch kept as its frame."""

    base_offset: int
    next_offset: int
    frame: bytes

    def batch(self) -> RecordBatch:
        return decode_batch(self.frame, trusted=True)[0]


@dataclass(frozen=True, slots=True)
class _Sealed:
    """A batch kept as a frame at ``position`` in a chunk of frames compressed together
    (``packed``, shared by the chunk's batches)."""

    base_offset: int
    next_offset: int
    packed: bytes
    position: int


def _unpacked_snapshot(packed: bytes, name: str) -> Snapshot:
    # trusted: the source encoded these records itself
    return Snapshot.from_bytes(zlib.decompress(packed), name=name, trusted=True)


class InMemoryRecordSource:
    """An append-only log in memory, with snapshots and retention.

    ``truncate_before(offset)`` drops batches below a snapshot so a long simulation
    does not keep every record it ever produced.
    """

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self._batches: list[RecordBatch | _Compact | _Sealed] = []
        self._bases: list[int] = []
        self._compacted = 0
        """Entries of ``_batches`` before this index are encoded."""
        self._sealed = 0
        """Entries before this index are in compressed chunks (``_Sealed``)."""
        self._unsealed_records = 0
        """Records of the encoded entries not in a chunk yet."""
        self._next_offset = 0
        self._log_start = 0
        self._snapshot_encoder = SnapshotEncoder()  # reuses unchanged pieces
        self._appended = Notifier()
        self._snapshots: list[tuple[str, Provenance, bytes]] = []
        """The newest encoded snapshot, zlib-compressed, if any (nothing reads an older
        one; at 100k partitions one is 13 MB, 1.5 MB compressed, in 64 ms that a worker
        thread spends without the GIL; read back only for a reader that fell behind)."""

    @property
    def name(self) -> str:
        """The source's name in events and errors."""
        return self._name

    @property
    def next_offset(self) -> int:
        """The offset the next appended record gets."""
        return self._next_offset

    @property
    def log_start(self) -> int:
        """The oldest offset still readable (older ones only in snapshots, once truncated)."""
        return self._log_start

    def __len__(self) -> int:
        return len(self._batches)

    # writing -------------------------------------------------------------------------

    def append_nowait(
        self,
        records: Sequence[MetadataRecord],
        *,
        epoch: int = 1,
        append_time_ms: int | None = None,
    ) -> RecordBatch:
        """Append ``records`` as one batch at the next offset; returns the batch."""
        batch = next_batch(self._next_offset, records, epoch, append_time_ms)
        self.append_batch_nowait(batch)
        return batch

    async def append(
        self,
        records: Sequence[MetadataRecord],
        *,
        epoch: int = 1,
        append_time_ms: int | None = None,
    ) -> RecordBatch:
        """Like :meth:`append_nowait` (memory never blocks), as the RecordLog protocol has it."""
        return self.append_nowait(records, epoch=epoch, append_time_ms=append_time_ms)

    async def append_batch(self, batch: RecordBatch) -> None:
        """Like :meth:`append_batch_nowait`, as the RecordLog protocol has it."""
        self.append_batch_nowait(batch)

    async def append_batches(self, batches: Sequence[RecordBatch]) -> None:
        """Append consecutive batches, in order, as the RecordLog protocol has it."""
        for batch in batches:
            self.append_batch_nowait(batch)

    def append_batch_nowait(self, batch: RecordBatch) -> None:
        """Append a batch built elsewhere; its base offset must be the next offset."""
        if batch.base_offset != self._next_offset:
            raise BrokerError(
                f"{self._name}: batch base offset {batch.base_offset} is not the next offset "
                f"{self._next_offset}"
            )
        self._batches.append(batch)
        self._bases.append(batch.base_offset)
        self._next_offset = batch.next_offset
        self._appended.notify()

    def extend(self, batches: Iterable[RecordBatch]) -> None:
        """Append every batch of ``batches``, in order."""
        for batch in batches:
            self.append_batch_nowait(batch)

    # reading -------------------------------------------------------------------------

    async def high_water_mark(self) -> int:
        """Offset after the last appended record (0 when empty)."""
        return self._next_offset

    async def read(self, start_offset: int, max_records: int) -> list[RecordBatch]:
        """Batches from ``start_offset`` on that are appended (waits while there are
        none), up to ``max_records`` records."""
        while start_offset >= self._next_offset:
            await self._appended.wait()
        if start_offset < self._log_start:
            raise SnapshotRequiredError(start_offset, self._log_start)
        index = bisect.bisect_right(self._bases, start_offset) - 1
        if index < 0 or self._bases[index] != start_offset:
            raise BrokerError(f"{self._name}: offset {start_offset} is not a batch boundary")
        out = take_batches(self._batches_from(index), max_records)
        budget = max(COMPACT_MAX, sum(batch.record_count for batch in out))
        while (encoded := self._compact(start_offset - TAIL_RECORDS, COMPACT_MAX)) > 0:
            budget -= encoded
            if budget <= 0:
                break
            await checkpoint()  # a step of the loop per COMPACT_MAX records
        if self._unsealed_records >= CHUNK_RECORDS:
            self._seal()
        return out

    def _batches_from(self, index: int) -> Iterator[RecordBatch]:
        """The batches from entry ``index`` on; encoded ones decoded as the caller goes."""
        batches = self._batches
        packed = unpacked = b""  # the chunk last decompressed, for the next batches in it
        for at in range(index, len(batches)):  # not islice: it would step over the head
            entry = batches[at]
            if isinstance(entry, RecordBatch):
                yield entry
            elif isinstance(entry, _Compact):
                yield entry.batch()
            else:
                if entry.packed is not packed:
                    packed, unpacked = entry.packed, zlib.decompress(entry.packed)
                yield decode_batch(unpacked, entry.position, trusted=True)[0]

    def _compact(self, before_offset: int, budget: int) -> int:
        """Encode about ``budget`` records of the object batches ending before
        ``before_offset`` (what readers have gone past), oldest first; returns how many
        records it encoded."""
        batches = self._batches
        at = self._compacted
        encoded = 0
        while at < len(batches) and encoded < budget:
            batch = batches[at]
            assert isinstance(batch, RecordBatch)  # entries from _compacted on are objects
            if batch.next_offset > before_offset:
                break
            batches[at] = _Compact(batch.base_offset, batch.next_offset, encode_batch(batch))
            encoded += batch.record_count
            at += 1
        self._compacted = at
        self._unsealed_records += encoded
        return encoded

    def _seal(self) -> None:
        """Compress the frames of the encoded entries not in a chunk yet as one chunk
        (about a millisecond for CHUNK_RECORDS records)."""
        batches = self._batches
        first, end = self._sealed, self._compacted
        frames: list[_Compact] = batches[first:end]  # type: ignore[assignment]
        packed = zlib.compress(b"".join(entry.frame for entry in frames), 1)
        position = 0
        for at, entry in enumerate(frames, first):
            batches[at] = _Sealed(entry.base_offset, entry.next_offset, packed, position)
            position += len(entry.frame)
        self._sealed = end
        self._unsealed_records = 0

    # snapshots and retention ------------------------------------------------------------

    async def latest_snapshot(self) -> Snapshot | None:
        """The newest snapshot written to it, or None."""
        if not self._snapshots:
            return None
        name, _, packed = self._snapshots[-1]
        # In a worker thread: decoding a 100k-partition snapshot takes most of a second.
        return await anyio.to_thread.run_sync(_unpacked_snapshot, packed, name)

    async def save_snapshot(self, image: MetadataImage) -> SnapshotInfo:
        """Keep ``image`` as the encoded snapshot, in place of the one before."""
        name = f"{self._name}@{image.offset}"
        data, info = await self._snapshot_encoder.encode_in_worker(image, name)
        packed = await anyio.to_thread.run_sync(zlib.compress, data, 1)
        self._snapshots[:] = [(name, image.provenance, packed)]
        return info

    async def truncate_before(self, offset: int) -> int:
        """Drop batches that end before ``offset``; returns how many were dropped.

        Only offsets covered by a snapshot may go: readers behind them load it.
        """
        covered = self._snapshots[-1][1].offset + 1 if self._snapshots else 0
        limit = min(offset, covered)
        dropped = 0
        while dropped < len(self._batches) and self._batches[dropped].next_offset <= limit:
            dropped += 1
        if dropped:
            del self._batches[:dropped]
            del self._bases[:dropped]
            self._compacted = max(0, self._compacted - dropped)
            if dropped > self._sealed:  # unsealed frames went too
                self._unsealed_records = sum(
                    entry.next_offset - entry.base_offset
                    for entry in self._batches[: self._compacted]
                )
            self._sealed = max(0, self._sealed - dropped)
            self._log_start = self._bases[0] if self._bases else self._next_offset
        return dropped
