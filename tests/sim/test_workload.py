"""The synthetic controller: deterministic, always valid, resumable."""

from __future__ import annotations

import pytest

from broker.metadata import Lease, MetadataDelta, MetadataImage, Provenance
from broker.metadata.records import RecordBatch, encode_batch
from broker.sim import SyntheticController, WorkloadConfig


def replay(image: MetadataImage, batches: list[RecordBatch]) -> MetadataImage:
    """Replay strictly (a ReplayError fails the test) into a new image."""
    delta = MetadataDelta(image)
    for batch in batches:
        delta.replay_all(batch.records, batch.base_offset)
    last = batches[-1]
    return delta.apply(Provenance(last.last_offset, last.epoch, last.append_time_ms))


def test_same_config_same_bytes() -> None:
    config = WorkloadConfig(seed=12, topics=5, partitions_per_topic=3)
    first = [encode_batch(b) for b in SyntheticController(config).batches(500)]
    second = [encode_batch(b) for b in SyntheticController(config).batches(500)]
    assert first == second


def test_the_bootstrap_in_parts_is_the_same_batches() -> None:
    config = WorkloadConfig(seed=4, topics=30, partitions_per_topic=7, max_records_per_batch=16)
    whole = SyntheticController(config).bootstrap()
    parts = list(SyntheticController(config).bootstrap_parts(part_records=50))
    assert len(parts) > 3
    assert all(len(part) < len(whole) for part in parts)
    assert [encode_batch(b) for part in parts for b in part] == [encode_batch(b) for b in whole]


@pytest.mark.parametrize("seed", range(5))
def test_every_event_kind_happens_and_replays_cleanly(seed: int) -> None:
    # Node-level disruptions every simulated second (not ten): all kinds within 3000 events.
    config = WorkloadConfig(
        seed=seed, topics=6, partitions_per_topic=3, node_event_interval_ms=1000
    )
    controller = SyntheticController(config)
    batches = list(controller.batches(3000))
    with Lease(replay(MetadataImage.EMPTY, batches)) as image:
        assert image.offset == controller.next_offset - 1
        assert len(image.topics.by_id) == controller.topic_count
    assert all(count > 0 for count in controller.event_counts.values()), controller.event_counts
    assert controller.failovers_completed > 0


@pytest.mark.parametrize("stop_at", [1, 40, 333, 1200])
def test_a_resumed_controller_continues_with_valid_records(stop_at: int) -> None:
    config = WorkloadConfig(
        seed=3,
        topics=6,
        partitions_per_topic=3,
        failover_steps_apart=2,
        node_event_interval_ms=1000,
    )
    controller = SyntheticController(config)
    batches = list(controller.batches(stop_at))
    with Lease(replay(MetadataImage.EMPTY, batches)) as image:
        resumed = SyntheticController.resume(config, image)
        assert resumed.next_offset == image.offset + 1
        assert resumed.topic_count == len(image.topics.by_id)
        more = list(resumed.batches(800))
        assert more[0].base_offset == image.offset + 1
        with Lease(replay(image, more)) as after:
            assert after.offset == resumed.next_offset - 1
    assert resumed.failovers_completed > 0
