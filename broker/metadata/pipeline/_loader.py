"""The loader: record batches in, images out.

One task reads batches in offset order from a source, replays them into a delta, applies
it into the next image and hands the image to the publisher. The rules it follows
(``kafka-kraft-metadata.md``, Loader):

* Catch-up gate: nothing is published until the high-water mark is known, the loader
  has reached HWM-1 and at least one record was read (KAFKA-14857, KAFKA-15389).
* When behind it groups consecutive batches into one delta, bounded by
  ``max_records_per_image``; one image per group, with a manifest.
* A record that fails to replay is reported (event ``replay_error`` with offset,
  record type and reason) and skipped, or halts the loader when ``on_replay_error`` is
  ``"halt"``; an image never contains a half-applied record.
* Records between BeginTransaction and EndTransaction land in one image;
  AbortTransaction discards them. A marker that does not fit (Begin inside a
  transaction, End or Abort outside one) is a replay error and changes nothing, as in
  Kafka's MetadataBatchLoader: the images published are a function of the log alone,
  however its batches happen to be read.
* A consumer fault never stops the loader (the publisher contains it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal, cast

import anyio
from anyio.lowlevel import checkpoint

from broker._gc import collection_paused, freeze_new, freeze_now
from broker._logging import get_logger
from broker._tasks import single_cause
from broker.errors import ConfigurationError, LoaderHaltedError, ReplayError, SnapshotRequiredError
from broker.metadata import MetadataDelta, MetadataImage, Provenance
from broker.metadata.pipeline._publisher import MetadataPublisher
from broker.metadata.pipeline._updates import LoadManifest
from broker.metadata.records import (
    AbortTransactionRecord,
    BeginTransactionRecord,
    EndTransactionRecord,
    RecordBatch,
)
from broker.metadata.sources import RecordSource, Snapshot

__all__ = ["LoaderStatistics", "MetadataLoader", "ReplayErrorPolicy"]

logger = get_logger(__name__)

ReplayErrorPolicy = Literal["skip", "halt"]
"""What the loader does with a record that cannot replay: skip it (reported) or halt."""


@dataclass(frozen=True, slots=True)
class LoaderStatistics:
    """The loader's progress and counters."""

    offset: int
    """Last offset applied into an image (-1: none yet)."""
    high_water_mark: int | None
    """The HWM the catch-up gate waits for (None until the source answered)."""
    caught_up: bool
    images: int
    batches: int
    records: int
    replay_errors: int
    transactions_aborted: int
    snapshots_loaded: int
    halted: str | None


YIELD_EVERY_RECORDS = 256
"""The loader yields to the event loop at least this often while it replays a batch."""
CATCH_UP_SLICE = 0.002
"""Seconds of replay between two yields to the event loop while the loader catches up
(once caught up, it yields after every batch)."""
_MARKERS = frozenset({BeginTransactionRecord, EndTransactionRecord, AbortTransactionRecord})


def _misplaced_marker(kind: type, in_transaction: bool) -> str | None:
    """Why a transaction marker does not fit here (Kafka's MetadataBatchLoader rules)."""
    if kind is BeginTransactionRecord and in_transaction:
        return "a transaction is already open (BeginTransaction inside a transaction)"
    if kind is not BeginTransactionRecord and not in_transaction:
        return "no transaction is open (no BeginTransaction before it)"
    return None


class _Group:
    """Batches folded into the current delta."""

    __slots__ = ("base_offset", "batches", "bytes", "errors", "records", "started")

    def __init__(self) -> None:
        self.base_offset = -1
        self.batches = 0
        self.records = 0
        self.bytes: int | None = 0
        self.errors = 0
        self.started = time.perf_counter()

    def add(self, batch: RecordBatch) -> None:
        if self.base_offset < 0:
            self.base_offset = batch.base_offset
        self.batches += 1
        self.records += batch.record_count
        if self.bytes is not None:
            self.bytes = None if batch.encoded_size is None else self.bytes + batch.encoded_size


class _Halt(Exception):
    pass


