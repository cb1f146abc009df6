"""Cost of producing the next image, against a naive copy-per-version baseline.

For N = 10k, 100k, 1M partitions and k = 100 changed partitions it measures, in one run:

* our replay of k PartitionChange records into a delta (the same work any design does)
* our apply of that delta into the next image (persistent maps, structural sharing)
* the baseline for apply: copy a plain ``dict`` of N partitions, then set the k new values
* the memory one more retained image costs (tracemalloc), ours and the baseline's

then the replay throughput of a PartitionChange-heavy log at 100k partitions, with the
interpreter's default GC thresholds (unmanaged, and managed as the loader does by
default: see ``broker._gc``) and with ``broker.tune_gc()``: ``--replay-repeat`` runs of
each, the three settings taking turns, medians and the runs' range printed.

Targets (issue "Foundation"): at N = 1M >= 100x faster than the baseline and <= 1 MiB per
extra image; replay >= 200k records/s on one core (below 100k is a defect).

    python3 dev bench delta_apply [--sizes 10000,100000,1000000] [--repeat 15]
                                  [--replay-repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import nullcontext

from broker import IMAGE_FRIENDLY_GC_THRESHOLDS, tune_gc
from broker._gc import collection_paused, freeze_new, freeze_now
from broker.metadata import MetadataDelta, MetadataImage, Provenance
from broker.metadata.records import (
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    TopicRecord,
)

PARTITIONS_PER_TOPIC = 100
CHANGED = 100


def topic_ids(partitions: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=i + 1) for i in range(partitions // PARTITIONS_PER_TOPIC)]


def build_image(topics: list[uuid.UUID]) -> MetadataImage:
    """An image with len(topics) * 100 partitions, replayed in chunks to bound memory."""

    def records(chunk: list[uuid.UUID]) -> Iterator[MetadataRecord]:
        for topic_id in chunk:
            yield TopicRecord(name=f"topic-{topic_id.int}", topic_id=topic_id)
            for p in range(PARTITIONS_PER_TOPIC):
                yield PartitionRecord(
                    partition_id=p,
                    topic_id=topic_id,
                    replicas=(1, 2, 3),
                    isr=(1, 2, 3),
                    leader=1 + p % 3,
                    leader_epoch=0,
                    partition_epoch=0,
                )

    image = MetadataImage.EMPTY
    for start in range(0, len(topics), 500):
        delta = MetadataDelta(image)
        delta.replay_all(records(topics[start : start + 500]))
        next_image = delta.apply(Provenance(start, 1, 0))
        image.release()
        image = next_image
    return image


def changes(rng: random.Random, topics: list[uuid.UUID], count: int) -> list[MetadataRecord]:
    out: list[MetadataRecord] = []
    for i in range(count):
        topic_id = rng.choice(topics)
        partition = rng.randrange(PARTITIONS_PER_TOPIC)
        if i % 2:
            out.append(
                PartitionChangeRecord(
                    partition_id=partition, topic_id=topic_id, leader=rng.randint(1, 3)
                )
            )
        else:
            out.append(PartitionChangeRecord(partition_id=partition, topic_id=topic_id, isr=(1, 2)))
    return out


def next_image(
    image: MetadataImage, records: list[MetadataRecord], managed: bool = False
) -> MetadataImage:
    """The image after ``records`` (``managed``: with what the loader does for the
    collector, a freeze after the batch's replay and the apply with it paused)."""
    delta = MetadataDelta(image)
    delta.replay_all(records)
    if managed:
        freeze_new()
    with collection_paused() if managed else nullcontext():
        return delta.apply(Provenance(image.offset + len(records), 1, 0))


Key = tuple[uuid.UUID, int]


def baseline_dict(image: MetadataImage) -> dict[Key, object]:
    return {
        (topic_id, p): partition
        for topic_id, topic in image.topics.by_id.items()
        for p, partition in topic.partitions.items()
    }


def naive_next(version: dict[Key, object], changed: dict[Key, object]) -> dict[Key, object]:
    copy = dict(version)  # the whole map, every version
    copy.update(changed)
    return copy


def changed_partitions(delta: MetadataDelta) -> dict[Key, object]:
    """The new partition values a delta holds: what the baseline stores per version."""
    topics = delta.topics
    assert topics is not None
    return {
        (topic_id, p): partition
        for topic_id, topic in topics.changed.items()
        for p, partition in topic.partitions.items()
    }


def time_versions(
    base: MetadataImage,
    topics: list[uuid.UUID],
    repeat: int,
    rng: random.Random,
    managed: bool = False,
) -> tuple[list[float], list[float], list[dict[Key, object]]]:
    """Replay and apply times of ``repeat`` fresh deltas on ``base``, and their changes
    (``managed``: the apply with the collector paused, as the loader applies)."""
    replay, apply, changed = [], [], []
    for _ in range(repeat):
        records = changes(rng, topics, CHANGED)
        started = time.perf_counter()
        delta = MetadataDelta(base)
        delta.replay_all(records)
        replayed = time.perf_counter()
        with collection_paused() if managed else nullcontext():
            image = delta.apply(Provenance(1, 1, 0))
        applied = time.perf_counter()
        image.release()
        replay.append(replayed - started)
        apply.append(applied - replayed)
        changed.append(changed_partitions(delta))
    return replay, apply, changed


def measure_apply(partitions: int, repeat: int, rng: random.Random) -> dict[str, float]:
    """Median times of replaying k changes, of applying them, and of the naive version.

    Ours runs before the baseline: a 1M-entry dict copy between two of our applies would
    evict the caches our apply works in and charge part of the baseline's cost to us.
    """
    topics = topic_ids(partitions)
    base = build_image(topics)
    baseline = baseline_dict(base)
    _, apply_default_gc, _ = time_versions(base, topics, repeat, rng)
    freeze_now()  # what the loader does once caught up
    try:
        _, apply_managed, _ = time_versions(base, topics, repeat, rng, managed=True)
    finally:
        gc.unfreeze()
    previous = tune_gc()
    try:
        replay, apply, changed = time_versions(base, topics, repeat, rng)
        naive = []
        for values in changed:
            started = time.perf_counter()
            copy = naive_next(baseline, values)
            naive.append(time.perf_counter() - started)
            del copy
    finally:
        tune_gc(previous)

    delta = MetadataDelta(base)
    delta.replay_all(changes(rng, topics, CHANGED))
    values = changed_partitions(delta)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    extra = delta.apply(Provenance(1, 1, 0))
    ours_bytes = tracemalloc.get_traced_memory()[0] - before
    before = tracemalloc.get_traced_memory()[0]
    extra_copy = naive_next(baseline, values)
    naive_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    extra.release()
    base.release()
    del extra_copy, baseline
    gc.collect()
    return {
        "replay_ms": statistics.median(replay) * 1e3,
        "apply_ms": statistics.median(apply) * 1e3,
        "apply_default_gc_ms": statistics.median(apply_default_gc) * 1e3,
        "apply_managed_ms": statistics.median(apply_managed) * 1e3,
        "naive_ms": statistics.median(naive) * 1e3,
        "ours_bytes": ours_bytes,
        "naive_bytes": naive_bytes,
    }


def measure_replay(
    partitions: int, records: int, per_image: int, rng: random.Random, repeat: int
) -> list[list[float]]:
    """Records/s replaying PartitionChange records into images of ``per_image`` records.

    Records are generated per image (outside the timed part), as a loader decodes them
    batch by batch, so the heap holds the image and one group, not the whole log.
    Returns ``repeat`` runs of each setting, the settings taking turns: default GC,
    default thresholds with the loader's managed freezing, tuned GC.
    """
    topics = topic_ids(partitions)
    base = build_image(topics)
    default = gc.get_threshold()
    settings = ((default, False), (default, True), (IMAGE_FRIENDLY_GC_THRESHOLDS, False))
    runs: list[list[float]] = [[] for _ in settings]
    for _ in range(repeat):
        for (thresholds, managed), results in zip(settings, runs, strict=True):
            results.append(replay_rate(base, topics, records, per_image, rng, thresholds, managed))
    base.release()
    return runs


def replay_rate(
    base: MetadataImage,
    topics: list[uuid.UUID],
    records: int,
    per_image: int,
    rng: random.Random,
    thresholds: tuple[int, int, int],
    managed: bool,
) -> float:
    """Records/s of one replay of ``records`` changes onto ``base`` (see measure_replay)."""
    previous = tune_gc(thresholds)
    image = base.retain()
    elapsed = 0.0
    if managed:
        freeze_now()  # what the loader does once caught up
    try:
        for _ in range(records // per_image):
            group = changes(rng, topics, per_image)
            started = time.perf_counter()
            new = next_image(image, group, managed)
            image.release()
            image = new
            elapsed += time.perf_counter() - started
    finally:
        image.release()
        tune_gc(previous)
        if managed:
            gc.unfreeze()
    return records / elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--replay-records", type=int, default=200_000)
    parser.add_argument(
        "--replay-repeat", type=int, default=3, help="runs of each replay setting (medians)"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]

    print(
        f"next image with k={CHANGED} changed partitions (median of {args.repeat}; "
        f"tuned GC unless marked)"
    )
    header = (
        f"{'partitions':>10} {'replay ms':>10} {'apply ms':>9} {'(default GC)':>13} "
        f"{'(managed)':>10} {'dict copy ms':>13} {'speedup':>8} {'managed':>8} "
        f"{'ours KiB/img':>13} {'copy KiB/img':>13}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for size in sizes:
        m = measure_apply(size, args.repeat, rng)
        speedup = m["naive_ms"] / m["apply_ms"]
        managed = m["naive_ms"] / m["apply_managed_ms"]
        print(
            f"{size:>10,} {m['replay_ms']:>10.3f} {m['apply_ms']:>9.3f} "
            f"{m['apply_default_gc_ms']:>13.3f} {m['apply_managed_ms']:>10.3f} "
            f"{m['naive_ms']:>13.3f} {speedup:>7.0f}x {managed:>7.0f}x "
            f"{m['ours_bytes'] / 1024:>13.1f} {m['naive_bytes'] / 1024:>13.1f}"
        )
        if size >= 1_000_000:
            ok &= min(speedup, managed) >= 100 and m["ours_bytes"] <= 1024 * 1024
    print()
    print(
        f"replay of PartitionChange records, 100k partitions, {args.replay_records:,} records "
        f"(median of {args.replay_repeat} runs, the settings taking turns; the runs' range)"
    )
    header = (
        f"{'records/image':>13} {'default GC rec/s':>26} {'managed rec/s':>26} "
        f"{'tuned GC rec/s':>26}"
    )
    print(header)
    print("-" * len(header))
    replay_met = False
    for per_image in (100, 1000, 10_000):
        runs = measure_replay(100_000, args.replay_records, per_image, rng, args.replay_repeat)
        medians = [statistics.median(rates) for rates in runs]
        cells = [
            f"{median:,.0f} ({min(rates) / 1000:,.0f}k-{max(rates) / 1000:,.0f}k)"
            for median, rates in zip(medians, runs, strict=True)
        ]
        print(f"{per_image:>13,} " + " ".join(f"{cell:>26}" for cell in cells))
        if per_image == 100:
            replay_met = medians[1] >= 200_000
    print()
    print(
        "speedup: the dict copy against our apply with tuned GC; managed: against our apply "
        "with default thresholds, the collector paused as the loader applies"
    )
    print(
        "targets: >= 100x the dict copy and <= 1 MiB per image at 1M partitions; "
        f"replay >= 200k records/s (tuned GC = broker.tune_gc{IMAGE_FRIENDLY_GC_THRESHOLDS})"
    )
    print("apply targets met" if ok else "apply targets NOT met")
    print("replay target (managed, 100 records/image) " + ("met" if replay_met else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
