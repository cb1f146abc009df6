"""The simulated broker: the whole pipeline embedded, under synthetic load.

A synthetic controller appends churn to a record log (in memory, or a file log that a
restart resumes from snapshot + log); the loader and publisher feed the metadata cache,
the stream metadata manager, the failover monitor and a snapshot writer; concurrent
tasks play METADATA clients, failover checkers and stream fetchers. Every read is on a
leased image; the summary reports what was done and any lifetime error.
"""

from __future__ import annotations

import hashlib
import math
import random
import signal
import socket
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker._logging import get_logger
from broker._tasks import single_cause
from broker.cache import (
    FailoverMonitor,
    MetadataCache,
    MetadataRequest,
    StreamMetadataManager,
    failover_state_key,
)
from broker.errors import (
    ConfigurationError,
    FetchTimeoutError,
    StreamFetchError,
    WriterFencedError,
)
from broker.metadata import (
    LeakDetectionLevel,
    LifetimeStatistics,
    MetadataImage,
    lifetime_statistics,
    set_leak_detection_level,
    sources,
)
from broker.metadata.pipeline import DeliveryMode, MetadataPipeline, SnapshotWriter
from broker.metadata.records import RecordBatch
from broker.metadata.sources import (
    FileRecordLog,
    InMemoryRecordSource,
    RecordLog,
    encoded_records,
)
from broker.server import KafkaListener, broker_listeners
from broker.sim._controller import SyntheticController
from broker.sim._model import WorkloadConfig

if TYPE_CHECKING:
    from broker.metadata.sources import EtcdRecordLog
    from broker.metrics import MetricsCollector

__all__ = [
    "FinalImage",
    "Progress",
    "Simulation",
    "SimulationConfig",
    "SimulationSummary",
    "image_fingerprint",
]

logger = get_logger(__name__)

MAX_LEAD_RECORDS = 20_000
"""How far the simulated controller's churn may run ahead of the loader."""
CHURN_SLICE = 0.005
"""Seconds the churn may generate events without yielding to the event loop."""
END_WAIT_SECONDS = 2.5
"""How long past its duration a timed run waits for the loader to reach the end of the
log. Then the final image's fingerprint (one to two seconds at 100k partitions) and
the shutdown: the run ends within 5 s of its duration."""
APPEND_QUEUE = 1024
"""Churn batches that may wait for the appender (the churn waits beyond it)."""
MAX_APPEND_GROUP = 256
"""Batches appended together at most (one fsync for all, ``--fsync always``)."""


