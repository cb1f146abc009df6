"""Where record batches come from: the source and log protocols, and snapshots.

A source hands out batches in offset order, tells the high-water mark (the offset after
the last committed record), and keeps snapshots so a loader can start from the newest
one instead of offset 0. A log is a source that can also be written.
"""

from __future__ import annotations

import time
import zlib
from array import array
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Protocol, runtime_checkable

import anyio

from broker._gc import collection_paused
from broker.errors import CorruptRecordError
from broker.metadata import ImagePiece, MapPiece, MetadataImage, Part, Provenance
from broker.metadata.records import (
    MetadataRecord,
    NoOpRecord,
    RecordBatch,
    encode_frame,
    encode_record,
    iter_batches,
)

__all__ = [
    "SNAPSHOT_CHUNK",
    "RecordLog",
    "RecordSource",
    "Snapshot",
    "SnapshotEncoder",
    "SnapshotInfo",
    "encode_snapshot",
    "encoded_records",
    "event_loop_turn",
    "next_batch",
    "take_batches",
]

SNAPSHOT_CHUNK = 1000
"""Records per frame in an encoded snapshot."""


def _frames(provenance: Provenance, encoded: Iterable[tuple[bytes, int]]) -> tuple[bytes, int]:
    """Frames of the batch codec from ``(encoded records, how many)`` pieces, about
    ``SNAPSHOT_CHUNK`` records each, every one stamped with the snapshot's provenance (the
    first carries it even for an empty image, as a NoOp), and how many records they hold."""
    p = provenance
    frames: list[bytes] = []
    chunk: list[bytes] = []
    in_chunk = count = 0
    for data, records in encoded:
        chunk.append(data)
        in_chunk += records
        if in_chunk >= SNAPSHOT_CHUNK:
            frames.append(
                encode_frame(p.offset, p.epoch, p.append_time_ms, in_chunk, b"".join(chunk))
            )
            count += in_chunk
            chunk, in_chunk = [], 0
    if in_chunk or not frames:
        count += in_chunk
        if not in_chunk:
            chunk, in_chunk = [encode_record(NoOpRecord())], 1
        frames.append(encode_frame(p.offset, p.epoch, p.append_time_ms, in_chunk, b"".join(chunk)))
    return b"".join(frames), count


def _each(records: Iterable[MetadataRecord]) -> Iterator[tuple[bytes, int]]:
    for record in records:
        yield encode_record(record), 1


def encoded_records(image: MetadataImage) -> Iterator[tuple[bytes, int]]:
    """``image.write()`` encoded record by record, as ``(bytes, records)`` runs, from the
    pieces' own encoders (no record is built where a piece can encode its values): the
    bytes a :class:`SnapshotEncoder` yields, with nothing remembered. For reading an
    image's encoding once (a digest of it): at 100k partitions, less than half the time
    of encoding ``image.write()``, and less than a cold encoder's."""
    return _encoded_parts(image.write_pieces())


def _encoded_parts(parts: Iterable[Part]) -> Iterator[tuple[bytes, int]]:
    for part in parts:
        if isinstance(part, MapPiece):
            entries, encode, args = part.value, part.encoded, part.args
            for key in sorted(entries):  # the order MapPiece.items() states
                yield encode(key, entries[key], *args)
        elif isinstance(part, ImagePiece):
            if part.encoded is not None:
                yield part.encoded(*part.args)
            else:
                yield from _encoded_parts(part.parts())
        else:
            yield encode_record(part), 1


SNAPSHOT_SLICE_SECONDS = 0.002
"""Encoding between two pauses of a snapshot encoder given a ``pause``."""


def event_loop_turn() -> None:
    """From a worker thread started by ``anyio.to_thread``: wait until the event loop
    has run this call, a round trip through it.

    A worker thread that computes for seconds holds the GIL while the loop waits for it
    after every system call (a receive, a send, a poll), up to the interpreter's switch
    interval (5 ms) each time: requests queue up for as long as the worker runs (at
    100k partitions a snapshot took the p99 from about 90 ms to 300 ms and more). A
    worker that calls this between slices of its work takes one slice per turn of the
    loop instead.

    It is also where the work stops when the task awaiting the thread is cancelled: the
    cancellation is raised here, in the worker, so the task's wait (which anyio does not
    abandon, the thread may be reading an image the task holds) ends within a slice,
    not when the whole work is done (a second and more for a snapshot at 100k
    partitions, at shutdown)."""
    anyio.from_thread.check_cancelled()
    anyio.from_thread.run_sync(_nothing)


