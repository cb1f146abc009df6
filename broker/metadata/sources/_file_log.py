"""The file log: append-only segment files of encoded batches, plus snapshots.

Layout of a log directory::

    segments/<base offset, 20 digits>.log    frames of the batch codec, in offset order
    snapshots/<offset, 20 digits>.snapshot   an image's records, written atomically

Opening a directory recovers it: every frame's header and CRC are checked, as Kafka's
recovery checks its batches (records are decoded when they are read), and offsets must
follow each other. A torn or corrupt *tail* (the last frames of the last segment, with
no valid frame after them) is reported with its offset and truncated, like Kafka's
recovery of its active segment. Corruption in the middle (a bad frame followed by valid
ones, an offset gap, a bad non-last segment) raises CorruptRecordError and is never
skipped.

Closing a log writes a checkpoint of its frame index (``index.checkpoint``: each
segment's size, CRC32C and frames), as Kafka's clean shutdown spares its next start the
recovery. The next open takes a segment's frames from it when the file's CRC32C is still
the one recorded (one checksum over the file instead of a header and CRC per frame; each
frame's own CRC is still checked when it is read), and deletes it; a missing, stale or
damaged checkpoint means the full recovery above.

File work happens in worker threads (``anyio.to_thread``), but for the small reads and
writes of a reader and a writer at the tail; one lock serialises it. What a read brings
in is decoded on the event loop, in slices between which other tasks run.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import anyio
import crc32c
import msgpack
from anyio.lowlevel import checkpoint

from broker._gc import collection_paused
from broker._logging import get_logger
from broker._tasks import Notifier
from broker.errors import BrokerError, CorruptRecordError, SnapshotRequiredError
from broker.metadata import MetadataImage
from broker.metadata.records import (
    MetadataRecord,
    RecordBatch,
    decode_batch,
    encode_batch,
    read_frame_header,
)
from broker.metadata.sources._source import (
    Snapshot,
    SnapshotEncoder,
    SnapshotInfo,
    event_loop_turn,
    next_batch,
    take_batches,
)

__all__ = ["FileRecordLog", "FsyncPolicy", "RecoveryReport"]

logger = get_logger(__name__)

FsyncPolicy = Literal["always", "never"]
"""``always``: an append is acknowledged once on disk; ``never``: once written."""
SEGMENT_SUFFIX = ".log"
CHECKPOINT_NAME = "index.checkpoint"
"""The frame index a clean close leaves for the next open (in the log directory)."""
_CHECKPOINT_FORMAT = 1
_CHECKPOINT_CRC = struct.Struct(">I")
SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOTS_KEPT = 2
INLINE_READ_RECORDS = 2000
DECODE_SLICE = 0.002
"""Seconds a read decodes before it lets other tasks run (as the loader's replay)."""
TAIL_CACHE_RECORDS = 20_000
"""Batches appended through a log object stay in memory until this many newer records
were appended: a reader at the tail (the loader, live) gets them as they were appended,
without reading and decoding its own writes back from the file."""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the directory found."""

    segments: int
    batches: int
    next_offset: int
    truncated_offset: int | None = None
    """Offset the torn tail would have started at (None: the log was clean)."""
    truncated_bytes: int = 0
    truncated_reason: str | None = None
    indexed_segments: int = 0
    """Segments whose frames came from the clean-shutdown checkpoint, not a scan."""


class _Segment:
    __slots__ = ("base_offset", "bases", "crc", "fd", "path", "positions", "size")

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.bases = array("q")
        self.positions = array("q")
        self.size = 0
        self.crc = 0
        """CRC32C of the file's ``size`` bytes, kept up as frames are written."""
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _FrameBytes(NamedTuple):
    """Whole frames read from a segment file: ``data`` starts at ``position``."""

    source: str
    position: int
    data: bytes

    def decode(self, batches: list[RecordBatch], position: int, seconds: float) -> int:
        """Decode frames from ``position`` (in ``data``) into ``batches`` for about
        ``seconds``, at least one; returns the position after the last one decoded.
        A corrupt frame is reported with its position in the file."""
        started = time.perf_counter()
        try:
            while position < len(self.data):
                batch, position = decode_batch(
                    self.data, position, source=self.source, trusted=True
                )
                batches.append(batch)
                if time.perf_counter() - started >= seconds:
                    break
        except CorruptRecordError as error:
            raise CorruptRecordError(
                error.reason,
                position=None if error.position is None else self.position + error.position,
                offset=error.offset,
                source=error.source,
                truncated=error.truncated,
            ) from error.__cause__
        return position


@dataclass(frozen=True, slots=True)
class _IndexedSegment:
    """A segment as the clean-shutdown checkpoint records it."""

    size: int
    crc: int
    next_offset: int
    """Offset after the segment's last record."""
    bases: array[int]
    positions: array[int]

    @classmethod
    def from_entry(cls, entry: Sequence[object]) -> _IndexedSegment:
        _, size, crc, next_offset, bases, positions = entry
        if not (
            isinstance(size, int)
            and isinstance(crc, int)
            and isinstance(next_offset, int)
            and isinstance(bases, bytes)
            and isinstance(positions, bytes)
        ):
            raise TypeError("a segment entry is (name, size, crc, next offset, frames)")
        indexed = cls(size, crc, next_offset, array("q", bases), array("q", positions))
        if len(indexed.bases) != len(indexed.positions):
            raise ValueError("as many frame positions as frames")
        return indexed

    def matches(self, data: bytes, base_offset: int) -> bool:
        """Whether ``data`` (the segment file now) is what the checkpoint describes."""
        return (
            len(data) == self.size
            and (not self.bases or self.bases[0] == base_offset)
            and crc32c.crc32c(data) == self.crc
        )


def _name(offset: int, suffix: str) -> str:
    return f"{offset:020d}{suffix}"


def _offset_of(path: Path) -> int:
    try:
        return int(path.name.split(".")[0])
    except ValueError:
        raise CorruptRecordError(f"unexpected file name {path.name!r}", source=str(path)) from None


def _has_valid_frame_after(data: bytes, position: int, source: str) -> bool:
    """Whether any valid frame starts after ``position``: then the damage is not a tail."""
    for start in range(position + 1, len(data)):
        try:
            read_frame_header(data, start, source=source)
        except CorruptRecordError:
            continue
        return True
    return False


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileRecordLog:
    """A RecordLog on disk. Create with ``await FileRecordLog.open(directory)``."""

    def __init__(self, directory: Path, *, fsync: FsyncPolicy, segment_bytes: int) -> None:
        if fsync not in ("always", "never"):
            raise BrokerError(f"fsync must be 'always' or 'never', got {fsync!r}")
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._segments_dir = directory / "segments"
        self._snapshots_dir = directory / "snapshots"
        self._snapshot_encoder = SnapshotEncoder()  # reuses unchanged pieces
        self._segments: list[_Segment] = []
        self._segment_bases: list[int] = []
        self._next_offset = 0
        self._readable_offset = 0
        self._new_segment = False
        self._durable_offset = 0
        """Offset after the last record known to be on disk (fsync ``always``)."""
        self._dirty: set[int] = set()
        """Segment fds written since the last fsync."""
        self._syncing = False
        self._synced = Notifier()
        self._lock = threading.Lock()
        self._appended = Notifier()
        self._closed = False
        self.recovery = RecoveryReport(0, 0, 0)
        self._tail: list[RecordBatch] = []
        """Batches appended since open, newest last; ``_tail[_tail_first:]`` are kept."""
        self._tail_bases: list[int] = []
        self._tail_first = 0
        self._tail_records = 0

    @property
    def name(self) -> str:
        """The log's name in events and errors (its directory)."""
        return f"file:{self.directory}"

    @classmethod
    async def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "always",
        segment_bytes: int = 64 * 1024 * 1024,
    ) -> FileRecordLog:
        """Open (creating if needed) and recover a log directory."""
        log = cls(Path(directory), fsync=fsync, segment_bytes=segment_bytes)
        try:
            await anyio.to_thread.run_sync(log._recover)
        except BaseException:
            # nobody else holds the log to close the segments a failed recovery opened
            log._close_segments()
            raise
        return log

    # recovery --------------------------------------------------------------------------

    def _recover(self) -> None:
        self._segments_dir.mkdir(parents=True, exist_ok=True)
        self._snapshots_dir.mkdir(parents=True, exist_ok=True)
        for stale in self._snapshots_dir.glob("*.tmp"):
            stale.unlink()
        paths = sorted(self._segments_dir.glob(f"*{SEGMENT_SUFFIX}"), key=_offset_of)
        indexed = self._take_checkpoint()
        expected: int | None = None
        batches = indexed_segments = 0
        truncated: tuple[int, int, str] | None = None
        for index, path in enumerate(paths):
            base = _offset_of(path)
            if expected is not None and base != expected:
                raise CorruptRecordError(
                    f"segment starts at offset {base}, the previous one ends before {expected}",
                    offset=expected,
                    source=str(path),
                )
            expected = base
            segment = _Segment(path, base)
            self._segments.append(segment)  # open() closes them all if recovery fails
            self._segment_bases.append(base)
            data = path.read_bytes()
            known = indexed.get(path.name)
            if known is not None and known.matches(data, base):
                segment.bases, segment.positions = known.bases, known.positions
                segment.size, segment.crc = len(data), known.crc
                expected = known.next_offset
                batches += len(known.bases)
                indexed_segments += 1
                continue
            position = 0
            while position < len(data):
                try:
                    frame = read_frame_header(data, position, source=str(path))
                    if frame.base_offset != expected:
                        raise CorruptRecordError(
                            f"batch has offset {frame.base_offset}, expected {expected}",
                            position=position,
                            offset=frame.base_offset,
                            source=str(path),
                        )
                except CorruptRecordError as error:
                    last = index == len(paths) - 1
                    if not last or _has_valid_frame_after(data, position, str(path)):
                        raise
                    truncated = (expected, len(data) - position, error.reason)
                    os.truncate(path, position)
                    logger.warning(
                        "log_tail_truncated",
                        log=self.name,
                        segment=path.name,
                        offset=expected,
                        position=position,
                        bytes=len(data) - position,
                        reason=error.reason,
                    )
                    break
                segment.bases.append(frame.base_offset)
                segment.positions.append(position)
                expected = frame.next_offset
                position = frame.end
                batches += 1
            segment.size = position
            segment.crc = crc32c.crc32c(memoryview(data)[:position])
        self._next_offset = expected if expected is not None else 0
        self._readable_offset = self._durable_offset = self._next_offset
        self.recovery = RecoveryReport(
            len(self._segments),
            batches,
            self._next_offset,
            truncated[0] if truncated else None,
            truncated[1] if truncated else 0,
            truncated[2] if truncated else None,
            indexed_segments,
        )

    def _take_checkpoint(self) -> dict[str, _IndexedSegment]:
        """The clean-shutdown checkpoint's segments by file name (none if there is no
        usable checkpoint), and the checkpoint deleted: it describes the files as the
        last close left them, and appends follow."""
        path = self.directory / CHECKPOINT_NAME
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)  # a close that crashed
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        path.unlink()
        try:
            (crc,) = _CHECKPOINT_CRC.unpack_from(data)
            payload = memoryview(data)[_CHECKPOINT_CRC.size :]
            if crc32c.crc32c(payload) != crc:
                raise ValueError("CRC32C mismatch")
            format_version, entries = msgpack.unpackb(payload)
            if format_version != _CHECKPOINT_FORMAT:
                raise ValueError(f"format {format_version}")
            return {entry[0]: _IndexedSegment.from_entry(entry) for entry in entries}
        except (ValueError, TypeError, struct.error, msgpack.UnpackException) as error:
            logger.warning("log_checkpoint_ignored", log=self.name, reason=str(error))
            return {}

    def _write_checkpoint(self) -> None:
        """Leave the frame index for the next open (see the module docstring). Written
        to a temporary file and renamed; not fsynced: a checkpoint lost in a crash only
        means a full recovery, and one that does not match its files is not used."""
        entries = [
            (
                segment.path.name,
                segment.size,
                segment.crc,
                next_offset,
                segment.bases.tobytes(),
                segment.positions.tobytes(),
            )
            for segment, next_offset in zip(
                self._segments, [*self._segment_bases[1:], self._next_offset], strict=True
            )
        ]
        payload = msgpack.packb((_CHECKPOINT_FORMAT, entries))
        final = self.directory / CHECKPOINT_NAME
        temporary = final.with_name(final.name + ".tmp")
        temporary.write_bytes(_CHECKPOINT_CRC.pack(crc32c.crc32c(payload)) + payload)
        os.replace(temporary, final)

    def _close_segments(self) -> None:
        for segment in self._segments:
            segment.close()
        self._segments.clear()
        self._segment_bases.clear()

    # writing ---------------------------------------------------------------------------

    def _write(self, batch: RecordBatch) -> None:
        """Write one frame to the page cache (its fd is then due an fsync, ``always``)."""
        frame = encode_batch(batch)
        with self._lock:
            if self._closed:
                raise BrokerError(f"{self.name} is closed")
            if batch.base_offset != self._next_offset:
                raise BrokerError(
                    f"{self.name}: batch offset {batch.base_offset} is not the next offset "
                    f"{self._next_offset}"
                )
            segment = self._segments[-1] if self._segments else None
            if segment is None or (segment.size and segment.size + len(frame) > self.segment_bytes):
                segment = _Segment(
                    self._segments_dir / _name(batch.base_offset, SEGMENT_SUFFIX), batch.base_offset
                )
                self._segments.append(segment)
                self._segment_bases.append(segment.base_offset)
                self._new_segment = True
            written = os.write(segment.fd, frame)
            if written != len(frame):  # pragma: no cover - a full disk
                raise BrokerError(f"{self.name}: short write ({written} of {len(frame)} bytes)")
            segment.bases.append(batch.base_offset)
            segment.positions.append(segment.size)
            segment.size += len(frame)
            segment.crc = crc32c.crc32c(frame, segment.crc)
            self._next_offset = batch.next_offset
            self._keep_in_tail(batch)
            if self.fsync == "always":
                self._dirty.add(segment.fd)

    def _sync(self, fds: set[int], new_segment: bool) -> None:
        for fd in fds:
            os.fsync(fd)
        if new_segment:
            _fsync_directory(self._segments_dir)

    async def _sync_until(self, offset: int) -> None:
        """Return once every record below ``offset`` is on disk.

        Group commit: one task at a time fsyncs everything written so far; appends that
        wait meanwhile are covered by the next fsync and share it, so a burst of
        concurrent (or batched) appends costs one or two fsyncs, not one each.
        """
        while self._durable_offset < offset:
            if self._syncing:
                await self._synced.wait()
                continue
            self._syncing = True
            with self._lock:
                upto, fds, new_segment = self._next_offset, self._dirty, self._new_segment
                self._dirty, self._new_segment = set(), False
            try:
                await anyio.to_thread.run_sync(self._sync, fds, new_segment)
            except BaseException:
                with self._lock:  # not synced: the next attempt must cover these again
                    self._dirty |= fds
                    self._new_segment = self._new_segment or new_segment
                raise
            else:
                self._durable_offset = max(self._durable_offset, upto)
            finally:
                self._syncing = False
                self._synced.notify()

    async def append(
        self,
        records: Sequence[MetadataRecord],
        *,
        epoch: int = 1,
        append_time_ms: int | None = None,
    ) -> RecordBatch:
        """Append ``records`` as one batch at the log's end and return it; with
        ``fsync="always"`` the batch is on disk before this returns."""
        batch = next_batch(self._next_offset, records, epoch, append_time_ms)
        await self.append_batch(batch)
        return batch

    async def append_batch(self, batch: RecordBatch) -> None:
        """Append one batch; readers see it once it is durable (fsync ``always``) or written.
        Cancellation never leaves a batch in the file that readers were not shown.

        The write itself goes to the page cache in the event loop (small and fast); only
        fsync, which can block for long, runs in a worker thread, shared by every append
        waiting at the time (group commit).
        """
        await self.append_batches((batch,))

    async def append_batches(self, batches: Sequence[RecordBatch]) -> None:
        """Append consecutive batches, in order, with one fsync for all of them
        (``always``); none is shown to readers before all are durable."""
        if not batches:
            return
        for batch in batches:
            self._write(batch)
        end = batches[-1].next_offset
        if self.fsync == "always":
            # Once written, the batches are in the file whatever happens to this task: a
            # cancelled append still finishes its fsync and becomes readable, so the
            # high-water mark never lags what a restart would recover.
            with anyio.CancelScope(shield=True):
                await self._sync_until(end)
        self._readable_offset = max(self._readable_offset, end)
        self._appended.notify()

    # reading ---------------------------------------------------------------------------

    @property
    def next_offset(self) -> int:
        """The offset the next appended record gets."""
        return self._next_offset

    @property
    def log_start(self) -> int:
        """The oldest offset still in the log (older records live only in snapshots)."""
        return self._segment_bases[0] if self._segment_bases else self._next_offset

    async def high_water_mark(self) -> int:
        """Offset after the last committed record (0 for an empty log)."""
        return self._readable_offset

    def _keep_in_tail(self, batch: RecordBatch) -> None:
        self._tail.append(batch)
        self._tail_bases.append(batch.base_offset)
        self._tail_records += batch.record_count
        while self._tail_records - self._tail[self._tail_first].record_count >= (
            TAIL_CACHE_RECORDS
        ):
            self._tail_records -= self._tail[self._tail_first].record_count
            self._tail_first += 1
        if self._tail_first > len(self._tail) // 2:  # compact now and then (amortised O(1))
            del self._tail[: self._tail_first], self._tail_bases[: self._tail_first]
            self._tail_first = 0

    def _read_tail(self, start_offset: int, max_records: int) -> list[RecordBatch] | None:
        """Readable batches from ``start_offset`` on out of the tail cache, or None when
        it does not hold that offset (the file is read then)."""
        with self._lock:
            if start_offset < self.log_start:
                return None  # below the log start: the file path raises SnapshotRequired
            bases = self._tail_bases
            at = bisect.bisect_left(bases, start_offset, lo=self._tail_first)
            if at == len(bases) or bases[at] != start_offset:
                return None
            # Not past what is readable: written, maybe not yet durable.
            tail = self._tail  # indexed, not islice: that would step over the head
            return take_batches(
                (tail[i] for i in range(at, len(tail))),
                max_records,
                end_offset=self._readable_offset,
            )

    def _read_frames(self, start_offset: int, max_records: int) -> list[_FrameBytes]:
        """The bytes of the frames a read from ``start_offset`` returns, run by run."""
        with self._lock:
            if start_offset < self.log_start:
                raise SnapshotRequiredError(start_offset, self.log_start)
            out = []
            for segment, first, end in self._frames_to_read(start_offset, max_records):
                at = segment.positions[first]
                stop = segment.positions[end] if end < len(segment.positions) else segment.size
                out.append(_FrameBytes(str(segment.path), at, os.pread(segment.fd, stop - at, at)))
            return out

    def _frames_to_read(
        self, start_offset: int, max_records: int
    ) -> list[tuple[_Segment, int, int]]:
        """The frames a read from ``start_offset`` returns, found in the index as runs
        ``(segment, first, end)`` of frame numbers: what ``take_batches`` would take
        (at least one frame, then more while their records fit in ``max_records``, none
        past what is readable), so that only they are read from the file and decoded."""
        runs: list[tuple[_Segment, int, int]] = []
        limit = start_offset + max_records  # a frame fits if it ends by this offset
        first_segment = bisect.bisect_right(self._segment_bases, start_offset) - 1
        for number in range(first_segment, len(self._segments)):
            segment = self._segments[number]
            bases = segment.bases
            first = bisect.bisect_left(bases, start_offset)
            if first == len(bases):
                continue
            if bases[first] != start_offset:
                raise BrokerError(f"{self.name}: offset {start_offset} is not a batch boundary")
            segment_end = (
                self._segment_bases[number + 1]
                if number + 1 < len(self._segments)
                else self._next_offset
            )
            # Frame k ends where frame k + 1 starts (the last one at the segment's end).
            starting_by_limit = bisect.bisect_right(bases, limit, first)
            fitting = starting_by_limit - 1
            if starting_by_limit == len(bases) and segment_end <= limit:
                fitting = len(bases)
            end = min(fitting, bisect.bisect_left(bases, self._readable_offset, first))
            if not runs:
                end = max(end, first + 1)  # at least one frame, however large
            if end > first:
                runs.append((segment, first, end))
            if end < len(bases):
                break
            start_offset = segment_end
        return runs

    async def read(self, start_offset: int, max_records: int) -> list[RecordBatch]:
        """Batches from ``start_offset`` on that are available now (waits while there are
        none), up to ``max_records`` records; SnapshotRequiredError below the log start."""
        while start_offset >= self._readable_offset:
            await self._appended.wait()
        cached = self._read_tail(start_offset, max_records)
        if cached:
            await checkpoint()
            return cached
        if self._readable_offset - start_offset <= INLINE_READ_RECORDS:
            # A reader at the tail reads a few frames from the page cache: inline, since a
            # worker thread would wait for the GIL longer than the read takes.
            await checkpoint()
            runs = self._read_frames(start_offset, max_records)
        else:
            runs = await anyio.to_thread.run_sync(self._read_frames, start_offset, max_records)
        # Decoded here, in slices between which other tasks run: decoding in the worker
        # thread cost a whole catch-up a fifth more CPU time (measured; most likely the
        # records were built on one core and replayed on another).
        batches: list[RecordBatch] = []
        for run in runs:
            position = 0
            while position < len(run.data):
                # Decoding makes thousands of acyclic records a reader keeps: collections
                # during it would walk them for nothing (see broker._gc; growth is the
                # loader's to judge).
                with collection_paused(catching_up=True):
                    position = run.decode(batches, position, DECODE_SLICE)
                if position < len(run.data):
                    await checkpoint()
        return batches

    # snapshots and retention --------------------------------------------------------------

    def _snapshot_paths(self) -> list[Path]:
        return sorted(self._snapshots_dir.glob(f"*{SNAPSHOT_SUFFIX}"), key=_offset_of, reverse=True)

    def _read_snapshot(self, path: Path) -> Snapshot:
        snapshot = Snapshot.from_bytes(path.read_bytes(), name=path.name, trusted=True)
        if snapshot.provenance.offset != _offset_of(path):
            raise CorruptRecordError(
                f"snapshot is stamped with offset {snapshot.provenance.offset}", source=str(path)
            )
        return snapshot

    def _latest_snapshot_sync(self) -> Snapshot | None:
        for path in self._snapshot_paths():
            try:
                return self._read_snapshot(path)
            except CorruptRecordError as error:
                logger.warning(
                    "snapshot_invalid", log=self.name, snapshot=path.name, reason=str(error)
                )
        return None

    async def latest_snapshot(self) -> Snapshot | None:
        """The newest valid snapshot (an invalid one is reported and skipped), or None."""
        return await anyio.to_thread.run_sync(self._latest_snapshot_sync)

    def _write_snapshot_sync(self, image: MetadataImage) -> SnapshotInfo:
        name = _name(image.offset, SNAPSHOT_SUFFIX)
        data, info = self._snapshot_encoder.encode(image, name, pause=event_loop_turn)
        final = self._snapshots_dir / name
        temporary = final.with_name(final.name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
        _fsync_directory(self._snapshots_dir)
        for old in self._snapshot_paths()[SNAPSHOTS_KEPT:]:
            old.unlink(missing_ok=True)
        return info

    async def save_snapshot(self, image: MetadataImage) -> SnapshotInfo:
        """Write ``image`` as a snapshot (temp file, fsync, rename) from a worker thread:
        encoding a large image takes seconds. The caller holds the image meanwhile."""
        info = await anyio.to_thread.run_sync(self._write_snapshot_sync, image)
        logger.info("snapshot_written", log=self.name, offset=image.offset, bytes=info.encoded_size)
        return info

    async def truncate_before(self, offset: int) -> int:
        """Delete whole segments below ``offset`` that the newest snapshot covers.

        Returns how many segments were deleted; the active segment always stays.
        """
        paths = self._snapshot_paths()
        covered = _offset_of(paths[0]) + 1 if paths else 0
        limit = min(offset, covered)
        deleted = 0
        with self._lock:
            while len(self._segments) > 1 and self._segment_bases[1] <= limit:
                segment = self._segments.pop(0)
                self._segment_bases.pop(0)
                segment.close()
                segment.path.unlink(missing_ok=True)
                deleted += 1
        return deleted

    def close(self) -> None:
        """Close the segment files, leaving the frame index for the next open (see the
        module docstring); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._write_checkpoint()
            except OSError as error:  # the next open recovers in full
                logger.warning("log_checkpoint_not_written", log=self.name, error=str(error))
            finally:
                self._close_segments()

    async def aclose(self) -> None:
        """Close the segment files, as :meth:`close` does but from a worker thread (the
        frame index it writes grows with the log); idempotent, and done even when the
        caller is cancelled."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.close)

    async def __aenter__(self) -> FileRecordLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
