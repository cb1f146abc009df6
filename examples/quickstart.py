"""Embed the pipeline: hand-written records in, a METADATA answer out.

python examples/quickstart.py
"""

import uuid

import anyio

import broker
from broker.metadata.records import BrokerEndpoint as Endpoint
from broker.metadata.records import PartitionRecord, RegisterBrokerRecord, TopicRecord


async def main() -> None:
    source, orders = broker.InMemoryRecordSource(), uuid.uuid4()
    source.append_nowait(  # a broker registered unfenced, a topic, one partition it leads
        [
            RegisterBrokerRecord(
                broker_id=1,
                broker_epoch=1,
                incarnation_id=uuid.uuid4(),
                end_points=(Endpoint(name="PLAINTEXT", host="localhost", port=9092),),
                fenced=False,
            ),
            TopicRecord(name="orders", topic_id=orders),
            PartitionRecord(partition_id=0, topic_id=orders, replicas=(1,), isr=(1,), leader=1),
        ]
    )
    with broker.MetadataCache("demo-cluster") as cache:
        async with broker.MetadataPipeline(source) as pipeline:
            pipeline.add_consumer(cache, broker.DeliveryMode.LATEST_IMAGE)
            with await cache.wait_for_offset(2) as image:  # a lease on the image at offset 2
                print("topics:", sorted(image.topics.by_name))
            answer = cache.metadata(broker.MetadataRequest())  # one lease per request
            print({t.name: [p.leader_id for p in t.partitions] for t in answer.topics})


if __name__ == "__main__":
    anyio.run(main)