def _nothing() -> None:
    pass


def _pausing(
    runs: Iterator[tuple[bytes, int]], pause: Callable[[], object], every: float
) -> Iterator[tuple[bytes, int]]:
    clock = time.perf_counter
    deadline = clock() + every
    for count, run in enumerate(runs):
        yield run
        if not count % 64 and clock() >= deadline:  # the clock every 64 runs: cheap
            pause()
            deadline = clock() + every


class _Encoded(NamedTuple):
    """An image piece as last encoded (its bytes zlib-compressed: see ``_pack``)."""

    value: object
    packed: bytes
    records: int
    parts: dict[Hashable, _Remembered]


def _pack(data: bytes | bytearray) -> bytes:
    """What an encoder remembers of bytes it may reuse. Compressed: they are a whole
    snapshot's worth (15 MB at 100k partitions, 3 MB so), reused at most once per
    snapshot; zlib level 1 takes about 0.1 s a snapshot, in the encoding worker thread
    and without the GIL."""
    return zlib.compress(data, 1)


class _EncodedMap(NamedTuple):
    """A map piece as last encoded, entry by entry in key order: the keys and values,
    every entry's bytes joined into one value, and where each entry's bytes end and how
    many records they hold. Six objects per map, about 30 bytes per entry besides the
    bytes themselves: a dict entry, a tuple and a bytes object per entry were ten times
    that (a 100k-partition image's encoder state was larger than the image)."""

    value: object
    keys: list[Any]
    values: list[object]
    packed: bytes
    """The joined bytes, compressed (``_pack``)."""
    ends: array[int]
    counts: array[int]

    def runs(self) -> Iterator[tuple[bytes, int]]:
        """The entries' ``(bytes, records)`` in key order, ``REUSED_RUN`` entries a run."""
        data, ends, counts = zlib.decompress(self.packed), self.ends, self.counts
        start = 0
        for at in range(0, len(ends), REUSED_RUN):
            last = min(at + REUSED_RUN, len(ends)) - 1
            yield data[start : ends[last]], sum(counts[at : last + 1])
            start = ends[last]


_NO_MAP = _EncodedMap(None, [], [], _pack(b""), array("Q"), array("I"))
REUSED_RUN = 64
"""Consecutive reused map entries handed on as one run of bytes: one slice and one
tuple, not one per entry (objects made and dropped per snapshot, 200k at 100k
partitions), and few enough that an encoder given a ``pause`` reads the clock often."""


_Remembered = _Encoded | _EncodedMap


