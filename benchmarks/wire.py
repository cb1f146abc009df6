"""The Kafka listener: cached all-topics Metadata, and requests/s over loopback.

1. All-topics Metadata at 10k partitions, answered by the listener's request path:
   the encoded response cached per image (what the listener does) against answering
   and encoding on every request (the baseline), in one run. Target: >= 20x.
   One-topic Metadata: the topic's per-image encoded entry (what the listener does)
   against encoding the (cached) answer with kio on every request, as before.
2. Requests/s with 50 concurrent connections on loopback (the clients run in this
   process, on the same core as the server: a lower bound for a separate client).

    python3 dev bench wire [--partitions 10000] [--connections 50] [--seconds 5]
"""

from __future__ import annotations

import argparse
import struct
import sys
import time

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from metadata_cache import CLUSTER, build, median_ms

from broker import tune_gc
from broker.cache import MetadataCache, MetadataRequest
from broker.metadata import Lease, MetadataDelta, MetadataImage
from broker.metadata.pipeline import LoadManifest, MetadataUpdate
from broker.server import (
    METADATA,
    KafkaListener,
    encode_request,
    metadata_body,
    metadata_request_body,
)


async def cache_holding(image: MetadataImage) -> MetadataCache:
    cache = MetadataCache(CLUSTER)
    manifest = LoadManifest("image", image.provenance, -1, 0, 0, None, 0.0)
    await cache.on_metadata_update(MetadataUpdate(image, MetadataDelta(image), manifest))
    return cache


ONE_TOPIC = "topic-00000"


async def per_request(partitions: int, repeat: int) -> tuple[float, float, float, float]:
    with Lease(build(partitions)) as image:
        cache = await cache_holding(image)
        listener = KafkaListener(cache)
        frame = encode_request(METADATA, 12, 1, metadata_request_body(12))[4:]
        request = MetadataRequest(version=12)

        def cached() -> object:
            return listener.respond(frame)

        def encode_every_time() -> object:
            with cache.lease() as leased:
                fresh = MetadataImage(leased.provenance, **leased.sub_images())
            with Lease(fresh):  # a new image: nothing derived yet, as if nothing were cached
                return metadata_body(cache.answer(fresh, request), 12)

        one_frame = encode_request(METADATA, 12, 1, metadata_request_body(12, [ONE_TOPIC]))[4:]
        one_request = MetadataRequest.for_topics(ONE_TOPIC, version=12)

        def one_topic_entry() -> object:
            return listener.respond(one_frame)

        def one_topic_kio() -> object:
            with cache.lease() as leased:
                return metadata_body(cache.answer(leased, one_request), 12)

        cached()
        one_topic_entry()
        result = (
            median_ms(cached, repeat) * 1e3,
            median_ms(encode_every_time, max(3, repeat // 10)) * 1e3,
            median_ms(one_topic_entry, repeat * 10) * 1e3,
            median_ms(one_topic_kio, repeat * 10) * 1e3,
        )
        cache.close()
        return result


async def client(port: int, frame: bytes, deadline: float) -> int:
    """Send ``frame`` and read the answer until ``deadline``; returns how many."""
    done = 0
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        receive = BufferedByteReceiveStream(stream)
        while time.monotonic() < deadline:
            await stream.send(frame)
            (size,) = struct.unpack(">i", await receive.receive_exactly(4))
            await receive.receive_exactly(size)
            done += 1
    return done


async def load(port: int, frame: bytes, connections: int, seconds: float) -> float:
    """Requests/s of ``connections`` clients sending ``frame`` for ``seconds``."""
    counts: list[int] = []
    deadline = time.monotonic() + seconds

    async def one() -> None:
        counts.append(await client(port, frame, deadline))

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(connections):
            tg.start_soon(one)
    return sum(counts) / (time.monotonic() - started)


async def throughput(partitions: int, connections: int, seconds: float) -> tuple[float, float]:
    """(all-topics requests/s, single-topic requests/s) over loopback."""
    with Lease(build(partitions)) as image:
        cache = await cache_holding(image)
        async with KafkaListener(cache, host="127.0.0.1", port=0) as listener:
            everything = encode_request(METADATA, 12, 1, metadata_request_body(12))
            one_topic = encode_request(METADATA, 12, 1, metadata_request_body(12, [ONE_TOPIC]))
            rates = (
                await load(listener.port, everything, connections, seconds),
                await load(listener.port, one_topic, connections, seconds),
            )
        cache.close()
        return rates


async def run(args: argparse.Namespace) -> None:
    cached, fresh, entry, kio = await per_request(args.partitions, args.repeat)
    speedup = fresh / cached
    print(f"all-topics Metadata v12 at {args.partitions:,} partitions (median)")
    header = f"{'path':<34} {'us/request':>12}"
    print(header)
    print("-" * len(header))
    print(f"{'cached encoded response':<34} {cached:>12,.1f}")
    print(f"{'answer + encode every request':<34} {fresh:>12,.1f}")
    print(f"speedup: {speedup:,.0f}x (target >= 20x): {'met' if speedup >= 20 else 'NOT met'}")
    print()
    print(f"one-topic Metadata v12 ({ONE_TOPIC}) at {args.partitions:,} partitions (median)")
    print(header)
    print("-" * len(header))
    print(f"{'per-image encoded entry':<34} {entry:>12,.1f}")
    print(f"{'kio encode every request':<34} {kio:>12,.1f}")
    print(f"speedup: {kio / entry:,.1f}x")
    print()
    all_topics, one_topic = await throughput(args.partitions, args.connections, args.seconds)
    print(f"{args.connections} connections on loopback, {args.seconds:g}s each, clients in-process")
    header = f"{'request':<34} {'requests/s':>12}"
    print(header)
    print("-" * len(header))
    print(f"{'Metadata v12, all topics':<34} {all_topics:>12,.0f}")
    print(f"{'Metadata v12, one topic':<34} {one_topic:>12,.0f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    tune_gc()
    anyio.run(run, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
