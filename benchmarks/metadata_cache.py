"""All-topics METADATA (answer and wire encoding) on a new image: cold, and followed.

For 1k, 10k and 100k partitions (every partition with a meta stream, AutoMQ style), in
one run:

* cold: the first all-topics Metadata v12 answer and its encoding on an image with no
  derived state (what every new image cost before derived state followed the delta)
* followed: a delta of 100 partition changes applied to an image that answered before;
  the apply carries answers and encoded fragments over, then the first all-topics
  answer and encoding on the new image. Target at 100k: <= 5% of cold.
* a repeated request on the same image (everything cached)
* the cold failover state, per partition (the one full scan a new cluster pays)

    python3 dev bench metadata_cache [--sizes 1000,10000,100000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator

from broker.cache import (
    AnswerSettings,
    FailoverState,
    ImageAnswers,
    MetadataRequest,
    answers_key,
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
    PartitionChangeRecord,
    PartitionRecord,
    RangeRecord,
    RegisterBrokerRecord,
    S3StreamRecord,
    TopicRecord,
    UnfenceBrokerRecord,
)
from broker.server import WireMetadata, wire_metadata_key

CLUSTER = "bench"
PER_TOPIC = 100
BROKERS = 6
CHANGED = 100
SETTINGS = AnswerSettings(CLUSTER)
ALL_TOPICS = MetadataRequest(version=12)


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
    """The same content in a new image: no derived state yet (what each new image was)."""
    return MetadataImage(image.provenance, **image.sub_images())


def answer_and_encode(image: MetadataImage) -> bytes:
    """The all-topics Metadata v12 body, as the listener answers it."""
    answers: ImageAnswers = image.derived(answers_key(SETTINGS))
    wire: WireMetadata = image.derived(wire_metadata_key(SETTINGS))
    return wire.body(image, answers, ALL_TOPICS, random.Random(1))


def changes(image: MetadataImage, rng: random.Random) -> list[MetadataRecord]:
    topic_ids = list(image.topics.by_id.keys())
    out: list[MetadataRecord] = []
    for i in range(CHANGED):
        topic_id, partition = rng.choice(topic_ids), rng.randrange(PER_TOPIC)
        if i % 2:
            out.append(PartitionChangeRecord(partition_id=partition, topic_id=topic_id, isr=(1,)))
        else:
            leader = rng.randint(1, BROKERS)
            out.append(
                PartitionChangeRecord(partition_id=partition, topic_id=topic_id, leader=leader)
            )
    return out


def measure(partitions: int, repeat: int, rng: random.Random) -> dict[str, float]:
    with Lease(build(partitions)) as image:

        def cold() -> None:
            with Lease(fresh(image)) as new:
                answer_and_encode(new)

        answer_and_encode(image)  # the base image answered before: its state is followed

        def followed() -> None:
            delta = MetadataDelta(image)
            delta.replay_all(changes(image, rng))
            with Lease(delta.apply(Provenance(1, 1, 0))) as new:
                answer_and_encode(new)

        def bare_apply() -> None:  # the same apply on an image that never answered
            with Lease(fresh(image)) as base:
                delta = MetadataDelta(base)
                delta.replay_all(changes(image, rng))
                started = time.perf_counter()
                with Lease(delta.apply(Provenance(1, 1, 0))):
                    pass
                applied.append(time.perf_counter() - started)

        applied: list[float] = []
        for _ in range(repeat):
            bare_apply()

        def failover_state() -> None:
            FailoverState.build(CLUSTER, image)

        return {
            "cold": median_ms(cold, repeat),
            "followed": median_ms(followed, repeat),
            "apply": statistics.median(applied) * 1e3,
            "warm": median_ms(lambda: answer_and_encode(image), repeat),
            "failover_us": median_ms(failover_state, 3) * 1e3 / partitions,
        }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(5)
    print(f"all-topics Metadata v12, answer + encoding, median of {args.repeat}")
    header = (
        f"{'partitions':>10} {'cold ms':>9} {'followed ms':>12} {'of cold':>8} "
        f"{'(apply alone ms)':>17} {'same image ms':>14} {'failover us/partition':>22}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for size in (int(s) for s in args.sizes.split(",")):
        m = measure(size, args.repeat, rng)
        share = m["followed"] / m["cold"]
        print(
            f"{size:>10,} {m['cold']:>9.2f} {m['followed']:>12.3f} {share:>8.1%} "
            f"{m['apply']:>17.3f} {m['warm']:>14.3f} {m['failover_us']:>22.3f}"
        )
        if size >= 100_000:
            ok = share <= 0.05
    print()
    print("cold: the first answer and encoding on an image with no derived state")
    print(f"followed: apply of {CHANGED} partition changes (answers and fragments follow)")
    print("          plus the first answer and encoding on the new image")
    print("apply alone: the same apply on an image that never answered (no state to follow)")
    print("target: followed <= 5% of cold at 100k partitions:", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
