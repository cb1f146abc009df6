"""A small application embedding the package, type-checked with mypy --strict against
the installed wheel (tests/packaging/test_wheel.py)."""

from __future__ import annotations

import uuid

import anyio

import broker
from broker.metadata.records import (
    BrokerEndpoint,
    PartitionRecord,
    RegisterBrokerRecord,
    TopicRecord,
)


async def leaders() -> dict[str, list[int]]:
    source, orders = broker.InMemoryRecordSource(), uuid.uuid4()
    source.append_nowait(
        [
            RegisterBrokerRecord(
                broker_id=1,
                broker_epoch=1,
                incarnation_id=uuid.uuid4(),
                end_points=(BrokerEndpoint(name="PLAINTEXT", host="localhost", port=9092),),
                fenced=False,
            ),
            TopicRecord(name="orders", topic_id=orders),
            PartitionRecord(partition_id=0, topic_id=orders, replicas=(1,), isr=(1,), leader=1),
        ]
    )
    with broker.MetadataCache("app-cluster") as cache:
        async with broker.MetadataPipeline(source) as pipeline:
            pipeline.add_consumer(cache, broker.DeliveryMode.LATEST_IMAGE)
            with await cache.wait_for_offset(2) as image:
                assert image.offset >= 2
            answer = cache.metadata(broker.MetadataRequest())
            return {t.name or "": [p.leader_id for p in t.partitions] for t in answer.topics}


if __name__ == "__main__":
    print(anyio.run(leaders))
