"""Where record batches come from: the source interface and the in-memory source.

A source hands out batches in offset order, tells the high-water mark (the offset after
the last committed record), and keeps snapshots so a loader can start from the newest
one instead of offset 0. The in-memory source is the embedded default: tests, examples
and the simulated broker append to it through :meth:`InMemoryRecordSource.append`.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from broker.errors import BrokerError, CorruptRecordError, SnapshotRequiredError
from broker.metadata._codec import encode_batch, iter_batches
from broker.metadata._image import MetadataImage, Provenance
from broker.metadata._records import MetadataRecord, NoOpRecord, RecordBatch
from broker.metadata._tasks import Notifier

__all__ = [
    "InMemoryRecordSource",
    "RecordLog",
    "RecordSource",
    "Snapshot",
]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An image written as records: replaying them with ``finish_snapshot`` rebuilds it."""

    provenance: Provenance
    records: tuple[MetadataRecord, ...]
    encoded_size: int | None = None
    name: str = "snapshot"

    @classmethod
    def of(cls, image: MetadataImage, name: str = "snapshot") -> Snapshot:
        return cls(image.provenance, tuple(image.write()), name=name)

    def to_bytes(self) -> bytes:
        """Frames of the batch codec, each stamped with the snapshot's provenance.

        The first frame carries the provenance even for an empty image (a NoOp).
        """
        p = self.provenance
        chunks = [
            self.records[i : i + SNAPSHOT_CHUNK]
            for i in range(0, len(self.records), SNAPSHOT_CHUNK)
        ]
        return b"".join(
            encode_batch(RecordBatch(p.offset, p.epoch, p.append_time_ms, chunk))
            for chunk in chunks or [(NoOpRecord(),)]
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str) -> Snapshot:
        """Inverse of :meth:`to_bytes`; raises CorruptRecordError."""
        records: list[MetadataRecord] = []
        provenance: Provenance | None = None
        for _, batch in iter_batches(data, source=name):
            if provenance is None:
                provenance = Provenance(batch.base_offset, batch.epoch, batch.append_time_ms)
            records.extend(r for r in batch.records if not isinstance(r, NoOpRecord))
        if provenance is None:
            raise CorruptRecordError("snapshot holds no batch", source=name)
        return cls(provenance, tuple(records), encoded_size=len(data), name=name)


@runtime_checkable
class RecordSource(Protocol):
    """Batches in offset order plus the high-water mark."""

    @property
    def name(self) -> str: ...

    async def high_water_mark(self) -> int:
        """Offset after the last committed record (0 for an empty log)."""
        ...

    async def read(self, start_offset: int, max_records: int) -> list[RecordBatch]:
        """Batches from ``start_offset`` on that are available now (at least one; waits
        while there are none), stopping once ``max_records`` records are collected.

        Raises SnapshotRequiredError if ``start_offset`` is older than the log keeps.
        """
        ...

    async def latest_snapshot(self) -> Snapshot | None:
        """The newest snapshot to start from, if any."""
        ...


@runtime_checkable
class RecordLog(RecordSource, Protocol):
    """A source that can also be written: the synthetic controller appends to it."""

    async def append(
        self,
        records: Sequence[MetadataRecord],
        *,
        epoch: int = 1,
        append_time_ms: int | None = None,
    ) -> RecordBatch: ...

    async def save_snapshot(self, image: MetadataImage) -> Snapshot: ...

    async def truncate_before(self, offset: int) -> int:
        """Drop log below ``offset`` that the newest snapshot covers; returns how much."""
        ...


SNAPSHOT_CHUNK = 1000
"""Records per frame in an encoded snapshot."""


def next_batch(
    offset: int, records: Sequence[MetadataRecord], epoch: int, append_time_ms: int | None
) -> RecordBatch:
    """The batch a log appends at ``offset``; append time defaults to now."""
    now = time.time_ns() // 1_000_000 if append_time_ms is None else append_time_ms
    return RecordBatch(offset, epoch, now, tuple(records))


class InMemoryRecordSource:
    """An append-only log in memory, with snapshots and retention.

    ``truncate_before(offset)`` drops batches below a snapshot so a long simulation
    does not keep every record it ever produced.
    """

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self._batches: list[RecordBatch] = []
        self._bases: list[int] = []
        self._next_offset = 0
        self._log_start = 0
        self._appended = Notifier()
        self._snapshots: list[tuple[str, Provenance, bytes]] = []
        """Encoded (compact) snapshots: the newest and one spare."""

    @property
    def name(self) -> str:
        return self._name

    @property
    def next_offset(self) -> int:
        return self._next_offset

    @property
    def log_start(self) -> int:
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
        batch = next_batch(self._next_offset, records, epoch, append_time_ms)
        self.append_batch(batch)
        return batch

    async def append(
        self,
        records: Sequence[MetadataRecord],
        *,
        epoch: int = 1,
        append_time_ms: int | None = None,
    ) -> RecordBatch:
        return self.append_nowait(records, epoch=epoch, append_time_ms=append_time_ms)

    def append_batch(self, batch: RecordBatch) -> None:
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
        for batch in batches:
            self.append_batch(batch)

    # reading -------------------------------------------------------------------------

    async def high_water_mark(self) -> int:
        return self._next_offset

    async def read(self, start_offset: int, max_records: int) -> list[RecordBatch]:
        while start_offset >= self._next_offset:
            await self._appended.wait()
        if start_offset < self._log_start:
            raise SnapshotRequiredError(start_offset, self._log_start)
        index = bisect.bisect_right(self._bases, start_offset) - 1
        if index < 0 or self._batches[index].base_offset != start_offset:
            raise BrokerError(f"{self._name}: offset {start_offset} is not a batch boundary")
        out: list[RecordBatch] = []
        count = 0
        for batch in self._batches[index:]:
            if out and count + len(batch.records) > max_records:
                break
            out.append(batch)
            count += len(batch.records)
        return out

    # snapshots and retention ------------------------------------------------------------

    async def latest_snapshot(self) -> Snapshot | None:
        if not self._snapshots:
            return None
        name, _, data = self._snapshots[-1]
        return Snapshot.from_bytes(data, name=name)

    async def save_snapshot(self, image: MetadataImage) -> Snapshot:
        snapshot = Snapshot.of(image, name=f"{self._name}@{image.offset}")
        self._snapshots.append((snapshot.name, snapshot.provenance, snapshot.to_bytes()))
        del self._snapshots[:-2]
        return snapshot

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
            self._log_start = self._bases[0] if self._bases else self._next_offset
        return dropped
