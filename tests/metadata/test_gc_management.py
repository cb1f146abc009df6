"""The loader keeps the cyclic collector off the image heap: freezes at catch-up, after
snapshot loads and every so many records; a switch turns it off."""

from __future__ import annotations

import gc
import uuid
import weakref
from collections.abc import Iterator

import pytest

from broker.metadata.pipeline import (
    MetadataPipeline,
    gc_management,
    gc_statistics,
    set_gc_management,
)
from broker.metadata.pipeline import _collection as collection
from broker.metadata.records import PartitionChangeRecord
from broker.metadata.sources import InMemoryRecordSource
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


async def test_applied_records_refreeze_every_so_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collection, "REFREEZE_RECORDS", 10)
    before = gc_statistics().freezes
    async with MetadataPipeline(seeded_source(100), max_records_per_image=5) as pipeline:
        await pipeline.loader.wait_caught_up()
        assert gc_statistics().freezes - before >= 10  # 105 records, every 10, + catch-up
        assert gc_statistics().records_since_freeze < 10


def test_switching_off_unfreezes_and_stops_freezing() -> None:
    collection.freeze_now()
    assert gc.get_freeze_count() > 0
    assert set_gc_management(False) is True
    assert gc_management() is False
    assert gc.get_freeze_count() == 0
    before = gc_statistics().freezes
    collection.freeze_now()
    collection.records_applied(10**9)
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
