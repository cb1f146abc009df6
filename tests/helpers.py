"""Consumers and builders shared by the pipeline tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import anyio

from broker.metadata import MetadataDelta, MetadataImage, Provenance
from broker.metadata.pipeline import ImageHolder, MetadataUpdate
from broker.metadata.records import MetadataRecord, PartitionRecord, RecordBatch, TopicRecord


class RecordingConsumer:
    """Keeps the newest image in a holder and records what it was given."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.holder = ImageHolder(name)
        self.offsets: list[int] = []
        self.manifests: list[str] = []
        self.deltas: list[MetadataDelta | None] = []
        self.coalesced = 0

    @property
    def name(self) -> str:
        return self._name

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        self.holder.set(update.image)
        self.offsets.append(update.image.offset)
        self.manifests.append(update.manifest.source)
        self.deltas.append(update.delta)
        self.coalesced += update.coalesced

    async def wait_for(self, offset: int) -> None:
        with await self.holder.wait_for_offset(offset):
            pass

    def close(self) -> None:
        self.holder.close()


class BlockingConsumer(RecordingConsumer):
    """Blocks in its callback until ``release`` is set (forever if never)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = anyio.Event()
        self.entered = anyio.Event()

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        self.entered.set()
        await self.release.wait()
        await super().on_metadata_update(update)


class FailingConsumer(RecordingConsumer):
    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        self.offsets.append(update.image.offset)
        raise RuntimeError(f"consumer bug at {update.image.offset}")


def topic_records(
    topic_id: uuid.UUID, name: str, partitions: int, leader: int = 1
) -> list[MetadataRecord]:
    records: list[MetadataRecord] = [TopicRecord(name=name, topic_id=topic_id)]
    records += [
        PartitionRecord(
            partition_id=p, topic_id=topic_id, replicas=(1, 2), isr=(1, 2), leader=leader
        )
        for p in range(partitions)
    ]
    return records


def replay_batches(batches: Iterable[RecordBatch]) -> MetadataImage:
    """The image a full replay of ``batches`` gives (one delta; owned by the caller)."""
    delta = MetadataDelta(MetadataImage.EMPTY)
    last: RecordBatch | None = None
    for batch in batches:
        delta.replay_all(batch.records, batch.base_offset)
        last = batch
    assert last is not None
    return delta.apply(Provenance(last.last_offset, last.epoch, last.append_time_ms))
