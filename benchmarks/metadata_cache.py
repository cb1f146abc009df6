"""METADATA (all topics) cost, with and without the failover check, in one run.

For 1k, 10k and 100k partitions (every partition with a meta stream, AutoMQ style):

* all-topics METADATA on a new image, without the failover check (plain Kafka)
* the same with the check; the (topic, partition) -> stream index is per-image derived
  state, and a new image whose KV map is unchanged reuses the previous index
* the baseline that rebuilds the index on every request
* a repeated request on the same image (its answers are per-image derived state too)
* the failover check alone, per partition (target: <= 2 us at 100k partitions)

    python3 dev bench metadata_cache [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
import uuid
from collections.abc import Callable, Iterator

from broker import tune_gc
from broker.cache import (
    FailoverIndex,
    MetadataRequest,
    answer_metadata,
    check_partition,
    failover_state_key,
)
from broker.metadata import (
    Lease,
    MetadataDelta,
    MetadataImage,
    Provenance,
    encode_stream_id,
    meta_stream_key,
)
from broker.metadata.records import (
    BrokerEndpoint,
    KeyValue,
    KVRecord,
    MetadataRecord,
    PartitionRecord,
    RangeRecord,
    RegisterBrokerRecord,
    S3StreamRecord,
    TopicRecord,
    UnfenceBrokerRecord,
)

CLUSTER = "bench"
PER_TOPIC = 100
BROKERS = 6


def records(partitions: int) -> Iterator[MetadataRecord]:
    for broker in range(1, BROKERS + 1):
        yield RegisterBrokerRecord(
            broker_id=broker,
            incarnation_id=uuid.UUID(int=broker),
            broker_epoch=broker,
            end_points=(BrokerEndpoint(name="PLAINTEXT", host=f"b{broker}", port=9092),),
        )
        yield UnfenceBrokerRecord(id=broker, epoch=broker)
    stream = 0
    for t in range(partitions // PER_TOPIC):
        topic_id = uuid.UUID(int=t + 1)
        yield TopicRecord(name=f"topic-{t:05d}", topic_id=topic_id)
        kvs = []
        for p in range(PER_TOPIC):
            leader = 1 + (t + p) % BROKERS
            replicas = (leader, 1 + (leader % BROKERS), 1 + ((leader + 1) % BROKERS))
            yield PartitionRecord(
                partition_id=p,
                topic_id=topic_id,
                replicas=replicas,
                isr=replicas,
                leader=leader,
                leader_epoch=3,
            )
            yield S3StreamRecord(stream_id=stream, epoch=3, range_index=0)
            yield RangeRecord(
                stream_id=stream,
                epoch=3,
                range_index=0,
                start_offset=0,
                end_offset=9,
                node_id=leader,
            )
            kvs.append(
                KeyValue(key=meta_stream_key(CLUSTER, topic_id, p), value=encode_stream_id(stream))
            )
            stream += 1
        yield KVRecord(key_values=tuple(kvs))


def build(partitions: int) -> MetadataImage:
    delta = MetadataDelta(MetadataImage.EMPTY)
    delta.replay_all(records(partitions))
    return delta.apply(Provenance(0, 1, 0))


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def fresh(image: MetadataImage) -> MetadataImage:
    """The same content in a new image: no derived state yet (what each new image is)."""
    return MetadataImage(image.provenance, **image.sub_images())


def measure(partitions: int, repeat: int) -> dict[str, float]:
    with Lease(build(partitions)) as image:
        request = MetadataRequest()

        def cold(check: bool) -> Callable[[], object]:
            def run() -> object:
                with Lease(fresh(image)) as new:
                    return answer_metadata(new, request, cluster_id=CLUSTER, failover_check=check)

            return run

        def warm() -> object:
            return answer_metadata(image, request, cluster_id=CLUSTER)

        def rebuild_index() -> object:
            return FailoverIndex.build(CLUSTER, image.kv.values)

        warm()  # the index and the answers are built once for this image
        index = image.derived(failover_state_key(CLUSTER)).index
        pairs = [
            (topic.id, p, partition)
            for topic in image.topics.by_id.values()
            for p, partition in topic.partitions.items()
        ]
        streams = image.streams

        def check_all() -> None:
            for topic_id, p, partition in pairs:
                check_partition(index, streams, topic_id, p, partition)

        per_check = min(timeit.repeat(check_all, number=1, repeat=5)) / len(pairs) * 1e6
        return {
            "plain": median_ms(cold(False), repeat),
            "checked": median_ms(cold(True), repeat),
            "warm": median_ms(warm, repeat),
            "rebuild": median_ms(rebuild_index, repeat),
            "per_check_us": per_check,
        }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    tune_gc()
    header = (
        f"{'partitions':>10} {'plain ms':>9} {'check ms':>9} {'rebuild/request ms':>19} "
        f"{'index reuse':>12} {'same image ms':>14} {'check us/partition':>19}"
    )
    print("all-topics METADATA, median of", args.repeat)
    print(header)
    print("-" * len(header))
    ok = True
    for size in (int(s) for s in args.sizes.split(",")):
        m = measure(size, args.repeat)
        baseline = m["checked"] + m["rebuild"]
        print(
            f"{size:>10,} {m['plain']:>9.2f} {m['checked']:>9.2f} {baseline:>19.2f} "
            f"{baseline / m['checked']:>11.2f}x {m['warm']:>14.3f} {m['per_check_us']:>19.3f}"
        )
        if size >= 100_000:
            ok = m["per_check_us"] <= 2.0
    print()
    print("plain / check: first answer on a new image, without / with the failover check")
    print("rebuild/request: the check plus building the index again (the baseline)")
    print("same image: a repeated request on one image (answers are per-image derived state)")
    print(
        "target: failover check <= 2 us per partition at 100k partitions:",
        "met" if ok else "NOT met",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
