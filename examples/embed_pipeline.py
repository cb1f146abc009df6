"""Embed the metadata pipeline and ask the metadata cache questions.

    python examples/embed_pipeline.py

A synthetic controller writes a small cluster into an in-memory log; the pipeline
replays it; the cache answers METADATA from the newest image, on a lease.
"""

from __future__ import annotations

import anyio

from broker.cache import MetadataCache, MetadataRequest
from broker.metadata.pipeline import DeliveryMode, MetadataPipeline
from broker.metadata.sources import InMemoryRecordSource
from broker.sim import SyntheticController, WorkloadConfig


async def main() -> None:
    config = WorkloadConfig(seed=7, brokers=4, topics=3, partitions_per_topic=2)
    source = InMemoryRecordSource()
    controller = SyntheticController(config)
    source.extend(controller.batches(events=200))  # bootstrap + 200 churn events

    with MetadataCache(config.cluster_id) as cache:  # its own image reference, released on exit
        async with MetadataPipeline(source) as pipeline:
            # The cache keeps only the newest image (latest-image delivery).
            pipeline.add_consumer(cache, DeliveryMode.LATEST_IMAGE)
            # Wait until the cache holds the image of the whole log.
            with await cache.wait_for_offset(source.next_offset - 1) as image:
                print(f"image at offset {image.offset}: {len(image.topics.by_id)} topics")

            # One METADATA request: one lease, one image, Kafka's error semantics.
            response = cache.metadata(MetadataRequest())
            offset, controller_id = response.provenance.offset, response.controller_id
            print(f"answered from offset {offset}, controller {controller_id}")
            for topic in response.topics:
                leaders = ", ".join(
                    f"p{p.partition_index}->{p.leader_id}"
                    + ("" if p.error_code == 0 else f"({p.error_code.name})")
                    for p in topic.partitions
                )
                print(f"  {topic.name}: {leaders}")
            print("brokers:", [b.node_id for b in cache.alive_brokers()])


if __name__ == "__main__":
    anyio.run(main)