class SimulationConfig(BaseModel):
    """Everything one run of the simulated broker needs (the CLI builds this)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    workload: WorkloadConfig = WorkloadConfig(topics=100, partitions_per_topic=20)
    duration: float | None = Field(default=20.0, gt=0)
    """Seconds to run; None runs until ``events`` are done (or Ctrl-C)."""
    events: int | None = Field(default=None, ge=0)
    """Stop churning after this many events (a deterministic run); the bootstrap is not
    an event, so 0 serves the bootstrapped cluster unchanged. Without ``duration`` the
    run ends once they are loaded."""
    rate: float = Field(default=1000.0, ge=0)
    """Churn events per second; 0 appends as fast as the pipeline takes them."""
    clients: int = Field(default=50, ge=0)
    """Concurrent METADATA client tasks."""
    failover_checkers: int = Field(default=4, ge=0)
    fetchers: int = Field(default=4, ge=0)
    max_records_per_image: int = Field(default=2000, ge=1)
    snapshot_every: int = Field(default=50_000, ge=1)
    """Records between snapshots (older log is then dropped)."""
    log_dir: Path | None = None
    fsync: Literal["always", "never"] = "never"
    leak_detection: LeakDetectionLevel = LeakDetectionLevel.SIMPLE
    seed: int = 1
    listen: tuple[str, int] | None = None
    """Serve the Kafka protocol, one port per simulated broker: the first broker on
    (host, port), the others on the next free ports (port 0: ports of the system's
    choosing). Each broker advertises its own address."""
    max_connections: int = Field(default=1024, ge=1)
    """Connections the listener keeps; at the limit the one idle longest makes room."""
    idle_timeout: float = Field(default=600.0, gt=0)
    """Seconds a connection may wait between requests."""
    request_timeout: float = Field(default=30.0, gt=0)
    """Seconds a request may take to arrive once its first byte did (slowloris)."""
    metrics: tuple[str, int] | None = None
    """Serve Prometheus metrics at http://host:port/metrics (needs the ``[metrics]``
    extra)."""
    etcd: str | None = None
    """Keep the log in etcd (http://HOST:PORT[/PREFIX]) instead of memory or files."""
    etcd_open_timeout: float = Field(default=10.0, gt=0)
    """Seconds to wait for etcd when opening the log (then the run fails, exit 2)."""
    follow: bool = False
    """Only follow the shared log (another simulation writes it)."""

    @model_validator(mode="after")
    def _one_log(self) -> SimulationConfig:
        if self.etcd is not None and self.log_dir is not None:
            raise ValueError("choose one log: --etcd or --log-dir")
        if self.follow and self.etcd is None:
            raise ValueError("--follow needs a shared log (--etcd)")
        return self


@dataclass
class Progress:
    """A point-in-time view for the live display; rates cover the last interval."""

    elapsed: float
    offset: int
    records: int
    records_per_s: float
    images: int
    images_per_s: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    failover_checks: int
    partitions_in_failover: int
    failovers_completed: int
    live_images: int
    max_consumer_lag: int
    refcount_errors: int
    leaks: int
    consumer_faults: int


@dataclass
class SimulationSummary:
    """What a run did and whether it was clean (``--json`` writes this)."""

    seconds: float
    events: int
    batches: int
    records: int
    records_per_s: float
    images: int
    images_per_s: float
    final_offset: int
    """Offset of the image the run ended on (what the rest of the summary describes)."""
    log_end_offset: int
    """Last offset in the log (durable, with ``--fsync always``) when the run ended; the
    final image reached it unless the run was cut short."""
    brokers: int
    topics: int
    partitions: int
    streams: int
    metadata_requests: int
    requests_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    failover_checks: int
    failovers_completed: int
    partitions_in_failover: int
    fetches: int
    snapshots: int
    max_live_images: int
    live_images_at_end: int
    max_consumer_lag: int
    replay_errors: int
    refcount_errors: int
    released_reads: int
    leaks: int
    consumer_faults: int
    interrupted: bool
    resumed_from_offset: int
    image_sha256: str
    log_dir: str | None = None
    listen: str | None = None
    """The first broker's address (with ``--listen``)."""
    broker_addresses: dict[int, str] = field(default_factory=dict)
    """Every simulated broker's listener address, by broker id (with ``--listen``)."""
    wire_requests: int = 0
    role: str = "writer"
    """``writer`` appends churn; ``follower`` only follows a shared (etcd) log."""
    etcd: str | None = None
    etcd_outages: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """No reference-count error, refused read, leak, replay error or consumer fault."""
        return not (
            self.refcount_errors
            or self.released_reads
            or self.leaks
            or self.consumer_faults
            or self.replay_errors
            or self.errors
        )

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (what ``--json`` writes)."""
        return {**asdict(self), "healthy": self.healthy}


@dataclass(frozen=True, slots=True)
class FinalImage:
    """The image a run ends on, as the summary describes it."""

    sha256: str
    offset: int
    brokers: int
    topics: int
    partitions: int
    streams: int

    NONE: ClassVar[FinalImage]
    """What a run that ended before loading any image reports."""

    @classmethod
    def of(cls, image: MetadataImage) -> FinalImage:
        """Describe ``image`` (the caller holds it)."""
        return cls(
            image_fingerprint(image),
            image.offset,
            len(image.cluster.brokers),
            len(image.topics.by_id),
            image.topics.partition_count(),
            len(image.streams.streams),
        )


FinalImage.NONE = FinalImage("", -1, 0, 0, 0, 0)


def image_fingerprint(image: MetadataImage) -> str:
    """SHA-256 over the image's provenance and records: equal images, equal digests."""
    digest = hashlib.sha256(repr(image.provenance).encode())
    for data, _ in encoded_records(image):
        digest.update(data)
    return digest.hexdigest()


class _Latencies:
    """Request latencies: a window for the live display and a reservoir for the summary."""

    def __init__(self, seed: int, size: int = 50_000) -> None:
        self.window: list[float] = []
        self.sample: list[float] = []
        self.seen = 0
        self._size = size
        self._rng = random.Random(seed)

    def add(self, seconds: float) -> None:
        self.seen += 1
        if len(self.window) < 20_000:
            self.window.append(seconds)
        if len(self.sample) < self._size:
            self.sample.append(seconds)
        else:
            slot = self._rng.randrange(self.seen)
            if slot < self._size:
                self.sample[slot] = seconds

    @staticmethod
    def percentiles(values: list[float]) -> tuple[float, float]:
        if not values:
            return 0.0, 0.0
        ordered = sorted(values)
        last = len(ordered) - 1
        return ordered[int(last * 0.50)] * 1e3, ordered[int(last * 0.99)] * 1e3


@dataclass
class _Run:
    """What one run is made of: the log, the pipeline and its consumers."""

    log: RecordLog
    pipeline: MetadataPipeline
    cache: MetadataCache
    streams: StreamMetadataManager
    monitor: FailoverMonitor
    writer: SnapshotWriter | None = None
    listeners: dict[int, KafkaListener] = field(default_factory=dict)
    """One per simulated broker (with ``listen``), by broker id."""
    metrics: MetricsCollector | None = None
    controller: SyntheticController | None = None


class Simulation:
    """``await Simulation(config).run()`` runs the whole thing and returns the summary."""

    def __init__(
        self, config: SimulationConfig, *, on_progress: Callable[[Progress], None] | None = None
    ) -> None:
        self.config = config
        self.on_progress = on_progress
        self.on_listening: Callable[[dict[int, tuple[str, int]]], None] | None = None
        """Called once the listeners are open, with each broker's (host, port)."""
        self.metrics_address: tuple[str, int] | None = None
        """Where ``/metrics`` is served (with ``metrics``), once it is."""
        self.on_metrics: Callable[[tuple[str, int]], None] | None = None
        """Called once ``/metrics`` is served, with its (host, port)."""
        self._latencies = _Latencies(config.seed)
        self._requests = 0
        self._fetches = 0
        self._checks = 0
        self._mid_failover = 0
        self._max_live = 0
        self._max_lag = 0
        self._errors: list[str] = []
        self._interrupted = False
        self._log_end = -1
        self._started = 0.0
        self._events = 0
        self._batches = 0
        self._fenced = False
        self._etcd: EtcdRecordLog | None = None
        self._deadline = math.inf
        self._stoppables: list[anyio.CancelScope] = []

    # the log ------------------------------------------------------------------------------

    async def _open_log(self, stack: AsyncExitStack) -> RecordLog | None:
        """The run's log, open on ``stack``; None when the run was stopped meanwhile."""
        config = self.config
        if config.etcd is not None:
            # sources.EtcdRecordLog loads the etcd client: only runs on etcd pay for it.
            try:
                etcd_log = sources.EtcdRecordLog(config.etcd, open_timeout=config.etcd_open_timeout)
            except ImportError as missing:
                raise ConfigurationError(
                    f"--etcd needs the [etcd] extra ({missing.name} is missing): "
                    "pip install 'kraft-metadata-pipeline[etcd]'"
                ) from None
            self._etcd = await stack.enter_async_context(etcd_log)
            return self._etcd
        if config.log_dir is not None:
            opened: FileRecordLog | None = None
            with self._stoppable():  # recovering a large log takes a while: Ctrl-C ends it
                opened = await FileRecordLog.open(config.log_dir, fsync=config.fsync)
            return await stack.enter_async_context(opened) if opened is not None else None
        return InMemoryRecordSource("sim")

    def _stoppable(self) -> anyio.CancelScope:
        """A scope that ends at the run's deadline or on Ctrl-C, whichever comes first.

        The phases of a run that wait (recovering the log, resuming, the churn and the
        readers) each run in one; the pipeline itself does not, so that the summary can
        still be taken from it."""
        scope = anyio.CancelScope(deadline=self._deadline)
        if self._interrupted:
            scope.cancel()
        self._stoppables.append(scope)
        return scope

    # tasks --------------------------------------------------------------------------------

    async def _churn(
        self,
        log: RecordLog,
        controller: SyntheticController,
        pipeline: MetadataPipeline,
        bootstrapped: anyio.Event,
    ) -> None:
        """Bootstrap when needed, then append churn at ``rate`` events/s until the event
        budget ends (the duration cancels it from outside).

        The churn never runs more than ``MAX_LEAD_RECORDS`` ahead of the published image:
        controller and broker share one process here, and a controller that outruns its
        broker would only measure a growing backlog (and delay the end of the run)."""
        try:
            with single_cause():
                if not controller.bootstrapped:
                    # Pure and long at scale: generated part by part in a worker thread,
                    # never all at once, and never far ahead of the loader.
                    parts = controller.bootstrap_parts()
                    while (part := await anyio.to_thread.run_sync(next, parts, None)) is not None:
                        await log.append_batches(part)
                        self._batches += len(part)
                        await self._keep_lead(pipeline, part[-1].last_offset)
                bootstrapped.set()
                send, receive = anyio.create_memory_object_stream[RecordBatch](APPEND_QUEUE)
                async with anyio.create_task_group() as appends:
                    appends.start_soon(self._appender, log, receive)
                    async with send:
                        await self._generate(controller, pipeline, send)
        except WriterFencedError as fenced:
            # Another simulation claimed the shared log: follow it from now on.
            logger.warning("simulation_fenced", log=log.name, error=str(fenced))
            self._fenced = True
        finally:
            bootstrapped.set()  # fenced or not, readers serve what the log holds

    async def _generate(
        self,
        controller: SyntheticController,
        pipeline: MetadataPipeline,
        send: MemoryObjectSendStream[RecordBatch],
    ) -> None:
        """Churn events at ``rate``, handed to the appender in order; ends when the
        appender does (its error, fenced or other, is what the task group raises)."""
        config = self.config
        interval = 1.0 / config.rate if config.rate else 0.0
        next_at = yielded = time.monotonic()
        while config.events is None or self._events < config.events:
            last = -1
            for batch in controller.churn():
                try:
                    try:  # no checkpoint per batch: the churn yields every few events below
                        send.send_nowait(batch)
                    except anyio.WouldBlock:
                        await send.send(batch)  # the appender is behind: wait for room
                except anyio.BrokenResourceError:
                    # The appender failed and closed the queue, and this task woke
                    # before the task group's cancellation reached it.
                    return
                last = batch.last_offset
                if time.monotonic() - yielded >= CHURN_SLICE:
                    # A node's event at scale is thousands of batches, built as they are
                    # taken: a slice at a time, and never far ahead of the loader.
                    await self._keep_lead(pipeline, last)
                    await checkpoint()
                    yielded = time.monotonic()
            self._events += 1
            await self._keep_lead(pipeline, last)
            now = time.monotonic()
            delay = (next_at := next_at + interval) - now if interval else 0.0
            if delay > 0:
                await anyio.sleep(delay)
                yielded = time.monotonic()
            elif now - yielded >= CHURN_SLICE:
                # Behind schedule (or unthrottled): keep generating, but never hold the
                # event loop for longer than a slice (a node event alone is thousands
                # of records at scale).
                await checkpoint()
                yielded = time.monotonic()

    @staticmethod
    async def _keep_lead(pipeline: MetadataPipeline, last: int) -> None:
        """Wait while the log runs more than ``MAX_LEAD_RECORDS`` ahead of the loader."""
        if last - pipeline.loader.offset > MAX_LEAD_RECORDS:
            with await pipeline.wait_for_offset(last - MAX_LEAD_RECORDS // 2):
                pass

    async def _appender(
        self, log: RecordLog, batches: MemoryObjectReceiveStream[RecordBatch]
    ) -> None:
        """Append the churn in order; what queued up while the last append was syncing
        goes in as one group (with ``--fsync always``: one fsync for all of it), as a
        controller pipelines its writes. Ends when the churn does, after the last batch."""
        async with batches:
            async for batch in batches:
                group = [batch]
                while len(group) < MAX_APPEND_GROUP:
                    try:
                        group.append(batches.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await log.append_batches(group)
                self._batches += len(group)

    async def _serve_once_loaded(
        self, run: _Run, bootstrapped: anyio.Event, serving: anyio.Event
    ) -> None:
        """Let the readers in once the image holds what the log held at start (the
        bootstrap, or the resumed log), as a Kafka broker opens its client listeners
        only after catching up: readers that poll a loading broker would only take the
        event loop from the loader (at 100k partitions, for minutes)."""
        await bootstrapped.wait()
        end = await run.log.high_water_mark() - 1
        if end >= 0:
            with await run.cache.wait_for_offset(end):
                pass
        seconds = round(time.monotonic() - self._started, 3)
        logger.info("simulation_serving", offset=end, seconds=seconds)
        serving.set()

    async def _client(
        self, cache: MetadataCache, topics: list[str], rng: random.Random, serving: anyio.Event
    ) -> None:
        await serving.wait()
        while True:
            if not topics or rng.random() < 0.05:
                request = MetadataRequest(version=rng.choice((1, 5, 9, 12, 13)))
            else:
                request = MetadataRequest.for_topics(*rng.sample(topics, min(3, len(topics))))
            started = time.perf_counter()
            cache.metadata(request)
            self._latencies.add(time.perf_counter() - started)
            self._requests += 1
            await checkpoint()
            if rng.random() < 0.1 or not topics:
                with cache.lease() as image:
                    topics[:] = islice(image.topics.by_name.keys(), 200)

    async def _failover_checker(self, cache: MetadataCache, serving: anyio.Event) -> None:
        key = failover_state_key(cache.cluster_id)
        await serving.wait()
        while True:
            with cache.lease() as image:
                await checkpoint()  # the pipeline moves on while this image is leased
                # The image's partitions mid-failover, kept up to date image by image:
                # a check costs what is in failover, not the cluster's size.
                self._mid_failover = len(image.derived(key).in_failover)
                self._checks += 1
            await anyio.sleep(0.01)

    async def _fetcher(
        self,
        cache: MetadataCache,
        streams: StreamMetadataManager,
        rng: random.Random,
        serving: anyio.Event,
    ) -> None:
        candidates: list[tuple[int, int, int]] = []
        seen_offset = -2
        await serving.wait()
        while True:
            with cache.lease() as image:
                if image.offset != seen_offset:  # a new image: pick the candidates again
                    seen_offset = image.offset
                    # Streams with data among the first 500 (never a walk of every stream).
                    candidates = [
                        (s.stream_id, s.start_offset, s.end_offset)
                        for s in islice(image.streams.streams.values(), 500)
                        if s.end_offset > s.start_offset
                    ]
            if candidates:
                stream_id, start, end = rng.choice(candidates)
                # Mostly committed data; sometimes past it, which parks until a commit.
                end = end + rng.randint(1, 50) if rng.random() < 0.2 else end
                try:
                    await streams.fetch(stream_id, start, end)
                    self._fetches += 1
                except (StreamFetchError, FetchTimeoutError):
                    pass  # trimmed, deleted, or the range never got committed
            await anyio.sleep(0.005)

    def progress(
        self,
        pipeline: MetadataPipeline,
        monitor: FailoverMonitor,
        window: float,
        last: tuple[int, int],
    ) -> Progress:
        """Counters now; rates over the last ``window`` seconds since ``last`` (records, images)."""
        stats = pipeline.statistics()
        lifetime = lifetime_statistics()
        lag = max((c.lag_images for c in stats.consumers), default=0)
        self._max_lag = max(self._max_lag, lag)
        self._max_live = max(self._max_live, lifetime.live)
        p50, p99 = _Latencies.percentiles(self._latencies.window)
        requests = len(self._latencies.window)
        self._latencies.window = []
        failover = monitor.statistics()
        return Progress(
            elapsed=time.monotonic() - self._started,
            offset=stats.current_offset,
            records=stats.loader.records,
            records_per_s=(stats.loader.records - last[0]) / window,
            images=stats.images_published,
            images_per_s=(stats.images_published - last[1]) / window,
            requests=self._requests,
            requests_per_s=requests / window,
            p50_ms=p50,
            p99_ms=p99,
            failover_checks=self._checks,
            partitions_in_failover=failover.partitions_in_failover,
            failovers_completed=failover.completed,
            live_images=lifetime.live,
            max_consumer_lag=lag,
            refcount_errors=lifetime.reference_count_errors + lifetime.released_reads,
            leaks=lifetime.leaks,
            consumer_faults=stats.consumer_faults,
        )

    async def _reporter(
        self, pipeline: MetadataPipeline, monitor: FailoverMonitor, every: float
    ) -> None:
        last, last_at = (0, 0), time.monotonic()
        while True:
            await anyio.sleep(every)
            now = time.monotonic()
            progress = self.progress(pipeline, monitor, max(now - last_at, 1e-9), last)
            last, last_at = (progress.records, progress.images), now
            if self.on_progress is not None:
                self.on_progress(progress)

    def interrupt(self) -> None:
        """Stop the run as Ctrl-C would: the phase under way ends, and the run ends with
        its summary (called before the run: it ends right after start-up). Call it from
        the event loop's thread: a task, a callback, or a signal handler there."""
        self._interrupted = True
        for scope in self._stoppables:
            scope.cancel()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                logger.warning("simulation_interrupted")
                self.interrupt()
                return

    # the run ------------------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> SimulationSummary:
        """Run until ``duration`` (counted from now, start-up included), the event budget
        or Ctrl-C, and summarise. Signals are handled from the first instant: an
        interrupted start-up still ends with a summary."""
        config = self.config
        previous_level = set_leak_detection_level(config.leak_detection)
        base = lifetime_statistics()
        self._started = time.monotonic()
        if config.duration is not None:
            self._deadline = self._started + config.duration
        cache = MetadataCache(config.workload.cluster_id, rng=random.Random(config.seed))
        streams = StreamMetadataManager(fetch_timeout=2.0)
        monitor = FailoverMonitor(config.workload.cluster_id, interval=1.0)
        summary: SimulationSummary | None = None
        try:
            with single_cause():
                async with anyio.create_task_group() as signals:
                    if handle_signals:
                        signals.start_soon(self._signals)
                    try:
                        summary = await self._run(cache, streams, monitor, base)
                    finally:
                        signals.cancel_scope.cancel()
        finally:
            cache.close()
            streams.close()
            set_leak_detection_level(previous_level)
        assert summary is not None  # _run returned, or its error propagated
        return summary

    async def _run(
        self,
        cache: MetadataCache,
        streams: StreamMetadataManager,
        monitor: FailoverMonitor,
        base: LifetimeStatistics,
    ) -> SimulationSummary:
        config = self.config
        run: _Run | None = None
        final = FinalImage.NONE
        resumed_from = -1
        async with AsyncExitStack() as stack:
            log = await self._open_log(stack)
            if log is not None:
                await stack.enter_async_context(monitor)
                pipeline = await stack.enter_async_context(
                    MetadataPipeline(
                        log, max_records_per_image=config.max_records_per_image, name="sim"
                    )
                )
                run = _Run(log, pipeline, cache, streams, monitor)
                if config.metrics is not None:
                    run.metrics = await self._serve_metrics(stack, run, *config.metrics)
                pipeline.add_consumer(cache, DeliveryMode.LATEST_IMAGE)
                pipeline.add_consumer(streams, DeliveryMode.EVERY_DELTA, queue_size=64)
                pipeline.add_consumer(monitor, DeliveryMode.LATEST_IMAGE)
                if not config.follow:  # followers leave snapshots to the writer
                    run.writer = SnapshotWriter(log, every_records=config.snapshot_every)
                    pipeline.add_consumer(run.writer, DeliveryMode.LATEST_IMAGE)
                if config.listen is not None:
                    host, port = config.listen
                    run.listeners = await stack.enter_async_context(
                        broker_listeners(
                            cache,
                            range(1, config.workload.brokers + 1),
                            host=host,
                            port=port,
                            max_connections=config.max_connections,
                            idle_timeout=config.idle_timeout,
                            request_timeout=config.request_timeout,
                        )
                    )
                    if run.metrics is not None:
                        run.metrics.listeners = run.listeners.values()
                    if self.on_listening is not None:
                        self.on_listening(
                            {b: (lst.host, lst.port) for b, lst in run.listeners.items()}
                        )
                if not config.follow:
                    with self._stoppable():
                        run.controller = await self._controller_for(run)
                    if run.controller is not None and run.controller.bootstrapped:
                        resumed_from = run.controller.next_offset - 1
                with self._stoppable():
                    await self._run_tasks(run)
                complete = config.duration is None and not self._interrupted
                if run.writer is not None and not complete:
                    # The deadline (or Ctrl-C) ends the run's work: a snapshot being
                    # encoded stops at its next pause, and leaves the CPU (and the GIL) to
                    # the loader's last images and the fingerprint. An event-bounded run
                    # keeps writing, as it waits for the loader anyway.
                    run.pipeline.remove_consumer(run.writer.name)
                # An event-bounded run waits for the loader to reach the end of the log
                # (the same seed gives the same final image). A timed run waits until
                # END_WAIT_SECONDS past its duration (the churn runs at most
                # MAX_LEAD_RECORDS ahead), an interrupted one a second: the summary
                # names both offsets when they differ.
                log_end = self._log_end = await run.log.high_water_mark() - 1
                if self._interrupted:  # Ctrl-C may also come after the tasks ended
                    wait = 1.0
                elif complete:
                    wait = 30.0
                else:
                    wait = self._deadline + END_WAIT_SECONDS - time.monotonic()
                final = await self._final_image(run, log_end, wait=wait)
                if run.writer is not None and complete and not self._interrupted:
                    # An event-bounded run ends with the snapshot that was due (closing
                    # the pipeline would stop one being written).
                    with anyio.move_on_after(30.0):
                        await run.writer.wait_for_offset(final.offset)
        cache.close()  # the consumers release their images before the summary counts them
        streams.close()
        return self._summary(run, final, resumed_from, base)

    def _summary(
        self, run: _Run | None, final: FinalImage, resumed_from: int, base: LifetimeStatistics
    ) -> SimulationSummary:
        config = self.config
        lifetime = lifetime_statistics()
        elapsed = time.monotonic() - self._started
        p50, p99 = _Latencies.percentiles(self._latencies.sample)
        stats = run.pipeline.statistics() if run is not None else None
        failover = run.monitor.statistics() if run is not None else None
        listeners = run.listeners if run is not None else {}
        writer = run.writer if run is not None else None
        records = stats.loader.records if stats is not None else 0
        images = stats.images_published if stats is not None else 0
        return SimulationSummary(
            seconds=round(elapsed, 3),
            events=self._events,
            batches=self._batches,
            records=records,
            records_per_s=round(records / elapsed, 1),
            images=images,
            images_per_s=round(images / elapsed, 1),
            final_offset=final.offset,
            log_end_offset=self._log_end,
            brokers=final.brokers,
            topics=final.topics,
            partitions=final.partitions,
            streams=final.streams,
            metadata_requests=self._requests,
            requests_per_s=round(self._requests / elapsed, 1),
            latency_p50_ms=round(p50, 3),
            latency_p99_ms=round(p99, 3),
            failover_checks=self._checks,
            failovers_completed=failover.completed if failover is not None else 0,
            partitions_in_failover=failover.partitions_in_failover if failover is not None else 0,
            fetches=self._fetches,
            snapshots=writer.snapshots if writer is not None else 0,
            max_live_images=max(self._max_live, lifetime.live),
            live_images_at_end=lifetime.live - base.live,
            max_consumer_lag=self._max_lag,
            replay_errors=stats.replay_errors if stats is not None else 0,
            refcount_errors=lifetime.reference_count_errors - base.reference_count_errors,
            released_reads=lifetime.released_reads - base.released_reads,
            leaks=lifetime.leaks - base.leaks,
            consumer_faults=stats.consumer_faults if stats is not None else 0,
            interrupted=self._interrupted,
            resumed_from_offset=resumed_from,
            image_sha256=final.sha256,
            log_dir=str(config.log_dir) if config.log_dir is not None else None,
            listen=next((f"{lst.host}:{lst.port}" for lst in listeners.values()), None),
            broker_addresses={b: f"{lst.host}:{lst.port}" for b, lst in listeners.items()},
            role="follower" if config.follow or self._fenced else "writer",
            etcd=config.etcd,
            etcd_outages=self._etcd.statistics().outages if self._etcd is not None else 0,
            wire_requests=sum(
                sum(lst.statistics().requests.values()) for lst in listeners.values()
            ),
            errors=self._errors,
        )

    async def _serve_metrics(
        self, stack: AsyncExitStack, run: _Run, host: str, port: int
    ) -> MetricsCollector:
        """A collector of this run's components, served on its own registry (with the
        process's memory and CPU) for as long as the run lasts."""
        try:
            from broker.metrics import MetricsCollector, serve_metrics
        except ImportError as missing:
            raise ConfigurationError(
                f"metrics need prometheus_client ({missing}): "
                "pip install 'kraft-metadata-pipeline[metrics]'"
            ) from None
        from prometheus_client import CollectorRegistry, ProcessCollector

        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        collector = MetricsCollector(
            pipeline=run.pipeline, cache=run.cache, monitor=run.monitor, etcd=self._etcd
        )
        registry.register(collector)
        bound = await stack.enter_async_context(serve_metrics(host, port, registry))
        self.metrics_address = bound
        logger.info("metrics_served", url=f"http://{bound[0]}:{bound[1]}/metrics")
        if self.on_metrics is not None:
            self.on_metrics(bound)
        return collector

    async def _controller_for(self, run: _Run) -> SyntheticController:
        """A fresh controller for an empty log; a resumed one for a log with history.

        With listeners, every broker advertises the address its own listener really has
        (a resumed log re-registers its brokers with it), so real clients reach this
        process, one address per broker.
        """
        host, ports = None, {}
        if run.listeners:
            host = _advertised(next(iter(run.listeners.values())).host)
            ports = {broker: listener.port for broker, listener in run.listeners.items()}
        if self._etcd is not None:
            # Claim the shared log first: from here on nobody else appends, so the
            # image the controller resumes from stays the head of the log.
            await self._etcd.claim()
        hwm = await run.log.high_water_mark()
        if hwm == 0:
            return SyntheticController(
                self.config.workload, listener_host=host, listener_ports=ports
            )
        with await run.cache.wait_for_offset(hwm - 1) as image:
            logger.info("simulation_resumed", offset=image.offset, log=run.log.name)
            controller = SyntheticController.resume(
                self.config.workload, image, listener_host=host, listener_ports=ports
            )
        if run.listeners:
            for batch in controller.reregister_brokers():
                await run.log.append_batch(batch)
        return controller

    async def _run_tasks(self, run: _Run) -> None:
        """The controller and the reader tasks, until the event budget is spent or the
        run's scope ends (duration, Ctrl-C)."""
        config = self.config
        bootstrapped, serving = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._reporter, run.pipeline, run.monitor, 0.5)
            tg.start_soon(self._serve_once_loaded, run, bootstrapped, serving)
            topics: list[str] = []
            for index in range(config.clients):
                rng = random.Random(config.seed + index)
                tg.start_soon(self._client, run.cache, topics, rng, serving)
            for _ in range(config.failover_checkers):
                tg.start_soon(self._failover_checker, run.cache, serving)
            for index in range(config.fetchers):
                rng = random.Random(config.seed * 7 + index)
                tg.start_soon(self._fetcher, run.cache, run.streams, rng, serving)
            if run.controller is not None:
                await self._churn(run.log, run.controller, run.pipeline, bootstrapped)
            else:
                bootstrapped.set()
            if run.controller is None or config.duration is not None:
                await anyio.sleep_forever()  # serve until the duration ends
            tg.cancel_scope.cancel()

    async def _final_image(self, run: _Run, last: int, *, wait: float) -> FinalImage:
        """Give the loader up to ``wait`` seconds to reach offset ``last`` (the end of the
        log), then describe the image the cache holds."""
        with anyio.move_on_after(wait):
            with await run.cache.wait_for_offset(last):
                pass
        with run.cache.lease() as image:
            if image.offset < 0:
                return FinalImage.NONE
            # Hashing every record takes seconds at 100k partitions: a worker thread
            # does it (the image is leased meanwhile), the event loop stays free.
            return await anyio.to_thread.run_sync(FinalImage.of, image)


def _advertised(host: str) -> str:
    """An address clients can reach: a wildcard bind advertises this machine's name."""
    return socket.gethostname() if host in ("", "0.0.0.0", "::") else host
