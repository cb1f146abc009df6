"""``python -m broker.sim``: generate a synthetic metadata log and replay it into images."""

from __future__ import annotations

import argparse
import sys
import time

from broker import tune_gc
from broker.metadata import MetadataDelta, MetadataImage, Provenance
from broker.sim._workload import SyntheticController, WorkloadConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="broker-sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=20_000, help="churn events after bootstrap")
    parser.add_argument("--brokers", type=int, default=6)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--partitions-per-topic", type=int, default=20)
    args = parser.parse_args(argv)
    tune_gc()
    config = WorkloadConfig(
        seed=args.seed,
        brokers=args.brokers,
        topics=args.topics,
        partitions_per_topic=args.partitions_per_topic,
    )
    batches = list(SyntheticController(config).batches(args.events))
    records = sum(len(b.records) for b in batches)
    image = MetadataImage.EMPTY
    started = time.perf_counter()
    for batch in batches:
        delta = MetadataDelta(image)
        delta.replay_all(batch.records, batch.base_offset)
        next_image = delta.apply(Provenance(batch.last_offset, batch.epoch, batch.append_time_ms))
        image.release()
        image = next_image
    elapsed = time.perf_counter() - started
    with image:
        print(f"offset       {image.offset}")
        alive = len(image.cluster.alive_broker_ids())
        print(f"brokers      {len(image.cluster.brokers)} ({alive} alive)")
        print(f"topics       {len(image.topics.by_id)}")
        print(f"partitions   {image.topics.partition_count()}")
        print(f"streams      {len(image.streams.streams)}")
        print(f"images       {len(batches)}")
        print(f"records      {records} in {elapsed:.2f}s = {records / elapsed:,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
