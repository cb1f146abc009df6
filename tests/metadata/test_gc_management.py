"""The loader keeps the cyclic collector off the image heap: it freezes what each batch
and each apply allocated, collects young garbage at catch-up and after snapshot loads,
and the whole heap once it grew enough; a switch turns it off."""

from __future__ import annotations

import gc
import math
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import _gc as collection
from broker.metadata import Provenance
from broker.metadata.pipeline import (
    MetadataPipeline,
    gc_management,
    gc_statistics,
    set_gc_management,
)
from broker.metadata.records import PartitionChangeRecord, RecordBatch
from broker.metadata.sources import FileRecordLog, InMemoryRecordSource, Snapshot
from tests.helpers import topic_records

A = uuid.UUID(int=1)


@pytest.fixture(autouse=True)
def managed() -> Iterator[None]:
    previous = set_gc_management(True)
    yield
    set_gc_management(previous)
    gc.unfreeze()


def seeded_source(changes: int) -> InMemoryRecordSource:
    source = InMemoryRecordSource()
    source.append_nowait(topic_records(A, "orders", 4))
    for i in range(changes):
        source.append_nowait([PartitionChangeRecord(partition_id=i % 4, topic_id=A, leader=i % 3)])
    return source


class Cycle:
    """Cyclic garbage: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


async def test_catching_up_freezes_what_it_built() -> None:
    gc.unfreeze()
    before = gc_statistics().freezes
    async with MetadataPipeline(seeded_source(20)) as pipeline:
        await pipeline.loader.wait_caught_up()
        assert gc_statistics().freezes > before
        assert gc.get_freeze_count() > 0


async def test_manage_gc_false_leaves_the_collector_alone() -> None:
    gc.unfreeze()
    before = gc_statistics().freezes
    async with MetadataPipeline(seeded_source(20), manage_gc=False) as pipeline:
        await pipeline.loader.wait_caught_up()
    assert gc_statistics().freezes == before
    assert gc.get_freeze_count() == 0


def frozen(obj: object) -> bool:
    """Tracked by the collector, yet in none of its generations: frozen."""
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())


async def test_what_each_image_allocated_is_frozen_at_once() -> None:
    source = seeded_source(0)
    async with MetadataPipeline(source) as pipeline:
        await pipeline.loader.wait_caught_up()
        before = gc_statistics().freezes
        for leader in (1, 2, 3):
            await source.append([PartitionChangeRecord(partition_id=0, topic_id=A, leader=leader)])
        with await pipeline.wait_for_offset(source.next_offset - 1) as image:
            topic = image.topics.by_id[A]
            assert topic.partitions[0].leader == 3
            assert frozen(topic)
            assert frozen(topic.partitions[0])
        assert gc_statistics().freezes - before >= 3  # a batch and an image each


def test_an_apply_runs_with_the_collector_paused() -> None:
    assert gc.isenabled()
    with collection.collection_paused():
        assert not gc.isenabled()
        made = [Cycle()]
    assert gc.isenabled()
    assert frozen(made)
    gc.disable()
    try:
        with collection.collection_paused():
            pass
        assert not gc.isenabled()  # the application's own choice stands
    finally:
        gc.enable()


def all_frozen(objects: list[object]) -> bool:
    generations = {id(o) for o in gc.get_objects()}
    return all(gc.is_tracked(o) and id(o) not in generations for o in objects)


def changes_snapshot(count: int) -> bytes:
    records = (*topic_records(A, "orders", 4), *changes(count))
    return Snapshot(Provenance(len(records) - 1, 1, 0), records).to_bytes()


def changes(count: int) -> list[PartitionChangeRecord]:
    return [
        PartitionChangeRecord(partition_id=i % 4, topic_id=A, leader=i % 3) for i in range(count)
    ]


@pytest.mark.parametrize("managed", [True, False])
def test_a_trusted_snapshot_decodes_with_the_collector_paused_and_freezes_it(
    managed: bool,
) -> None:
    # Thousands of records, all kept: young collections would walk them for nothing.
    data = changes_snapshot(3000)
    set_gc_management(managed)
    gc.unfreeze()
    snapshot = Snapshot.from_bytes(data, name="s", trusted=True)
    assert all_frozen(list(snapshot.records)) is managed
    gc.unfreeze()
    checked = Snapshot.from_bytes(data, name="s")  # from elsewhere: the collector as is
    assert not all_frozen(list(checked.records))


async def test_a_file_log_read_decodes_with_the_collector_paused(tmp_path: Path) -> None:
    async with await FileRecordLog.open(tmp_path, fsync="never") as log:
        await log.append_batches([RecordBatch(i, 1, 0, (r,)) for i, r in enumerate(changes(1500))])
    async with await FileRecordLog.open(tmp_path, fsync="never") as log:
        gc.unfreeze()
        batches = await log.read(0, 1500)  # from the file: the log was reopened
    assert sum(b.record_count for b in batches) == 1500
    # What the read decoded: the records as replay takes them (see RecordView).
    decoded: list[object] = [r for b in batches for r in b.replayable]
    assert all_frozen(decoded)


def test_cycles_frozen_young_are_freed_once_the_heap_grew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every freeze looks at the heap; neither growth nor the timer is due yet.
    monkeypatch.setattr(collection, "CHECK_EVERY", 0.0)
    monkeypatch.setattr(collection, "HEAP_GROWTH", math.inf)
    monkeypatch.setattr(collection, "UNFREEZE_AFTER", math.inf)
    garbage = Cycle()
    ref = weakref.ref(garbage)
    del garbage
    full = gc_statistics().full_collections
    collection.freeze_new()  # no collection: the young cycle is frozen with the rest
    gc.collect()
    assert ref() is not None
    assert gc_statistics().full_collections == full
    monkeypatch.setattr(collection, "HEAP_GROWTH", -1.0)  # any heap has "grown"
    collection.freeze_new(catching_up=True)  # a catch-up grows the heap with its image
    assert gc_statistics().full_collections == full
    collection.freeze_new()
    assert ref() is None
    assert gc_statistics().full_collections == full + 1
    assert gc.get_freeze_count() > 0  # and what is alive is frozen again


def test_switching_off_unfreezes_and_stops_freezing() -> None:
    collection.freeze_now()
    assert gc.get_freeze_count() > 0
    assert set_gc_management(False) is True
    assert gc_management() is False
    assert gc.get_freeze_count() == 0
    before = gc_statistics().freezes
    collection.freeze_now()
    collection.freeze_new()
    with collection.collection_paused():
        assert gc.isenabled()
    assert gc_statistics().freezes == before
    assert gc.get_freeze_count() == 0


def test_frozen_cycles_are_collected_at_the_next_whole_heap_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    garbage = Cycle()
    ref = weakref.ref(garbage)
    collection.freeze_now()  # `garbage` is alive here: it is frozen with the rest
    del garbage
    gc.collect()
    assert ref() is not None  # frozen: the collector does not see it
    full = gc_statistics().full_collections
    monkeypatch.setattr(collection, "UNFREEZE_AFTER", 0.0)
    collection.freeze_now()
    assert ref() is None
    assert gc_statistics().full_collections == full + 1


def test_a_freeze_collects_young_garbage_first() -> None:
    garbage = Cycle()
    ref = weakref.ref(garbage)
    del garbage
    collection.freeze_now()
    assert ref() is None  # collected, not frozen
    stats = gc_statistics()
    assert stats.longest_pause >= stats.last_pause >= 0.0
