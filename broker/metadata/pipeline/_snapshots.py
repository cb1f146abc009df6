"""Snapshots of the published image, written by a consumer of its own."""

from __future__ import annotations

from broker._tasks import Notifier
from broker.metadata.pipeline._updates import MetadataUpdate
from broker.metadata.sources import RecordLog

__all__ = ["SnapshotWriter"]


class SnapshotWriter:
    """A latest-image consumer that snapshots the image as the log grows.

    A snapshot is written once the log since the last one holds ``every_records``
    records, and at least as many records as that snapshot held: writing a snapshot
    costs the image's size, so a large image is snapshotted less often, and the log a
    restart replays stays no longer than a snapshot. It runs on its own consumer task
    and encodes in a worker thread, so writing never blocks the loader (Kafka's snapshot
    generator queue). With ``truncate``, log below the snapshot is dropped.
    """

    def __init__(
        self,
        log: RecordLog,
        *,
        every_records: int = 100_000,
        truncate: bool = True,
        name: str = "snapshot-writer",
    ) -> None:
        self.log = log
        self.every_records = every_records
        self.truncate = truncate
        self._name = name
        self.last_offset = -1
        self.last_records = 0
        """Records the last snapshot held."""
        self.snapshots = 0
        self.seen_offset = -1
        """Offset of the newest image the writer considered (snapshotted or not due)."""
        self._seen = Notifier()

    @property
    def name(self) -> str:
        """The consumer's name."""
        return self._name

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        """Write a snapshot of ``update.image`` when enough log has grown since the last."""
        image = update.image
        try:
            if image.offset - self.last_offset < max(self.every_records, self.last_records):
                return
            snapshot = await self.log.save_snapshot(image)
            self.last_offset = snapshot.provenance.offset
            self.last_records = snapshot.records
            self.snapshots += 1
            if self.truncate:
                await self.log.truncate_before(snapshot.provenance.offset + 1)
        finally:
            self.seen_offset = max(self.seen_offset, image.offset)
            self._seen.notify()

    async def wait_for_offset(self, offset: int) -> None:
        """Wait until the writer considered the image at ``offset`` or a later one: a
        snapshot that was due is then written, or failed, or was stopped by the writer's
        removal. Closing the pipeline stops a snapshot being written; an application that
        wants it waits here first."""
        while self.seen_offset < offset:
            await self._seen.wait()