class SnapshotEncoder:
    """Encodes images as snapshots, reusing the bytes of every topic, partition and
    stream that is the same object as in the image it encoded before.

    Consecutive images share all they did not change, so a snapshot of a large cluster
    under churn builds and encodes records only for what changed since the last one.
    It remembers one image's pieces (bytes, not images: nothing stays leased). Not for
    concurrent use: a log encodes one snapshot at a time.
    """

    def __init__(self) -> None:
        self._pieces: dict[Hashable, _Remembered] = {}
        self.reused = 0
        """Pieces whose bytes were reused, over all snapshots."""
        self.encoded = 0
        """Pieces encoded afresh, over all snapshots."""

    def encode(
        self,
        image: MetadataImage,
        name: str = "snapshot",
        *,
        pause: Callable[[], object] | None = None,
    ) -> tuple[bytes, SnapshotInfo]:
        """Like :func:`encode_snapshot` (the same records), reusing unchanged pieces.

        ``pause`` is called after every ``SNAPSHOT_SLICE_SECONDS`` of encoding: in a
        worker thread, :func:`event_loop_turn` (see there)."""
        runs = self.record_bytes(image)
        if pause is not None:
            runs = _pausing(runs, pause, SNAPSHOT_SLICE_SECONDS)
        data, records = _frames(image.provenance, runs)
        return data, SnapshotInfo(image.provenance, len(data), records, name)

    async def encode_in_worker(
        self, image: MetadataImage, name: str = "snapshot"
    ) -> tuple[bytes, SnapshotInfo]:
        """:meth:`encode` in a worker thread, with a turn of the event loop between
        slices (:func:`event_loop_turn`): what a log's ``save_snapshot`` awaits. The
        caller holds ``image`` until this returns."""
        encode = partial(self.encode, image, name, pause=event_loop_turn)
        return await anyio.to_thread.run_sync(encode)

    def record_bytes(self, image: MetadataImage) -> Iterator[tuple[bytes, int]]:
        """``image.write()`` encoded record by record, as ``(bytes, records)`` runs. Once
        fully consumed, the pieces seen replace the remembered ones."""
        seen: dict[Hashable, _Remembered] = {}
        yield from self._parts(image.write_pieces(), self._pieces, seen)
        self._pieces = seen

    def _parts(
        self,
        parts: Iterable[Part],
        known: dict[Hashable, _Remembered],
        seen: dict[Hashable, _Remembered],
    ) -> Iterator[tuple[bytes, int]]:
        """``parts`` encoded: records afresh, pieces from ``known`` while unchanged (what
        was used goes into ``seen``, to be known next time)."""
        for part in parts:
            kind = type(part)
            if kind is ImagePiece:
                yield self._piece(part, known, seen)  # type: ignore[arg-type]
            elif kind is MapPiece:
                yield from self._map_piece(part, known, seen)  # type: ignore[arg-type]
            else:
                yield encode_record(part), 1  # type: ignore[arg-type]  # a record

    def _map_piece(
        self,
        piece: MapPiece,
        known: dict[Hashable, _Remembered],
        seen: dict[Hashable, _Remembered],
    ) -> Iterator[tuple[bytes, int]]:
        """A map's entries, each reused while it is the same object under the same key
        (all of them while the map is). Old and new entries are both in key order, so
        the old ones are walked alongside the new, with no lookup per entry."""
        before = known.get(piece.key)
        if not isinstance(before, _EncodedMap):
            before = _NO_MAP
        elif before.value is piece.value:
            self.reused += len(before.keys)
            seen[piece.key] = before
            yield from before.runs()
            return
        _, old_keys, old_values, old_packed, old_ends, old_counts = before
        old_data = zlib.decompress(old_packed)
        old_count = len(old_keys)
        keys: list[Any] = []
        values: list[object] = []
        joined = bytearray()  # not a list of small bytes objects kept to the end
        ends, counts = array("Q"), array("I")
        encode, args = piece.encoded, piece.args
        at = end = reused = 0  # at: the first old entry not before the current key
        run_from = run_to = run_entries = run_records = 0  # reused bytes not handed on yet
        # Keys sorted, values looked up: a sorted list of items would make a tuple per
        # entry, 100k small objects made and dropped per map while the loader allocates
        # long-lived ones beside them (pymalloc then cannot give their arenas back).
        entries = piece.value
        for key in sorted(entries):
            value = entries[key]
            while at < old_count and old_keys[at] < key:
                at += 1
            if at < old_count and old_values[at] is value and old_keys[at] == key:
                start = old_ends[at - 1] if at else 0
                if not run_entries or start != run_to or run_entries == REUSED_RUN:
                    if run_entries:
                        data = old_data[run_from:run_to]
                        joined += data
                        yield data, run_records
                    run_from, run_entries, run_records = start, 0, 0
                run_to = old_ends[at]
                records = old_counts[at]
                run_entries += 1
                run_records += records
                end += run_to - start
                reused += 1
                at += 1
            else:
                if run_entries:
                    data = old_data[run_from:run_to]
                    joined += data
                    yield data, run_records
                    run_entries = run_records = 0
                data, records = encode(key, value, *args)
                joined += data
                end += len(data)
                yield data, records
            keys.append(key)
            values.append(value)
            ends.append(end)
            counts.append(records)
        if run_entries:
            data = old_data[run_from:run_to]
            joined += data
            yield data, run_records
        self.reused += reused
        self.encoded += len(keys) - reused
        seen[piece.key] = _EncodedMap(piece.value, keys, values, _pack(joined), ends, counts)

    def _piece(
        self,
        piece: ImagePiece,
        known: dict[Hashable, _Remembered],
        seen: dict[Hashable, _Remembered],
    ) -> tuple[bytes, int]:
        """The piece's ``(bytes, records)``: remembered ones while it is unchanged."""
        before = known.get(piece.key)
        if not isinstance(before, _Encoded):
            before = None
        if before is not None and (
            before.value is piece.value or (piece.by_value and before.value == piece.value)
        ):
            self.reused += 1
            seen[piece.key] = before
            return zlib.decompress(before.packed), before.records
        self.encoded += 1
        parts: dict[Hashable, _Remembered] = {}
        if piece.encoded is not None:
            data, records = piece.encoded(*piece.args)
        else:
            known_parts = before.parts if before is not None else {}
            encoded = list(self._parts(piece.parts(), known_parts, parts))
            data = b"".join(data for data, _ in encoded)
            records = sum(n for _, n in encoded)
        seen[piece.key] = _Encoded(piece.value, _pack(data), records, parts)
        return data, records


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot that was written: where it stands and its size, not its records."""

    provenance: Provenance
    encoded_size: int
    records: int
    name: str


def encode_snapshot(image: MetadataImage, name: str = "snapshot") -> tuple[bytes, SnapshotInfo]:
    """``image`` as snapshot frames, encoded a chunk at a time (a large image's records
    are never all held at once), and what was written. Slow for a large image: call it
    in a worker thread on an image the caller holds, as the logs' ``save_snapshot`` do."""
    data, records = _frames(image.provenance, _each(image.write()))
    return data, SnapshotInfo(image.provenance, len(data), records, name)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An image written as records: replaying them with ``finish_snapshot`` rebuilds it."""

    provenance: Provenance
    records: tuple[MetadataRecord, ...]
    encoded_size: int | None = None
    name: str = "snapshot"

    def to_bytes(self) -> bytes:
        """The snapshot's frames (as :func:`encode_snapshot` writes them)."""
        return _frames(self.provenance, _each(self.records))[0]

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str, trusted: bool = False) -> Snapshot:
        """Inverse of :meth:`to_bytes`; raises CorruptRecordError. ``trusted``: the
        bytes come from this library's own storage (see ``decode_batch``)."""
        records: list[MetadataRecord] = []
        provenance: Provenance | None = None
        # An image's worth of acyclic records, all kept: collections during the decode
        # would walk them again and again (see broker._gc).
        with collection_paused(catching_up=True) if trusted else nullcontext():
            # views=False: a snapshot keeps its records
            for _, batch in iter_batches(data, source=name, trusted=trusted, views=False):
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
    def name(self) -> str:
        """The source's name in events and errors."""
        ...

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
    ) -> RecordBatch:
        """Append ``records`` as one batch at the next offset; returns the batch."""
        ...

    async def append_batch(self, batch: RecordBatch) -> None:
        """Append a batch built elsewhere; its base offset must be the next offset."""
        ...

    async def append_batches(self, batches: Sequence[RecordBatch]) -> None:
        """Append consecutive batches built elsewhere, in order (a durable log makes them
        durable together: one fsync, one acknowledgement)."""
        ...

    async def save_snapshot(self, image: MetadataImage) -> SnapshotInfo:
        """Write ``image`` as the newest snapshot (the caller holds it while this runs;
        the encoding happens in a worker thread)."""
        ...

    async def truncate_before(self, offset: int) -> int:
        """Drop log below ``offset`` that the newest snapshot covers; returns how much."""
        ...


def next_batch(
    offset: int, records: Sequence[MetadataRecord], epoch: int, append_time_ms: int | None
) -> RecordBatch:
    """The batch a log appends at ``offset``; append time defaults to now."""
    now = time.time_ns() // 1_000_000 if append_time_ms is None else append_time_ms
    return RecordBatch(offset, epoch, now, tuple(records))


def take_batches(
    batches: Iterable[RecordBatch], max_records: int, *, end_offset: int | None = None
) -> list[RecordBatch]:
    """What a read returns from ``batches`` (consecutive, in order): at least one batch,
    however large, then more while they fit in ``max_records`` records, stopping before
    any batch that starts at ``end_offset`` or later (not readable yet). ``batches`` is
    consumed lazily: nothing after the last batch taken is decoded or read."""
    out: list[RecordBatch] = []
    count = 0
    for batch in batches:
        if end_offset is not None and batch.base_offset >= end_offset:
            break
        if out and count + batch.record_count > max_records:
            break
        out.append(batch)
        count += batch.record_count
        if count >= max_records:
            break  # every batch holds a record: the next would not fit
    return out
