"""Write your own every-delta consumer: it sees each change, in order.

    python examples/custom_consumer.py

The consumer below reports topics created and deleted and the partitions whose
leadership moved to or away from broker 1. The delta and both images are leased for
the duration of the callback; a consumer that wants to keep an image retains it
(here through an ImageHolder).
"""

from __future__ import annotations

import anyio

from broker.metadata.pipeline import DeliveryMode, ImageHolder, MetadataPipeline, MetadataUpdate
from broker.metadata.sources import InMemoryRecordSource
from broker.sim import SyntheticController, WorkloadConfig

WATCHED_BROKER = 1


class LeadershipReporter:
    name = "leadership-reporter"

    def __init__(self) -> None:
        self.holder = ImageHolder(self.name)  # our own reference to the newest image
        self.became_leader = 0
        self.lost_leadership = 0

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        delta = update.delta
        assert delta is not None  # every-delta consumers always get one
        topics = update.image.topics.by_id
        for topic_id in sorted(delta.created_topic_ids(), key=str):
            print(f"offset {update.image.offset}: topic created {topics[topic_id].name}")
        for topic in delta.deleted_topics():
            print(f"offset {update.image.offset}: topic deleted {topic.name}")
        changes = delta.leadership_changes(WATCHED_BROKER)
        self.became_leader += len(changes.became_leader)
        self.lost_leadership += len(changes.lost_leadership)
        self.holder.set(update.image)


async def main() -> None:
    source = InMemoryRecordSource()
    controller = SyntheticController(
        WorkloadConfig(seed=3, brokers=4, topics=4, partitions_per_topic=3)
    )
    reporter = LeadershipReporter()
    with reporter.holder:  # releases the reporter's image when done
        async with MetadataPipeline(source) as pipeline:
            pipeline.add_consumer(reporter, DeliveryMode.EVERY_DELTA)
            for batch in controller.batches(events=300):
                source.append_batch_nowait(batch)
                await anyio.lowlevel.checkpoint()  # let the pipeline run
            with await reporter.holder.wait_for_offset(source.next_offset - 1):
                pass
    print(
        f"broker {WATCHED_BROKER}: became leader {reporter.became_leader} times, "
        f"lost leadership {reporter.lost_leadership} times"
    )


if __name__ == "__main__":
    anyio.run(main)
