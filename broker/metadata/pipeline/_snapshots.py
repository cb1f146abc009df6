"""Snapshots of the published image, written by a consumer of its own."""

from __future__ import annotations

from broker.metadata.pipeline._updates import MetadataUpdate
from broker.metadata.sources import RecordLog

__all__ = ["SnapshotWriter"]


class SnapshotWriter:
    """A latest-image consumer that snapshots the image every ``every_records`` offsets.

    It runs on its own consumer task, so writing never blocks the loader (Kafka's
    snapshot generator queue). With ``truncate``, log below the snapshot is dropped.
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
        self.snapshots = 0

    @property
    def name(self) -> str:
        return self._name

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        image = update.image
        if image.offset - self.last_offset < self.every_records:
            return
        snapshot = await self.log.save_snapshot(image)
        self.last_offset = snapshot.provenance.offset
        self.snapshots += 1
        if self.truncate:
            await self.log.truncate_before(snapshot.provenance.offset + 1)
