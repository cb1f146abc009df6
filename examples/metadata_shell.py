"""A small metadata shell: replay a log directory and list what the image holds.

    python examples/metadata_shell.py LOG_DIR [--offset N] {brokers,topics,partitions,streams}

It opens a file log written by ``broker-sim --log-dir``, starts from the newest
snapshot at or below ``--offset`` (or replays from the start of the log), replays up
to the offset and prints the requested listing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from broker import BrokerError
from broker.metadata import Lease, MetadataDelta, MetadataImage, Provenance
from broker.metadata.sources import FileRecordLog


async def image_at(log_dir: Path, offset: int | None) -> MetadataImage:
    async with await FileRecordLog.open(log_dir) as log:
        image = MetadataImage.EMPTY
        start = log.log_start
        snapshot = await log.latest_snapshot()
        if snapshot is not None and (offset is None or snapshot.provenance.offset <= offset):
            delta = MetadataDelta(image, snapshot=True)
            delta.replay_all(snapshot.records)
            delta.finish_snapshot()
            image = delta.apply(snapshot.provenance)
            start = snapshot.provenance.offset + 1
        elif start > 0:
            raise BrokerError(f"offset {offset} is older than the log keeps (it starts at {start})")
        end = (await log.high_water_mark()) - 1 if offset is None else offset
        while start <= end:
            batches = await log.read(start, 10_000)
            delta = MetadataDelta(image)
            last = None
            for batch in batches:
                if batch.base_offset > end:
                    break
                records = batch.records[: end - batch.base_offset + 1]
                delta.replay_all(records, batch.base_offset)
                last = Provenance(
                    batch.base_offset + len(records) - 1, batch.epoch, batch.append_time_ms
                )
            if last is None:
                break
            next_image = delta.apply(last)
            image.release()
            image = next_image
            start = last.offset + 1
        return image


def show(image: MetadataImage, what: str) -> None:
    print(f"# image at offset {image.offset}, epoch {image.epoch}")
    if what == "brokers":
        for broker in sorted(image.cluster.brokers.values(), key=lambda b: b.id):
            state = "fenced" if broker.fenced else "alive"
            endpoints = ",".join(f"{e.name}://{e.host}:{e.port}" for e in broker.listeners)
            print(f"broker {broker.id} epoch={broker.epoch} {state} rack={broker.rack} {endpoints}")
    elif what == "topics":
        for name, topic_id in sorted(image.topics.by_name.items()):
            print(f"{name} id={topic_id} partitions={len(image.topics.by_id[topic_id].partitions)}")
    elif what == "partitions":
        for name, topic_id in sorted(image.topics.by_name.items()):
            for p, partition in sorted(image.topics.by_id[topic_id].partitions.items()):
                print(
                    f"{name}-{p} leader={partition.leader} epoch={partition.leader_epoch} "
                    f"replicas={list(partition.replicas)} isr={list(partition.isr)}"
                )
    else:
        for stream_id, stream in sorted(image.streams.streams.items()):
            owner = stream.last_range.node_id if stream.last_range else None
            print(
                f"stream {stream_id} epoch={stream.epoch} {stream.state.name} "
                f"offsets=[{stream.start_offset}, {stream.end_offset}) owner={owner} "
                f"objects={len(stream.objects)}"
            )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("what", choices=("brokers", "topics", "partitions", "streams"))
    parser.add_argument("--offset", type=int, help="replay up to this offset (default: the end)")
    args = parser.parse_args(argv)
    try:
        image = anyio.run(image_at, args.log_dir, args.offset)
    except BrokerError as error:
        print(f"metadata_shell: {error}", file=sys.stderr)
        return 2
    with Lease(image):
        show(image, args.what)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
