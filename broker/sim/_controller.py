"""A deterministic synthetic KRaft controller: realistic record churn from a seed.

The controller is thin: it keeps a :class:`ClusterModel`, draws an :class:`EventKind`
per churn event, lets :class:`ChurnEvents` write its records, and cuts them into
batches at the next offsets. Every record is valid against the model.

Same config (seed included) -> same batches, byte for byte; time is simulated.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain, islice

from broker.metadata import MetadataImage
from broker.metadata.records import (
    METADATA_VERSION_FEATURE,
    FeatureLevelRecord,
    MetadataRecord,
    NoOpRecord,
    RecordBatch,
)
from broker.sim._events import EVENT_WEIGHTS, ChurnEvents, EventKind
from broker.sim._model import ClusterModel, WorkloadConfig

__all__ = ["METADATA_VERSION", "NODE_EVENTS", "START_TIME_MS", "TICK_MS", "SyntheticController"]

METADATA_VERSION = 21
"""The ``metadata.version`` feature level the bootstrap finalizes."""
START_TIME_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z: simulated time starts here."""
DEFAULT_PORT = 9092
"""The port a broker without a real listener advertises (Kafka's default)."""
TICK_MS = 10
"""Simulated milliseconds per churn event."""
NODE_EVENTS = frozenset({EventKind.CONTROLLED_SHUTDOWN, EventKind.FAILOVER})
"""Events that move every partition a node leads (paced by ``node_event_interval_ms``)."""


