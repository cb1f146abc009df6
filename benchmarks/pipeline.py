"""End-to-end records/s through the pipeline, against replay alone, in one run.

A synthetic controller log is loaded three ways:

* replay alone: deltas replayed and applied in a loop, nothing published (with the
  loader's managed GC, so both sides run under the same collector policy)
* pipeline from memory: InMemoryRecordSource -> loader -> publisher -> three consumers
  (a latest-image cache, an every-delta stream manager, a latest-image snapshot-like
  reader), timed until every consumer holds the last image
* pipeline from the file log (``fsync never``): the same, through a FileRecordLog (for
  catch-up, opening the log counts too: a restart opens the log, then catches up; the
  row "after a crash" opens it without the frame index a clean close leaves, so every
  frame is checked first)

Two shapes:

* "catch-up": the whole log is there at start; everything runs in groups of 10k records.
* "live": batches are appended one by one (a checkpoint after each) while the pipeline
  runs, with the loader's default ``max_records_per_image``: the loader folds whatever
  arrived while it was busy into one image. Replay alone makes one image per batch,
  what a loop that applies each batch as it comes does.

The interpreter's default GC settings throughout (no ``tune_gc()``).
Targets (issue "Replay at 200k records/s"): catch-up from the file log >= 150k
records/s; live from memory <= 25% over replay alone; live from the file log <= 100%.

Every row is run ``--repeat`` times (the rows of one run after each other, then the next
run); the table gives the median records/s, the runs' range, and the median of each
run's overhead over that run's replay alone.

    python3 dev bench pipeline [--events 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

from broker._gc import collection_paused, freeze_new
from broker.metadata import MetadataDelta, MetadataImage, Provenance
from broker.metadata.pipeline import DeliveryMode, ImageHolder, MetadataPipeline, MetadataUpdate
from broker.metadata.records import RecordBatch
from broker.metadata.sources import FileRecordLog, InMemoryRecordSource, RecordSource
from broker.metadata.sources._file_log import CHECKPOINT_NAME
from broker.metadata.sources._source import take_batches
from broker.sim import SyntheticController, WorkloadConfig

PER_IMAGE = 10_000
"""The loader's default max_records_per_image."""


class HoldingConsumer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.holder = ImageHolder(name)

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        self.holder.set(update.image)


def replay_alone(batches: list[RecordBatch], per_image: int) -> tuple[float, int]:
    """Seconds to replay ``batches`` grouped as a source's read groups them (up to
    ``per_image`` records, at least a batch), and how many images that made."""
    started = time.perf_counter()
    image = MetadataImage.EMPTY
    images = taken = 0
    while taken < len(batches):
        # A group holds at most per_image batches (each holds a record).
        group = take_batches(batches[taken : taken + per_image], per_image)
        taken += len(group)
        delta = MetadataDelta(image)
        for batch in group:
            delta.replay_all(batch.records, batch.base_offset)
            freeze_new()  # what the loader does after each batch
        last = group[-1]
        with collection_paused():  # and around each apply
            new = delta.apply(Provenance(last.last_offset, last.epoch, last.append_time_ms))
        image.release()
        image = new
        images += 1
    image.release()
    return time.perf_counter() - started, images


Feed = Callable[[], Coroutine[Any, Any, None]]


async def through_pipeline(
    source: RecordSource, last_offset: int, feed: Feed | None
) -> tuple[float, int]:
    """Seconds until every consumer holds the image at ``last_offset``, and images."""
    consumers = [
        HoldingConsumer("cache"),
        HoldingConsumer("stream-manager"),
        HoldingConsumer("snapshots"),
    ]
    modes = [DeliveryMode.LATEST_IMAGE, DeliveryMode.EVERY_DELTA, DeliveryMode.LATEST_IMAGE]
    started = time.perf_counter()
    async with MetadataPipeline(source, max_records_per_image=PER_IMAGE) as pipeline:
        for consumer, mode in zip(consumers, modes, strict=True):
            pipeline.add_consumer(consumer, mode, queue_size=64)
        async with anyio.create_task_group() as task_group:
            if feed is not None:
                task_group.start_soon(feed)
            for consumer in consumers:
                with await consumer.holder.wait_for_offset(last_offset):
                    pass
        images = pipeline.statistics().images_published
    elapsed = time.perf_counter() - started
    for consumer in consumers:
        consumer.holder.close()
    return elapsed, images


