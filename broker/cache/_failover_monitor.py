"""The failover monitor: watches partitions whose failover has not completed yet."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from immutables import Map

from broker._logging import get_logger
from broker._tasks import Notifier, single_cause
from broker.cache._failover import (
    PartitionInFailover,
    TopicPartitionKey,
    failed_nodes,
    failover_state_key,
)
from broker.metadata.pipeline import HoldingConsumer, MetadataUpdate

__all__ = ["FailoverMonitor", "FailoverStatistics"]

logger = get_logger(__name__)

SAMPLE = 10
"""Partitions named in one monitor event; the count says how many there were."""


@dataclass(frozen=True, slots=True)
class FailoverStatistics:
    """The monitor's counters: checks run, partitions in failover, completions."""

    checks: int
    last_offset: int
    partitions_in_failover: int
    failed_nodes: tuple[int, ...]
    """Nodes fenced or in failover mode."""
    completed: int
    """Partitions that completed a failover since the monitor started."""


class FailoverMonitor(HoldingConsumer, anyio.AsyncContextManagerMixin):
    """Watches partitions whose failover has not completed yet, and reports completions.

    A latest-image consumer: each new image (and every ``interval`` seconds) triggers
    one check of the newest image, on a lease. ``async with monitor:`` runs its task.
    A check compares the image's set of partitions mid-failover (derived state kept up
    to date image by image) with the previous check's: its cost is the number of
    partitions mid-failover, not the size of the cluster.
    """

    def __init__(
        self, cluster_id: str, *, interval: float = 1.0, name: str = "failover-monitor"
    ) -> None:
        super().__init__(name)
        self.cluster_id = cluster_id
        self.interval = interval
        self._key = failover_state_key(cluster_id)
        self._new_image = Notifier()
        self._checked = Notifier()
        self._current: Map[TopicPartitionKey, PartitionInFailover] = Map()
        self._since: dict[TopicPartitionKey, float] = {}
        self._checks = 0
        self._completed = 0
        self._last_offset = -1
        self._failed_nodes: tuple[int, ...] = ()

    def on_metadata_update_nowait(self, update: MetadataUpdate) -> None:
        """Hold the new image and wake the monitor's task to check it."""
        super().on_metadata_update_nowait(update)
        self._new_image.notify()

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[FailoverMonitor]:
        with single_cause():
            try:
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(self._run)
                    try:
                        yield self
                    finally:
                        task_group.cancel_scope.cancel()
            finally:
                self.close()

    async def _run(self) -> None:
        while True:
            with anyio.move_on_after(self.interval):
                await self._new_image.wait()
            if self._holder.offset >= 0 and self._holder.offset != self._last_offset:
                self.check()

    async def wait_checked(self, offset: int) -> None:
        """Wait until a check ran on an image at ``offset`` or later."""
        while self._last_offset < offset:
            await self._checked.wait()

    def check(self) -> None:
        """Check the newest image now: log the partitions that entered or left failover."""
        with self._holder.lease() as image:
            now = time.monotonic()
            current = image.derived(self._key).in_failover
            failed = failed_nodes(image.cluster.brokers.values(), image.node_wal)
            offset = image.offset
        previous, self._current = self._current, current
        if current is previous:
            started: list[PartitionInFailover] = []
            completed: list[tuple[PartitionInFailover, float]] = []
        else:
            started = [p for key, p in current.items() if key not in previous]
            completed = [
                (p, now - self._since.pop(key, now))
                for key, p in previous.items()
                if key not in current
            ]
            for partition in started:
                self._since[(partition.topic_id, partition.partition)] = now
        self._completed += len(completed)
        # One event per check, not per partition: a node failover moves thousands.
        if started:
            logger.info(
                "partitions_in_failover",
                count=len(started),
                offset=offset,
                reasons=sorted({p.status.value for p in started}),
                waiting_on=sorted({p.waiting_on for p in started if p.waiting_on is not None}),
                sample=[f"{p.topic}-{p.partition}" for p in started[:SAMPLE]],
            )
        if completed:
            logger.info(
                "failover_completed",
                count=len(completed),
                offset=offset,
                longest_seconds=round(max(seconds for _, seconds in completed), 3),
                sample=[f"{p.topic}-{p.partition}" for p, _ in completed[:SAMPLE]],
            )
        self._checks += 1
        self._failed_nodes = failed
        self._last_offset = offset
        self._checked.notify()

    def in_failover(self) -> list[PartitionInFailover]:
        """The partitions mid-failover at the last check, in (topic, partition) order."""
        return sorted(self._current.values(), key=lambda p: (p.topic, p.partition))

    def statistics(self) -> FailoverStatistics:
        """The monitor's counters and the last check's result."""
        return FailoverStatistics(
            checks=self._checks,
            last_offset=self._last_offset,
            partitions_in_failover=len(self._current),
            failed_nodes=self._failed_nodes,
            completed=self._completed,
        )
