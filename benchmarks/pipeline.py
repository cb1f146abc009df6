"""End-to-end records/s through the pipeline, against replay alone, in one run.

A synthetic controller log is loaded three ways, each with the same grouping of batches
into images:

* replay alone: deltas replayed and applied in a loop, nothing published
* pipeline from memory: InMemoryRecordSource -> loader -> publisher -> three consumers
  (a latest-image cache, an every-delta stream manager, a latest-image snapshot-like
  reader), timed until every consumer holds the last image
* pipeline from the file log: the same, reading and decoding a FileRecordLog

Two shapes: "catch-up" (the whole log is there at start: big groups, few images) and
"live" (batches arrive one by one: an image per batch, the publisher's worst case).
Target (issue "Loader and publisher"): publishing overhead <= 25% over replay alone.

    python3 dev bench pipeline [--events 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
from anyio.lowlevel import checkpoint

from broker.metadata import MetadataDelta, MetadataImage, Provenance
from broker.metadata.pipeline import DeliveryMode, ImageHolder, MetadataPipeline, MetadataUpdate
from broker.metadata.records import RecordBatch
from broker.metadata.sources import FileRecordLog, InMemoryRecordSource, RecordSource
from broker.sim import SyntheticController, WorkloadConfig


class HoldingConsumer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.holder = ImageHolder(name)

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        self.holder.set(update.image)


def replay_alone(batches: list[RecordBatch], per_image: int) -> float:
    started = time.perf_counter()
    image = MetadataImage.EMPTY
    group: list[RecordBatch] = []
    count = 0

    def flush() -> None:
        nonlocal image, group, count
        delta = MetadataDelta(image)
        for batch in group:
            delta.replay_all(batch.records, batch.base_offset)
        last = group[-1]
        new = delta.apply(Provenance(last.last_offset, last.epoch, last.append_time_ms))
        image.release()
        image, group, count = new, [], 0

    for batch in batches:
        if group and count + len(batch.records) > per_image:
            flush()
        group.append(batch)
        count += len(batch.records)
    if group:
        flush()
    image.release()
    return time.perf_counter() - started


async def through_pipeline(
    source: RecordSource,
    last_offset: int,
    per_image: int,
    feed: Callable[[], Awaitable[None]] | None,
) -> float:
    consumers = [
        HoldingConsumer("cache"),
        HoldingConsumer("stream-manager"),
        HoldingConsumer("snapshots"),
    ]
    modes = [DeliveryMode.LATEST_IMAGE, DeliveryMode.EVERY_DELTA, DeliveryMode.LATEST_IMAGE]
    started = time.perf_counter()
    async with MetadataPipeline(source, max_records_per_image=per_image) as pipeline:
        for consumer, mode in zip(consumers, modes, strict=True):
            pipeline.add_consumer(consumer, mode, queue_size=64)
        if feed is not None:
            await feed()
        for consumer in consumers:
            with await consumer.holder.wait_for_offset(last_offset):
                pass
    elapsed = time.perf_counter() - started
    for consumer in consumers:
        consumer.holder.close()
    return elapsed


async def feed_one_by_one(source: InMemoryRecordSource, batches: list[RecordBatch]) -> None:
    for batch in batches:
        source.append_batch_nowait(batch)
        await checkpoint()


async def measure(
    batches: list[RecordBatch], directory: Path
) -> list[tuple[str, str, float, float]]:
    records = sum(len(b.records) for b in batches)
    last = batches[-1].last_offset
    rows = []
    for shape, per_image in (("catch-up", 10_000), ("live", 1)):
        alone = replay_alone(batches, per_image)

        memory = InMemoryRecordSource()
        feed: Callable[[], Awaitable[None]] | None = None
        if shape == "catch-up":
            memory.extend(batches)
        else:
            feed = partial(feed_one_by_one, memory, batches)
        in_memory = await through_pipeline(memory, last, per_image, feed)

        path = directory / shape
        async with await FileRecordLog.open(path, fsync="never") as writer:
            for batch in batches:
                await writer.append_batch(batch)
        async with await FileRecordLog.open(path, fsync="never") as log:
            from_file = await through_pipeline(log, last, per_image, None)
        rows.append((shape, "replay alone", records / alone, 0.0))
        rows.append((shape, "pipeline, memory", records / in_memory, in_memory / alone - 1))
        rows.append((shape, "pipeline, file log", records / from_file, from_file / alone - 1))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    controller = SyntheticController(
        WorkloadConfig(seed=args.seed, topics=100, partitions_per_topic=20)
    )
    batches = list(controller.batches(args.events))
    records = sum(len(b.records) for b in batches)
    print(f"{len(batches):,} batches, {records:,} records, 3 consumers, default GC settings")
    with tempfile.TemporaryDirectory() as directory:
        rows = anyio.run(measure, batches, Path(directory))
    header = f"{'shape':<9} {'path':<20} {'records/s':>11} {'overhead vs replay':>19}"
    print(header)
    print("-" * len(header))
    ok = True
    for shape, path, rate, overhead in rows:
        note = "" if path == "replay alone" else f"{overhead:>18.0%}"
        print(f"{shape:<9} {path:<20} {rate:>11,.0f} {note:>19}")
        if path == "pipeline, memory":
            ok &= overhead <= 0.25
    print()
    print("target: publishing overhead (memory) <= 25%:", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