async def catch_up_from_file(path: Path, last_offset: int) -> tuple[float, int]:
    """Seconds to open the log at ``path`` and catch up to ``last_offset``, and images."""
    opening = time.perf_counter()
    async with await FileRecordLog.open(path, fsync="never") as log:
        opened = time.perf_counter() - opening
        elapsed, images = await through_pipeline(log, last_offset, None)
    return opened + elapsed, images


async def feed_memory(source: InMemoryRecordSource, batches: list[RecordBatch]) -> None:
    for batch in batches:
        source.append_batch_nowait(batch)
        await checkpoint()


async def feed_file(log: FileRecordLog, batches: list[RecordBatch]) -> None:
    for batch in batches:
        await log.append_batch(batch)
        await checkpoint()


Row = tuple[str, str, float, int, float]
"""shape, path, records/s, images, overhead over replay alone (of the same repetition)"""


async def measure(batches: list[RecordBatch], directory: Path) -> list[Row]:
    records = sum(len(b.records) for b in batches)
    last = batches[-1].last_offset
    rows: list[Row] = []
    for shape in ("catch-up", "live"):
        live = shape == "live"
        per_batch = 1 if live else PER_IMAGE
        alone, alone_images = replay_alone(batches, per_batch)

        memory = InMemoryRecordSource()
        if live:
            in_memory, memory_images = await through_pipeline(
                memory, last, partial(feed_memory, memory, batches)
            )
        else:
            memory.extend(batches)
            in_memory, memory_images = await through_pipeline(memory, last, None)

        path = directory / shape
        if live:
            async with await FileRecordLog.open(path, fsync="never") as log:
                from_file, file_images = await through_pipeline(
                    log, last, partial(feed_file, log, batches)
                )
        else:
            async with await FileRecordLog.open(path, fsync="never") as writer:
                await writer.append_batches(batches)
            # A restart after a crash (no frame index left by a close: every frame is
            # checked), then one after the clean close that ends it; each pays for
            # opening the log.
            (path / CHECKPOINT_NAME).unlink()
            crashed, _ = await catch_up_from_file(path, last)
            from_file, file_images = await catch_up_from_file(path, last)
        rows.append((shape, "replay alone", records / alone, alone_images, 0.0))
        rows.append(
            (shape, "pipeline, memory", records / in_memory, memory_images, in_memory / alone - 1)
        )
        rows.append(
            (shape, "pipeline, file log", records / from_file, file_images, from_file / alone - 1)
        )
        if not live:
            rows.append(
                (shape, "  after a crash", records / crashed, file_images, crashed / alone - 1)
            )
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of every row; medians are reported"
    )
    args = parser.parse_args(argv)
    controller = SyntheticController(
        WorkloadConfig(seed=args.seed, topics=100, partitions_per_topic=20)
    )
    batches = list(controller.batches(args.events))
    records = sum(len(b.records) for b in batches)
    print(
        f"{len(batches):,} batches, {records:,} records, 3 consumers, default GC settings, "
        f"median of {args.repeat} runs (each row's runs interleaved with the others')"
    )
    runs: list[list[Row]] = []
    with tempfile.TemporaryDirectory() as directory:
        for run in range(args.repeat):
            runs.append(anyio.run(measure, batches, Path(directory) / str(run)))
    header = (
        f"{'shape':<9} {'path':<20} {'records/s':>11} {'runs, records/s':>19} {'images':>8} "
        f"{'overhead vs replay':>19}"
    )
    print(header)
    print("-" * len(header))
    verdicts = []
    for row_runs in zip(*runs, strict=True):
        shape, path = row_runs[0][:2]
        images = round(statistics.median(row[3] for row in row_runs))
        rates = [row[2] for row in row_runs]
        rate = statistics.median(rates)
        overhead = statistics.median(row[4] for row in row_runs)
        spread = f"{min(rates) / 1000:,.0f}k-{max(rates) / 1000:,.0f}k"
        note = "" if path == "replay alone" else f"{overhead:>18.0%}"
        print(f"{shape:<9} {path:<20} {rate:>11,.0f} {spread:>19} {images:>8,} {note:>19}")
        if (shape, path) == ("catch-up", "pipeline, file log"):
            verdicts.append(("catch-up from the file log >= 150k records/s", rate >= 150_000))
        if (shape, path) == ("live", "pipeline, memory"):
            verdicts.append(("live from memory <= 25% over replay alone", overhead <= 0.25))
        if (shape, path) == ("live", "pipeline, file log"):
            verdicts.append(("live from the file log <= 100% over replay alone", overhead <= 1.0))
    print()
    for target, met in verdicts:
        print(f"target: {target}: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