class SyntheticController:
    """Emits batches of valid records; ``bootstrap()`` first, then ``churn()`` forever."""

    def __init__(
        self,
        config: WorkloadConfig,
        *,
        epoch: int = 1,
        listener_host: str | None = None,
        listener_ports: Mapping[int, int] | None = None,
        model: ClusterModel | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.epoch = epoch
        self.next_offset = 0
        self.events = 0
        """Churn events emitted (bootstrap excluded), which also sets simulated time."""
        self.event_counts: dict[EventKind, int] = dict.fromkeys(EVENT_WEIGHTS, 0)
        self.model = model if model is not None else ClusterModel()
        self._bootstrapped = model is not None
        self._rng = rng if rng is not None else random.Random(config.seed)
        self._listener_host = listener_host
        self._listener_ports = dict(listener_ports or {})
        self._kinds = list(EVENT_WEIGHTS)
        self._weights = list(EVENT_WEIGHTS.values())
        self._last_node_event: int | None = None
        """Simulated time of the last node-level disruption (None: none yet)."""
        self._events = ChurnEvents(
            config,
            self.model,
            self._rng,
            now=self._now,
            host=self._host,
            port=self._port,
        )

    @classmethod
    def resume(
        cls,
        config: WorkloadConfig,
        image: MetadataImage,
        *,
        listener_host: str | None = None,
        listener_ports: Mapping[int, int] | None = None,
    ) -> SyntheticController:
        """A controller that continues the log ``image`` was loaded from (a restart).

        Its model is rebuilt from the image; the random sequence differs from a run
        that never stopped, every record stays valid.
        """
        controller = cls(
            config,
            epoch=max(image.epoch, 0) + 1,
            listener_host=listener_host,
            listener_ports=listener_ports,
            model=ClusterModel.from_image(config, image),
            rng=random.Random(config.seed * 1_000_003 + image.offset),
        )
        controller.next_offset = image.offset + 1
        if image.offset >= 0:
            controller.events = max(0, (image.provenance.append_time_ms - START_TIME_MS) // TICK_MS)
        return controller

    # helpers -------------------------------------------------------------------------

    def _now(self) -> int:
        return START_TIME_MS + self.events * TICK_MS

    def _host(self, broker_id: int) -> str:
        """The host broker ``broker_id`` advertises: the real listeners' host, if any."""
        return self._listener_host or f"broker-{broker_id}.sim.local"

    def _port(self, broker_id: int) -> int:
        """The port broker ``broker_id`` advertises: its own listener's, if it has one."""
        return self._listener_ports.get(broker_id, DEFAULT_PORT)

    def _batches(self, records: Iterable[MetadataRecord]) -> Iterator[RecordBatch]:
        """``records`` in batches, numbered as they are taken (``records`` may be lazy)."""
        step, it = self.config.max_records_per_batch, iter(records)
        while chunk := tuple(islice(it, step)):
            yield RecordBatch(self.next_offset, self.epoch, self._now(), chunk)
            self.next_offset += len(chunk)

    def _node_event_due(self) -> bool:
        last = self._last_node_event
        return last is None or self._now() - last >= self.config.node_event_interval_ms

    # batches -------------------------------------------------------------------------

    def reregister_brokers(self) -> list[RecordBatch]:
        """Every broker registers again (new epoch) with the current listener address."""
        records: list[MetadataRecord] = []
        for broker_id in sorted(self.model.brokers):
            records += self._events.register_broker(broker_id)
        return list(self._batches(records))

    def bootstrap(self) -> list[RecordBatch]:
        """Features, brokers, their dynamic configs and the initial topics."""
        return [batch for part in self.bootstrap_parts() for batch in part]

    def bootstrap_parts(self, part_records: int = 20_000) -> Iterator[list[RecordBatch]]:
        """:meth:`bootstrap` in parts of about ``part_records`` records: the same batches,
        in order, without the whole bootstrap (300k records at 100k partitions) existing
        at once."""
        if self._bootstrapped:
            raise RuntimeError("bootstrap() runs once")
        self._bootstrapped = True
        records: list[MetadataRecord] = [
            FeatureLevelRecord(name=METADATA_VERSION_FEATURE, feature_level=METADATA_VERSION)
        ]
        for broker_id in range(1, self.config.brokers + 1):
            records += self._events.register_broker(broker_id)
        records += self._events.broker_configs()
        step = self.config.max_records_per_batch
        for _ in range(self.config.topics):
            records += self._events.create_topic()
            if len(records) >= part_records:
                whole = len(records) - len(records) % step  # cut only at batch boundaries
                yield list(self._batches(records[:whole]))
                del records[:whole]
        if records:
            yield list(self._batches(records))

    def churn(self) -> Iterator[RecordBatch]:
        """One churn event: usually one batch, several for large events, never none.

        The event is drawn now; the batches of a large one (every partition of a node)
        are built as they are taken, so take all of them before the next ``churn()``.
        Before the bootstrap, it returns the bootstrap batches instead.
        """
        if not self._bootstrapped:
            return iter(self.bootstrap())
        self.events += 1
        records = iter(self._events.advance_failover())
        first = next(records, None)
        if first is None:
            for _ in range(16):  # an event may not apply right now (no candidate): redraw
                kind = self._rng.choices(self._kinds, self._weights)[0]
                if kind in NODE_EVENTS and not self._node_event_due():
                    continue
                records = iter(self._events.records(kind))
                first = next(records, None)
                if first is not None:
                    self.event_counts[kind] += 1
                    if kind in NODE_EVENTS:
                        self._last_node_event = self._now()
                    break
            else:
                first = NoOpRecord()
                self.event_counts[EventKind.NOOP] += 1
        return self._batches(chain((first,), records))

    def batches(self, events: int) -> Iterator[RecordBatch]:
        """Bootstrap (when not done yet) then ``events`` churn events."""
        if not self._bootstrapped:
            yield from self.bootstrap()
        for _ in range(events):
            yield from self.churn()

    # introspection -------------------------------------------------------------------

    @property
    def bootstrapped(self) -> bool:
        """Whether the bootstrap batches were emitted (or the controller resumed)."""
        return self._bootstrapped

    @property
    def failovers_completed(self) -> int:
        """Failovers that ran all their steps."""
        return self.model.failovers_completed

    @property
    def failover_in_flight(self) -> bool:
        """Whether partitions are mid-failover right now."""
        return self.model.failover is not None

    @property
    def topic_count(self) -> int:
        """Topics the controller manages."""
        return len(self.model.topics)

    @property
    def partition_count(self) -> int:
        """Partitions of the topics the controller manages."""
        return self.model.partition_count
