"""Followers of a metadata log on etcd: lag and records/s, next to the in-memory source.

One writer appends a synthetic controller's batches (stamped with the wall clock) at a
steady rate; three followers each run their own loader and publisher and record, per
image, how long after the append it reached them. The same run repeats on the in-memory
source (followers of one in-process log) as the baseline. Needs the etcd binary (Debian
package etcd-server); a throwaway server on loopback is started for the run.

    python3 dev bench etcd_follow [--events 3000] [--rate 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from broker import tune_gc
from broker.metadata.pipeline import DeliveryMode, MetadataPipeline, MetadataUpdate
from broker.metadata.records import RecordBatch
from broker.metadata.sources import EtcdRecordLog, InMemoryRecordSource, RecordSource
from broker.sim import SyntheticController, WorkloadConfig

# The throwaway etcd server is a test helper, not library API.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.etcd.local_etcd import LocalEtcd

FOLLOWERS = 3


class LagRecorder:
    def __init__(self, name: str, last_offset: int) -> None:
        self.name = name
        self.last_offset = last_offset
        self.lags: list[float] = []
        self.done = anyio.Event()

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        now_ms = time.time_ns() / 1e6
        self.lags.append(now_ms - update.image.provenance.append_time_ms)
        if update.image.offset >= self.last_offset:
            self.done.set()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def follow(source: RecordSource, recorder: LagRecorder) -> None:
    async with MetadataPipeline(source, max_records_per_image=2000, name=recorder.name) as pipeline:
        pipeline.add_consumer(recorder, DeliveryMode.LATEST_IMAGE)
        await recorder.done.wait()


async def run_case(
    name: str,
    batches: list[RecordBatch],
    rate: float,
    writer_append: object,
    follower_sources: list[RecordSource],
) -> tuple[str, list[float], float]:
    assert callable(writer_append)
    last = batches[-1].last_offset
    recorders = [LagRecorder(f"{name}-{i}", last) for i in range(len(follower_sources))]
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for source, recorder in zip(follower_sources, recorders, strict=True):
            tg.start_soon(follow, source, recorder)
        next_at = time.monotonic()
        for batch in batches:
            await writer_append(batch.replace(append_time_ms=now_ms()))
            next_at += 1 / rate
            await anyio.sleep(max(0.0, next_at - time.monotonic()))
    elapsed = time.monotonic() - started
    lags = [lag for r in recorders for lag in r.lags]
    records = sum(len(b.records) for b in batches)
    return name, lags, records / elapsed


async def main_async(args: argparse.Namespace) -> None:
    controller = SyntheticController(WorkloadConfig(seed=5, topics=50, partitions_per_topic=10))
    batches = list(controller.batches(args.events))
    results = []

    memory = InMemoryRecordSource()

    async def append_memory(batch: RecordBatch) -> None:
        memory.append_batch_nowait(batch)

    results.append(
        await run_case("in-memory", batches, args.rate, append_memory, [memory] * FOLLOWERS)
    )

    with tempfile.TemporaryDirectory() as directory, LocalEtcd(directory) as etcd:
        async with EtcdRecordLog(etcd.url) as writer:
            await writer.claim()
            followers = [EtcdRecordLog(etcd.url) for _ in range(FOLLOWERS)]
            async with followers[0], followers[1], followers[2]:
                results.append(
                    await run_case("etcd", batches, args.rate, writer.append_batch, list(followers))
                )

    records = sum(len(b.records) for b in batches)
    print(f"{len(batches):,} batches ({records:,} records)", end=" ")
    print(f"at {args.rate:g} batches/s, {FOLLOWERS} followers")
    header = f"{'source':<10} {'lag p50 ms':>11} {'lag p99 ms':>11} {'max ms':>9} {'records/s':>11}"
    print(header)
    print("-" * len(header))
    for name, lags, rate in results:
        ordered = sorted(lags)
        p50 = statistics.median(ordered)
        p99 = ordered[int((len(ordered) - 1) * 0.99)]
        print(f"{name:<10} {p50:>11.2f} {p99:>11.2f} {ordered[-1]:>9.1f} {rate:>11,.0f}")
    print()
    print("lag: append (writer's wall clock) to the image reaching a follower's consumer")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0, help="batches per second")
    args = parser.parse_args(argv)
    tune_gc()
    anyio.run(main_async, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