class MetadataLoader(anyio.AsyncContextManagerMixin):
    """Loads images from ``source`` and publishes them through ``publisher``.

    ``async with MetadataLoader(source, publisher):`` runs the loader task; leaving the
    block stops it and releases its image. A loader halted by a bad record keeps the
    last good image published, and raises LoaderHaltedError when the block exits.
    """

    def __init__(
        self,
        source: RecordSource,
        publisher: MetadataPublisher,
        *,
        max_records_per_image: int = 10_000,
        on_replay_error: ReplayErrorPolicy = "skip",
        manage_gc: bool = True,
        name: str = "loader",
    ) -> None:
        if max_records_per_image < 1:
            raise ConfigurationError(
                f"max_records_per_image must be at least 1, got {max_records_per_image}"
            )
        if on_replay_error not in ("skip", "halt"):
            raise ConfigurationError(
                f"on_replay_error must be 'skip' or 'halt', got {on_replay_error!r}"
            )
        self.source = source
        self.publisher = publisher
        self.name = name
        self.max_records_per_image = max_records_per_image
        self.on_replay_error = on_replay_error
        self.manage_gc = manage_gc
        """Freeze the image heap out of the cyclic GC's way (see ``broker._gc``)."""
        self._image = MetadataImage.EMPTY
        self._next_offset = 0
        self._hwm: int | None = None
        self._records_read = 0
        self._caught_up = anyio.Event()
        self._images = 0
        self._batches = 0
        self._records = 0
        self._replay_errors = 0
        self._aborted = 0
        self._snapshots = 0
        self._halted: LoaderHaltedError | None = None
        self._stopped = anyio.Event()

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[MetadataLoader]:
        with single_cause():
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self._run, name=f"loader:{self.name}")
                try:
                    yield self
                finally:
                    task_group.cancel_scope.cancel()
        if self._halted is not None:
            raise self._halted

    # introspection ------------------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        """Whether the loader reached the high-water mark it saw at start."""
        return self._caught_up.is_set()

    @property
    def halted(self) -> LoaderHaltedError | None:
        """The error the loader halted at (halt mode), or None."""
        return self._halted

    @property
    def offset(self) -> int:
        """Last offset applied into an image (-1: none yet)."""
        return self._image.offset

    async def wait_caught_up(self) -> None:
        """Wait until the catch-up gate opened (the first image was published)."""
        await self._caught_up.wait()

    async def wait_stopped(self) -> None:
        """Wait until the loader task ended (it only ends by halting or cancellation)."""
        await self._stopped.wait()

    def statistics(self) -> LoaderStatistics:
        """The loader's counters now."""
        return LoaderStatistics(
            offset=self._image.offset,
            high_water_mark=self._hwm,
            caught_up=self.caught_up,
            images=self._images,
            batches=self._batches,
            records=self._records,
            replay_errors=self._replay_errors,
            transactions_aborted=self._aborted,
            snapshots_loaded=self._snapshots,
            halted=str(self._halted) if self._halted is not None else None,
        )

    # the loader task ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            snapshot = await self.source.latest_snapshot()
            if snapshot is not None:
                await self._load_snapshot(snapshot)
            self._hwm = await self.source.high_water_mark()
            await self._maybe_open_gate(None)
            await self._follow()
        except _Halt:
            pass
        finally:
            image, self._image = self._image, MetadataImage.EMPTY
            image.release()
            self._stopped.set()

    async def _follow(self) -> None:
        delta = MetadataDelta(self._image)
        group = _Group()
        in_transaction = False
        last: RecordBatch | None = None  # the next image's provenance, built once per image
        yielded = time.perf_counter()
        while True:
            try:
                batches = await self.source.read(self._next_offset, self.max_records_per_image)
            except SnapshotRequiredError as fell_behind:
                snapshot = await self.source.latest_snapshot()
                if snapshot is None or snapshot.provenance.offset + 1 < fell_behind.log_start:
                    raise
                await self._load_snapshot(snapshot)
                delta, group, in_transaction = MetadataDelta(self._image), _Group(), False
                continue
            # Settled once per read (per batch it cost more than a small batch's replay);
            # the gate opens in a commit, after which it is read again.
            caught_up = self._caught_up.is_set()
            for batch in batches:
                group.add(batch)
                records = batch.replayable  # views of the hot types, not records
                if not _MARKERS.isdisjoint(map(type, records)):
                    in_transaction, delta, group = await self._replay_with_markers(
                        delta, batch, group, in_transaction
                    )
                    caught_up = self._caught_up.is_set()
                elif len(records) <= YIELD_EVERY_RECORDS:
                    # The common batch, replayed in place (a coroutine per batch cost
                    # more than a small batch's replay); a failing record takes the
                    # slow path for the rest.
                    try:
                        delta.replay_all(records, batch.base_offset)
                    except ReplayError as error:
                        await self._replay(delta, batch, 0, len(records), group, error)
                else:
                    # A large batch (a bootstrap's) takes a while: replayed in runs.
                    for first in range(0, len(records), YIELD_EVERY_RECORDS):
                        if first:
                            await checkpoint()
                        await self._replay(delta, batch, first, first + YIELD_EVERY_RECORDS, group)
                last = batch
                self._next_offset = batch.next_offset
                self._batches += 1
                self._records += len(records)
                self._records_read += len(records)
                if self.manage_gc:
                    # the batch's registrations: out of young collections' way
                    freeze_new(catching_up=not caught_up)
                # A source with data at hand returns at once, and one read can hold
                # thousands of records: yield after every batch so the loader never
                # keeps the event loop to itself for a whole read, let alone a catch-up.
                # (Yielding by records or by time alone measured worse for the loop's
                # latency with many busy reader tasks: benchmarks/responsiveness.py.)
                # Catching up, a log of small batches would spend a third of its time
                # in those turns: there, yield once CATCH_UP_SLICE has passed.
                if caught_up:
                    await checkpoint()
                else:
                    now = time.perf_counter()
                    if now - yielded >= CATCH_UP_SLICE:
                        await checkpoint()
                        yielded = time.perf_counter()
            if not in_transaction:
                provenance = (
                    Provenance(last.last_offset, last.epoch, last.append_time_ms)
                    if last is not None
                    else self._image.provenance
                )
                await self._commit(delta, provenance, group)
                delta, group = MetadataDelta(self._image), _Group()

    async def _replay_with_markers(
        self, delta: MetadataDelta, batch: RecordBatch, group: _Group, in_transaction: bool
    ) -> tuple[bool, MetadataDelta, _Group]:
        """Replay a batch that holds transaction markers, record by record; returns
        whether a transaction is open after it, and the delta and group to go on with."""
        base_offset = batch.base_offset
        for index, record in enumerate(batch.replayable):
            kind = type(record)  # a marker is never a view
            if kind not in _MARKERS:
                await self._replay(delta, batch, index, index + 1, group)
                continue
            offset = base_offset + index
            misplaced = _misplaced_marker(kind, in_transaction)
            if misplaced is not None:
                # Kafka's rule: a marker that does not fit is a replay error
                # and changes nothing (neither the records nor the state).
                error = ReplayError(kind.__name__, misplaced, offset=offset)
                group.errors += 1
                await self._replay_failed(error, delta, batch, offset, group)
            elif kind is BeginTransactionRecord:
                if delta.records:
                    # What came before the transaction is its own image (the
                    # batch then counts in both manifests: both hold its records).
                    before = Provenance(offset - 1, batch.epoch, batch.append_time_ms)
                    await self._commit(delta, before, group)
                    delta, group = MetadataDelta(self._image), _Group()
                    group.add(batch)
                in_transaction = True
            elif kind is EndTransactionRecord:
                in_transaction = False
            else:  # AbortTransactionRecord
                in_transaction = False
                self._aborted += 1
                logger.info("transaction_aborted", loader=self.name, offset=offset)
                delta = MetadataDelta(self._image)
        return in_transaction, delta, group

    async def _replay(
        self,
        delta: MetadataDelta,
        batch: RecordBatch,
        first: int,
        end: int,
        group: _Group,
        failed: ReplayError | None = None,
    ) -> None:
        """Replay records ``first`` to ``end`` (exclusive) of ``batch``; one that fails is
        handled as ``on_replay_error`` says, and the rest go on. ``failed``: a replay of
        this run already failed with it (the records before it are replayed)."""
        records = batch.replayable
        end = min(end, len(records))
        while True:
            if failed is not None:
                offset = cast(int, failed.offset)  # replay_all numbers it from base_offset
                group.errors += 1
                await self._replay_failed(failed, delta, batch, offset, group)
                first, failed = offset - batch.base_offset + 1, None
            if first >= end:
                return
            run = records if first == 0 and end == len(records) else records[first:end]
            try:
                delta.replay_all(run, batch.base_offset + first)
                return
            except ReplayError as error:
                failed = error

    async def _replay_failed(
        self,
        error: ReplayError,
        delta: MetadataDelta,
        batch: RecordBatch,
        offset: int,
        group: _Group,
    ) -> None:
        self._replay_errors += 1
        logger.error(
            "replay_error",
            loader=self.name,
            offset=offset,
            record_type=error.record_type,
            reason=error.reason,
            action=self.on_replay_error,
        )
        if self.on_replay_error == "halt":
            # Publish what came before the bad record, then stop there.
            if delta.records:
                await self._commit(
                    delta, Provenance(offset - 1, batch.epoch, batch.append_time_ms), group
                )
            self._halted = LoaderHaltedError(error)
            logger.error("loader_halted", loader=self.name, offset=offset, error=str(error))
            raise _Halt

    async def _load_snapshot(self, snapshot: Snapshot) -> None:
        started = time.perf_counter()
        delta = MetadataDelta(self._image, snapshot=True)
        delta.replay_all(snapshot.records)
        delta.finish_snapshot()
        self._snapshots += 1
        self._records_read += len(snapshot.records)
        self._next_offset = snapshot.provenance.offset + 1
        manifest = LoadManifest(
            "snapshot",
            snapshot.provenance,
            -1,
            0,
            len(snapshot.records),
            snapshot.encoded_size,
            time.perf_counter() - started,
        )
        logger.info(
            "snapshot_loaded",
            loader=self.name,
            snapshot=snapshot.name,
            offset=snapshot.provenance.offset,
            records=len(snapshot.records),
        )
        await self._install(delta, delta.apply(snapshot.provenance), manifest)

    async def _commit(self, delta: MetadataDelta, provenance: Provenance, group: _Group) -> None:
        if group.batches == 0 and delta.records == 0:
            return
        with collection_paused(catching_up=not self.caught_up) if self.manage_gc else nullcontext():
            image = delta.apply(provenance)
        manifest = LoadManifest(
            "log",
            provenance,
            group.base_offset,
            group.batches,
            group.records,
            group.bytes,
            time.perf_counter() - group.started,
            group.errors,
        )
        await self._install(delta, image, manifest)

    async def _install(
        self, delta: MetadataDelta, image: MetadataImage, manifest: LoadManifest
    ) -> None:
        """Make ``image`` current and publish it once the gate is open."""
        try:
            self._images += 1
            await self._maybe_open_gate((delta, image, manifest))
        finally:
            # The loader's own reference moves to the new image only after hand-off.
            old, self._image = self._image, image
            old.release()
        if self.manage_gc and manifest.source == "snapshot":
            freeze_now()

    async def _maybe_open_gate(
        self, update: tuple[MetadataDelta, MetadataImage, LoadManifest] | None
    ) -> None:
        if not self._caught_up.is_set():
            hwm = self._hwm
            if hwm is None or self._next_offset < hwm or self._records_read == 0:
                return
            self._caught_up.set()
            logger.info("loader_caught_up", loader=self.name, offset=self._next_offset - 1, hwm=hwm)
            if self.manage_gc:
                freeze_now()  # what catching up built lives long: out of the collector's way
            if update is None:
                # The gate opened on an image applied earlier (a snapshot at HWM-1).
                image = self._image
                manifest = LoadManifest.of_image(image)
                await self.publisher.publish(MetadataDelta(image), image, manifest)
                return
        if update is not None:
            await self.publisher.publish(*update)
