"""A Prometheus collector over the components' ``statistics()``, read at scrape time.

Nothing is counted twice and nothing runs on the hot path: every component keeps its
own counters (and latency histograms), and a scrape reads them. Names follow Kafka's
``broker-metadata-metrics`` where Kafka has one (``last-applied-record-offset`` becomes
``broker_metadata_last_applied_record_offset``); the rest are ours, under ``broker_``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, CollectorRegistry

from broker._histogram import HistogramSnapshot
from broker.cache import FailoverMonitor, MetadataCache
from broker.metadata import lifetime_statistics
from broker.metadata.pipeline import MetadataPipeline
from broker.metadata.sources import RecordLog
from broker.server import KafkaListener

__all__ = ["MetricsCollector", "register_metrics"]


def _buckets(snapshot: HistogramSnapshot) -> list[tuple[str, float]]:
    return [
        ("+Inf" if bound == float("inf") else repr(bound), count)
        for bound, count in snapshot.buckets
    ]


@dataclass(eq=False)  # registries key collectors by identity
class MetricsCollector:
    """Reads the statistics of the components it is given on every scrape.

    Any component may be None (or the listeners empty); attributes may be set later,
    for example once the listeners are open. ``etcd`` is any log with a
    ``statistics().outages`` (an :class:`~broker.metadata.sources.EtcdRecordLog`).
    """

    pipeline: MetadataPipeline | None = None
    cache: MetadataCache | None = None
    monitor: FailoverMonitor | None = None
    listeners: Iterable[KafkaListener] = field(default_factory=tuple)
    etcd: RecordLog | None = None

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry then never scrapes at registration."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every metric, from the components' statistics now."""
        yield from self._pipeline()
        yield from self._lifetime()
        yield from self._serving()

    # the pipeline ------------------------------------------------------------------------

    def _pipeline(self) -> Iterator[Metric]:
        pipeline = self.pipeline
        if pipeline is None:
            return
        stats = pipeline.statistics()
        loader, publisher = stats.loader, stats.publisher
        yield GaugeMetricFamily(
            "broker_metadata_last_applied_record_offset",
            "Offset of the last record applied to the published image (Kafka: "
            "last-applied-record-offset).",
            value=publisher.current_offset,
        )
        with pipeline.lease() as image:
            appended_ms = image.provenance.append_time_ms if image.offset >= 0 else None
        if appended_ms is not None:
            yield GaugeMetricFamily(
                "broker_metadata_last_applied_record_timestamp_ms",
                "Append time of the last applied record, ms since the epoch (Kafka: "
                "last-applied-record-timestamp).",
                value=appended_ms,
            )
            yield GaugeMetricFamily(
                "broker_metadata_last_applied_record_lag_ms",
                "Now minus the append time of the last applied record (Kafka: "
                "last-applied-record-lag-ms).",
                value=time.time() * 1000 - appended_ms,
            )
        yield CounterMetricFamily(
            "broker_metadata_load_error_count",
            "Records the loader could not replay (Kafka: metadata-load-error-count).",
            value=loader.replay_errors,
        )
        yield CounterMetricFamily(
            "broker_metadata_apply_error_count",
            "Consumer callbacks that raised while applying an image (Kafka: "
            "metadata-apply-error-count).",
            value=publisher.consumer_faults,
        )
        yield CounterMetricFamily(
            "broker_metadata_records", "Records replayed by the loader.", value=loader.records
        )
        yield CounterMetricFamily(
            "broker_metadata_images_published",
            "Images the publisher handed to its consumers.",
            value=publisher.images_published,
        )
        lag_images = GaugeMetricFamily(
            "broker_consumer_lag_images",
            "Published images a consumer has not processed yet.",
            labels=["consumer"],
        )
        lag_offset = GaugeMetricFamily(
            "broker_consumer_lag_offset",
            "The publisher's offset minus the consumer's.",
            labels=["consumer"],
        )
        stalls = CounterMetricFamily(
            "broker_consumer_stalls",
            "Times the publisher waited for room in a consumer's queue.",
            labels=["consumer"],
        )
        faults = CounterMetricFamily(
            "broker_consumer_faults", "Consumer callbacks that raised.", labels=["consumer"]
        )
        latency = HistogramMetricFamily(
            "broker_publish_latency_seconds",
            "Seconds from an image's publication to the end of a consumer's callback.",
            labels=["consumer"],
        )
        for consumer in publisher.consumers:
            labels = [consumer.name]
            lag_images.add_metric(labels, consumer.lag_images)
            lag_offset.add_metric(labels, consumer.lag_offset)
            stalls.add_metric(labels, consumer.stalls)
            faults.add_metric(labels, consumer.faults)
            snapshot = consumer.publish_latency
            latency.add_metric(labels, _buckets(snapshot), snapshot.sum)
        yield from (lag_images, lag_offset, stalls, faults, latency)

    def _lifetime(self) -> Iterator[Metric]:
        lifetime = lifetime_statistics()
        yield GaugeMetricFamily(
            "broker_images_live", "Images created and not yet released.", value=lifetime.live
        )
        yield CounterMetricFamily(
            "broker_image_refcount_errors",
            "Retains of dead images and releases below zero.",
            value=lifetime.reference_count_errors,
        )
        yield CounterMetricFamily(
            "broker_image_released_reads",
            "Reads of released images, refused.",
            value=lifetime.released_reads,
        )
        yield CounterMetricFamily(
            "broker_image_leaks",
            "Images garbage-collected while still referenced.",
            value=lifetime.leaks,
        )

    # serving -----------------------------------------------------------------------------

    def _serving(self) -> Iterator[Metric]:
        if self.monitor is not None:
            yield GaugeMetricFamily(
                "broker_partitions_in_failover",
                "Partitions whose failover has not completed.",
                value=self.monitor.statistics().partitions_in_failover,
            )
        if self.cache is not None:
            yield CounterMetricFamily(
                "broker_cache_metadata_answers",
                "METADATA answers the cache gave (in process and over the wire).",
                value=self.cache.requests,
            )
        requests = CounterMetricFamily(
            "broker_requests",
            "Kafka requests answered by the listeners.",
            labels=["api", "version"],
        )
        latency = HistogramMetricFamily(
            "broker_request_latency_seconds",
            "Seconds to answer a Kafka request.",
            labels=["api", "version"],
        )
        merged: dict[tuple[str, int], list[HistogramSnapshot]] = {}
        for listener in self.listeners:
            for key, snapshot in listener.statistics().latency.items():
                merged.setdefault(key, []).append(snapshot)
        for (api, version), snapshots in sorted(merged.items()):
            labels = [api, str(version)]
            buckets = [
                (bound, sum(s.buckets[i][1] for s in snapshots))
                for i, (bound, _) in enumerate(_buckets(snapshots[0]))
            ]
            requests.add_metric(labels, sum(s.count for s in snapshots))
            latency.add_metric(labels, buckets, sum(s.sum for s in snapshots))
        yield requests
        yield latency
        etcd = self.etcd
        statistics = getattr(etcd, "statistics", None)
        if statistics is not None:
            yield CounterMetricFamily(
                "broker_etcd_outages",
                "Times the etcd log became unreachable.",
                value=statistics().outages,
            )


def register_metrics(
    registry: CollectorRegistry = REGISTRY,
    *,
    pipeline: MetadataPipeline | None = None,
    cache: MetadataCache | None = None,
    monitor: FailoverMonitor | None = None,
    listeners: Iterable[KafkaListener] = (),
    etcd: RecordLog | None = None,
) -> MetricsCollector:
    """Register a :class:`MetricsCollector` for these components with ``registry`` (the
    process's default one unless given); ``registry.unregister(collector)`` removes it."""
    collector = MetricsCollector(
        pipeline=pipeline, cache=cache, monitor=monitor, listeners=listeners, etcd=etcd
    )
    registry.register(collector)
    return collector
