"""Prometheus metrics: the collector reads the components, and a scrape over HTTP during
a simulation sees values move."""

from __future__ import annotations

import urllib.request

import anyio
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from broker.cache import FailoverMonitor, MetadataCache
from broker.metadata import lifetime_statistics
from broker.metadata.pipeline import DeliveryMode, MetadataPipeline
from broker.metadata.sources import InMemoryRecordSource
from broker.metrics import MetricsCollector, register_metrics
from broker.sim import Simulation, SimulationConfig, SyntheticController, WorkloadConfig


async def test_the_collector_reads_the_pipeline_the_consumers_and_the_images() -> None:
    source = InMemoryRecordSource()
    controller = SyntheticController(WorkloadConfig(seed=3, topics=4, partitions_per_topic=2))
    cache = MetadataCache("sim-cluster")
    registry = CollectorRegistry()
    base = lifetime_statistics()
    async with MetadataPipeline(source) as pipeline, FailoverMonitor("sim-cluster") as monitor:
        pipeline.add_consumer(cache, DeliveryMode.LATEST_IMAGE)
        pipeline.add_consumer(monitor, DeliveryMode.LATEST_IMAGE)
        collector = register_metrics(registry, pipeline=pipeline, cache=cache, monitor=monitor)
        assert isinstance(collector, MetricsCollector)

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, labels)

        source.extend(controller.batches(20))
        with await cache.wait_for_offset(source.next_offset - 1):
            pass
        first = value("broker_metadata_last_applied_record_offset")
        assert first == source.next_offset - 1
        records = value("broker_metadata_records_total")
        assert records is not None
        assert records >= first + 1
        assert value("broker_images_live") is not None
        # Process-wide counters: other tests may have counted before this one.
        assert value("broker_image_refcount_errors_total") == base.reference_count_errors
        delivered = value("broker_publish_latency_seconds_count", consumer="metadata-cache")
        assert delivered is not None
        assert delivered >= 1
        assert value("broker_partitions_in_failover") == 0
        assert value("broker_metadata_last_applied_record_timestamp_ms") is not None

        source.extend(controller.batches(20))
        with await cache.wait_for_offset(source.next_offset - 1):
            pass
        moved = value("broker_metadata_last_applied_record_offset")
        assert moved is not None
        assert moved > first
        after = value("broker_publish_latency_seconds_count", consumer="metadata-cache")
        assert after is not None
        assert after > delivered
        registry.unregister(collector)
        assert value("broker_metadata_last_applied_record_offset") is None
    cache.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at ``url``, by (name, sorted labels), through a real HTTP client."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.integration
async def test_a_scrape_during_a_simulation_sees_values_move() -> None:
    from kafka import KafkaConsumer

    config = SimulationConfig(
        workload=WorkloadConfig(topics=6, partitions_per_topic=2),
        duration=None,
        events=200_000,
        rate=2000,
        clients=2,
        listen=("127.0.0.1", 0),
        metrics=("127.0.0.1", 0),
    )
    simulation = Simulation(config)
    listening: dict[int, tuple[str, int]] = {}
    ready, ticked = anyio.Event(), anyio.Event()

    def on_listening(addresses: dict[int, tuple[str, int]]) -> None:
        listening.update(addresses)
        ready.set()

    def on_progress(_: object) -> None:
        nonlocal ticked
        ticked.set()

    simulation.on_listening = on_listening
    simulation.on_progress = on_progress
    scrapes: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]] = []

    def topics(port: int) -> set[str]:
        consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}")
        try:
            return set(consumer.topics())
        finally:
            consumer.close()

    async def observer() -> None:
        nonlocal ticked
        await ready.wait()  # the listeners open after /metrics is served
        assert simulation.metrics_address is not None
        host, port = simulation.metrics_address
        url = f"http://{host}:{port}/metrics"
        scrapes.append(await anyio.to_thread.run_sync(scrape, url))
        assert await anyio.to_thread.run_sync(topics, listening[1][1])
        records = ("broker_metadata_records_total", ())
        while True:  # scrape after each progress report until the loader has moved on
            ticked = anyio.Event()
            await ticked.wait()
            later = await anyio.to_thread.run_sync(scrape, url)
            if later[records] > scrapes[0][records]:
                break
        scrapes.append(later)
        simulation.interrupt()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(observer)
            summary = await simulation.run(handle_signals=False)
    assert summary.healthy
    before, after = scrapes
    metadata = ("broker_requests_total", (("api", "Metadata"), ("version", "13")))
    assert metadata not in before or before[metadata] == 0
    assert after[metadata] >= 1
    assert (
        after[("broker_metadata_last_applied_record_offset", ())]
        > before[("broker_metadata_last_applied_record_offset", ())]
    )
    assert after[("process_resident_memory_bytes", ())] > 0
    assert after[("broker_image_leaks_total", ())] == before[("broker_image_leaks_total", ())]
