"""Transaction markers follow Kafka's rules, so published images are a function of the
log alone: however the loader happens to read it, it publishes the same image at every
offset two readings have in common."""

from __future__ import annotations

import itertools
import uuid

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from broker.metadata.pipeline import DeliveryMode, MetadataPipeline, MetadataUpdate
from broker.metadata.records import (
    AbortTransactionRecord,
    BeginTransactionRecord,
    EndTransactionRecord,
    MetadataRecord,
    TopicRecord,
)
from broker.metadata.sources import InMemoryRecordSource
from tests.strategies import record_sequences

MARKERS: list[MetadataRecord] = [
    BeginTransactionRecord(name="t"),
    EndTransactionRecord(),
    AbortTransactionRecord(),
]


class ImagesByOffset:
    """Every published image, as the records it writes, by offset."""

    def __init__(self) -> None:
        self.images: dict[int, tuple[MetadataRecord, ...]] = {}

    @property
    def name(self) -> str:
        return "images"

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        self.images[update.image.offset] = tuple(update.image.write())


async def publish(
    batches: list[list[MetadataRecord]], pauses: set[int], per_image: int
) -> dict[int, tuple[MetadataRecord, ...]]:
    """Append ``batches`` to a running pipeline, letting the loader read all it has
    after each batch index in ``pauses`` (so reads group batches differently)."""
    source = InMemoryRecordSource()
    consumer = ImagesByOffset()
    async with MetadataPipeline(source, max_records_per_image=per_image) as pipeline:
        pipeline.add_consumer(consumer, DeliveryMode.EVERY_DELTA, queue_size=10_000)
        for index, batch in enumerate(batches):
            source.append_nowait(batch)
            if index in pauses:
                await anyio.wait_all_tasks_blocked()
        await anyio.wait_all_tasks_blocked()
    return consumer.images


def cut(log: list[MetadataRecord], cuts: set[int]) -> list[list[MetadataRecord]]:
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(log)), len(log)]
    return [log[a:b] for a, b in itertools.pairwise(bounds) if a < b]


@pytest.mark.slow  # about 35 s: every example runs two pipelines
@settings(max_examples=60)
@given(record_sequences(), st.data())
def test_any_chunking_of_any_log_publishes_the_same_images(
    records: list[MetadataRecord], data: st.DataObject
) -> None:
    log = list(records)
    for _ in range(data.draw(st.integers(0, 6), label="markers")):
        at = data.draw(st.integers(0, len(log)), label="marker position")
        log.insert(at, data.draw(st.sampled_from(MARKERS), label="marker"))
    if not log:
        return
    readings = []
    for name in ("first", "second"):
        cuts = data.draw(st.sets(st.integers(1, len(log)), max_size=10), label=f"{name} cuts")
        batches = cut(log, cuts)
        pauses = data.draw(st.sets(st.integers(0, len(batches))), label=f"{name} pauses")
        per_image = data.draw(st.integers(1, 12), label=f"{name} records per image")
        with capture_logs():
            readings.append(anyio.run(publish, batches, pauses, per_image))
    first, second = readings
    for offset in first.keys() & second.keys():
        assert first[offset] == second[offset], offset


def topic(name: str) -> TopicRecord:
    return TopicRecord(name=name, topic_id=uuid.uuid5(uuid.NAMESPACE_DNS, name))


async def test_an_abort_without_begin_is_a_replay_error_and_discards_nothing() -> None:
    for pauses in (set(), {0}):  # read in one go, or one batch per read
        with capture_logs() as logs:
            images = await publish([[topic("a")], [AbortTransactionRecord()]], pauses, 100)
        final = images[max(images)]
        assert topic("a") in final
        errors = [e for e in logs if e["event"] == "replay_error"]
        assert [(e["offset"], e["record_type"]) for e in errors] == [(1, "AbortTransactionRecord")]


async def test_a_second_begin_does_not_publish_the_open_transaction() -> None:
    log: list[list[MetadataRecord]] = [
        [BeginTransactionRecord(), topic("a")],
        [BeginTransactionRecord(), topic("b")],
        [AbortTransactionRecord()],
        [topic("c")],
    ]
    with capture_logs() as logs:
        images = await publish(log, {0, 1, 2, 3}, 100)
    final = images[max(images)]
    # The second Begin is an error; the Abort undoes the whole transaction (a and b).
    assert topic("a") not in final
    assert topic("b") not in final
    assert topic("c") in final
    assert not any(topic("a") in image for image in images.values())
    assert [e["record_type"] for e in logs if e["event"] == "replay_error"] == [
        "BeginTransactionRecord"
    ]


async def test_an_end_without_begin_is_a_replay_error() -> None:
    with capture_logs() as logs:
        images = await publish([[topic("a"), EndTransactionRecord(), topic("b")]], set(), 100)
    final = images[max(images)]
    assert topic("a") in final
    assert topic("b") in final
    assert [e["offset"] for e in logs if e["event"] == "replay_error"] == [1]
