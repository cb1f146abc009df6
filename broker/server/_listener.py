"""A TCP listener speaking the Kafka protocol, answering from the metadata cache.

Every request is answered from one leased image. Metadata responses are assembled from
encoded fragments that are per-image derived state following the delta (see
``_metadata_wire``): a request costs a few lookups and one concatenation, and a new
image re-encodes only the topics its delta changed.

Bad input never takes the server down: a frame with a negative or oversized length, a
truncated frame, an unknown API key or an undecodable body closes that connection with
a logged reason; every other connection keeps being served. Max connections and an
idle timeout bound resources; leaving ``async with`` stops accepting, closes idle
connections and lets in-flight requests finish (within ``shutdown_grace`` seconds).
"""

from __future__ import annotations

import errno
import math
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Generator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream
from anyio.lowlevel import checkpoint

from broker._histogram import HistogramSnapshot, LatencyHistogram
from broker._logging import get_logger
from broker._tasks import Notifier, single_cause
from broker.cache import DEFAULT_LISTENER, MetadataCache, MetadataRequest
from broker.errors import ConfigurationError, ListenError, ProtocolError
from broker.server._metadata_wire import wire_metadata_key
from broker.server._protocol import (
    API_VERSIONS,
    DESCRIBE_CLUSTER,
    DESCRIBE_CONFIGS,
    DESCRIBE_TOPIC_PARTITIONS,
    METADATA,
    api_versions_response,
    configs_requests,
    decode_request,
    describe_cluster_body,
    describe_configs_body,
    describe_topic_partitions_body,
    metadata_request,
    response_head,
    topic_partitions_request,
)

__all__ = ["KafkaListener", "ListenerStatistics", "broker_listeners"]

logger = get_logger(__name__)

DEFAULT_MAX_FRAME_BYTES = 100 * 1024 * 1024
_API_NAMES = {
    API_VERSIONS: "ApiVersions",
    METADATA: "Metadata",
    DESCRIBE_CLUSTER: "DescribeCluster",
    DESCRIBE_CONFIGS: "DescribeConfigs",
    DESCRIBE_TOPIC_PARTITIONS: "DescribeTopicPartitions",
}
_INT32 = struct.Struct(">i")

ANSWER_SLICE_SECONDS = 0.002
"""Work an all-topics answer does per turn of the event loop when its fragments must be
built (after a delta that touched many topics): other connections are served between."""


@dataclass(frozen=True, slots=True)
class ListenerStatistics:
    """The listener's connections, requests and bytes."""

    address: tuple[str, int]
    connections_open: int
    connections_total: int
    connections_refused: int
    requests: dict[str, int]
    """Requests answered, by API name."""
    latency: dict[tuple[str, int], HistogramSnapshot]
    """Seconds to answer, by (API name, version)."""
    closed: dict[str, int]
    """Connections closed, by reason (``client``, ``idle``, ``protocol``, ...)."""
    bytes_in: int
    bytes_out: int


class _Connection:
    __slots__ = ("busy", "evicted", "expired", "idle_since", "peer", "request_since", "scope")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.busy = False
        self.evicted = False
        self.expired: str | None = None
        """Why the reaper cut the connection off (a timeout), if it did."""
        self.idle_since: float | None = None
        """When it began waiting for a request (None: a request is under way)."""
        self.request_since: float | None = None
        """When the first byte of the request being received arrived (None: none is)."""
        self.scope = anyio.CancelScope()


class KafkaListener(anyio.AsyncContextManagerMixin):
    """``async with KafkaListener(cache, host="127.0.0.1", port=0) as listener:``"""

    def __init__(
        self,
        cache: MetadataCache,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        listener_name: str = DEFAULT_LISTENER,
        broker_id: int | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_connections: int = 1024,
        idle_timeout: float = 600.0,
        request_timeout: float = 30.0,
        shutdown_grace: float = 5.0,
    ) -> None:
        if max_frame_bytes < 1 or max_connections < 1:
            raise ConfigurationError("max_frame_bytes and max_connections must be positive")
        if idle_timeout <= 0 or request_timeout <= 0:
            raise ConfigurationError("idle_timeout and request_timeout must be positive")
        self.cache = cache
        self.host = host
        self.port = port
        self.listener_name = listener_name
        self.broker_id = broker_id
        """The broker this listener is (its own configs answer DescribeConfigs for a broker
        resource; None: only the cluster-wide default does)."""
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        """Seconds a connection may wait between requests before it is closed."""
        self.request_timeout = request_timeout
        """Seconds a request may take to arrive once its first byte did (a client that
        trickles bytes, slowloris-style, is closed after it)."""
        self.shutdown_grace = shutdown_grace
        self._wire_key = wire_metadata_key(cache.settings(listener_name))
        self._connections: set[_Connection] = set()
        self._socket_listener: anyio.abc.Listener[SocketStream] | None = None
        self._sockets: list[socket.socket] = []
        self._accepted: set[socket.socket] = set()
        """Accepted sockets whose connection task has not started yet."""
        self._task_group: anyio.abc.TaskGroup | None = None
        self._closing = False
        self._idle = Notifier()
        self._total = 0
        self._refused = 0
        self._requests: Counter[str] = Counter()
        self._latency: dict[tuple[str, int], LatencyHistogram] = {}
        self._closed: Counter[str] = Counter()
        self._bytes_in = 0
        self._bytes_out = 0

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the listener is bound to."""
        return self.host, self.port

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[KafkaListener]:
        with single_cause():
            try:
                listener = await anyio.create_tcp_listener(
                    local_host=self.host, local_port=self.port
                )
            except OSError as error:
                reason = error.strerror or str(error)
                raise ListenError(self.host, self.port, reason, error.errno) from error
            self.port = listener.extra(SocketAttribute.local_port)
            sockets = [
                sub.extra(SocketAttribute.raw_socket)
                for sub in getattr(listener, "listeners", (listener,))
            ]
            logger.info(
                "listener_started", host=self.host, port=self.port, listener=self.listener_name
            )
            async with anyio.create_task_group() as task_group:
                self._socket_listener, self._task_group = listener, task_group
                self._sockets = sockets
                for raw in sockets:
                    task_group.start_soon(self._accept, raw, task_group)
                task_group.start_soon(self._reap)
                try:
                    yield self
                finally:
                    await self.stop()
            # Accepted at the last moment, their tasks cancelled before they ran.
            for client in self._accepted:
                client.close()
            self._accepted.clear()

    async def _accept(self, raw: socket.socket, task_group: anyio.abc.TaskGroup) -> None:
        """Accept every pending connection at each wake-up, not one per turn of the event
        loop: under load a turn can take long, and a queue of new clients would drain
        one per turn (anyio's ``serve`` checkpoints before each accept)."""
        while True:
            try:
                await anyio.wait_readable(raw)
            except (anyio.ClosedResourceError, OSError):
                return  # stop() closed the socket
            while True:
                try:
                    client, _ = raw.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as error:  # out of descriptors, ...: the next wake-up retries
                    logger.warning("accept_failed", port=self.port, error=str(error))
                    await anyio.sleep(0.1)
                    break
                self._accepted.add(client)
                task_group.start_soon(self._serve_socket, client)

    async def _serve_socket(self, client: socket.socket) -> None:
        self._accepted.discard(client)  # this task owns it now
        try:
            client.setblocking(False)
            if client.family in (socket.AF_INET, socket.AF_INET6):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self._serve(client, _peer(client))
        finally:
            client.close()

    async def _reap(self) -> None:
        """Cut off connections idle longer than ``idle_timeout`` and requests arriving
        for longer than ``request_timeout``: one task looks at every connection a few
        times per timeout, so a request costs no timer of its own."""
        period = min(1.0, max(0.01, min(self.idle_timeout, self.request_timeout) / 4))
        while True:
            await anyio.sleep(period)
            now = time.monotonic()
            for connection in list(self._connections):
                idle_since, request_since = connection.idle_since, connection.request_since
                if idle_since is not None and now - idle_since >= self.idle_timeout:
                    connection.expired = f"idle: no request for {self.idle_timeout:g}s"
                elif request_since is not None and now - request_since >= self.request_timeout:
                    connection.expired = (
                        f"timeout: request not received within {self.request_timeout:g}s"
                    )
                else:
                    continue
                connection.scope.cancel()

    async def stop(self) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish (up to
        ``shutdown_grace`` seconds), then end every connection. Idempotent."""
        listener, task_group = self._socket_listener, self._task_group
        if listener is None or task_group is None or self._closing:
            return
        with anyio.CancelScope(shield=True):
            self._closing = True
            for raw in self._sockets:
                anyio.notify_closing(raw)  # wakes the accept loops, which end
            await listener.aclose()
            for connection in list(self._connections):
                if not connection.busy:
                    connection.scope.cancel()
            with anyio.move_on_after(self.shutdown_grace):
                while any(c.busy for c in self._connections):
                    await self._idle.wait()
            task_group.cancel_scope.cancel()
        logger.info("listener_stopped", host=self.host, port=self.port)

    # one connection ---------------------------------------------------------------------

    async def _serve(self, client: socket.socket, peer: str) -> None:
        if not self._closing and len(self._connections) >= self.max_connections:
            self._evict_oldest_idle()
        if self._closing or len(self._connections) >= self.max_connections:
            self._refused += 1
            if self._closing:
                logger.info("connection_refused", peer=peer, reason="shutting down")
            else:
                logger.warning(
                    "connection_refused",
                    peer=peer,
                    reason="max_connections, none idle",
                    limit=self.max_connections,
                )
            return
        connection = _Connection(peer)
        self._connections.add(connection)
        self._total += 1
        reason = "client closed"
        try:
            with connection.scope:
                reason = await self._requests_of(client, connection)
            if connection.scope.cancelled_caught:
                if connection.expired is not None:
                    reason = connection.expired
                elif connection.evicted:
                    reason = "idle: evicted for a new connection"
                else:
                    reason = "shutdown"
        finally:
            self._connections.discard(connection)
            connection.busy = False
            self._idle.notify()
        kind = reason.split(":", 1)[0]
        self._closed[kind] += 1
        log = logger.info if kind in ("client closed", "shutdown", "idle") else logger.warning
        log("connection_closed", peer=peer, reason=reason)

    def _evict_oldest_idle(self) -> None:
        """Make room for a new connection: close the one idle the longest, if any (a
        full listener favours clients with work over connections that only wait)."""
        idle = [c for c in self._connections if c.idle_since is not None and not c.evicted]
        if idle:
            oldest = min(idle, key=lambda c: c.idle_since or 0.0)
            oldest.evicted = True
            self._connections.discard(oldest)  # its slot is the new connection's now
            oldest.scope.cancel()

    async def _requests_of(self, client: socket.socket, connection: _Connection) -> str:
        """Serve requests until the connection ends; returns why it ended.

        On the raw non-blocking socket: a request costs one wait for it to arrive and
        one send, without stream layers, pausing and resuming the reader, or a timer of
        its own (the reaper enforces the timeouts).
        """
        buffer = bytearray()
        while not self._closing:
            connection.idle_since = time.monotonic()
            # Every request starts with one turn for the other tasks, even when it is
            # already there: a client that sends as fast as it is answered must not keep
            # the event loop to itself. After that turn a busy client's next request has
            # usually arrived: read it at once, and wait for it (two epoll_ctl calls
            # and a future) only when it has not.
            await checkpoint()
            if not buffer and not await _receive_into(client, buffer):
                return "client closed"
            connection.idle_since = None
            connection.request_since = time.monotonic()
            while len(buffer) < 4:
                if not await _receive_into(client, buffer):
                    return "protocol: truncated frame"
            size = _INT32.unpack_from(buffer)[0]
            if size < 0 or size > self.max_frame_bytes:
                return f"protocol: frame length {size} out of range (max {self.max_frame_bytes})"
            connection.busy = True
            while len(buffer) < 4 + size:
                if not await _receive_into(client, buffer):
                    return f"protocol: truncated frame ({size} bytes announced)"
            connection.request_since = None
            frame = bytes(buffer[4 : 4 + size])
            del buffer[: 4 + size]
            self._bytes_in += 4 + size
            try:
                parts = await self._respond(frame)
            except ProtocolError as error:
                return f"protocol: {error}"
            except Exception as error:  # a bug here must not take the listener down
                logger.error(
                    "request_failed", peer=connection.peer, error=repr(error), exc_info=error
                )
                return f"internal error: {type(error).__name__}"
            if not await _send_all(client, parts):
                return "client closed"
            self._bytes_out += sum(len(part) for part in parts)
            connection.busy = False
            self._idle.notify()
        return "shutdown"

    # requests ----------------------------------------------------------------------------

    def respond(self, frame: bytes) -> bytes:
        """The response frame for one request frame (sync: one lease per answer)."""
        steps = self._answer(frame, math.inf)
        try:
            while True:
                next(steps)
        except StopIteration as done:
            return b"".join(done.value)

    async def _respond(self, frame: bytes) -> tuple[bytes, ...]:
        """:meth:`respond` between turns of the event loop (see :meth:`_answer`); the
        response comes in parts, sent as they are (a large body is not copied again)."""
        steps = self._answer(frame, ANSWER_SLICE_SECONDS)
        try:
            while True:
                next(steps)
                await checkpoint()
        except StopIteration as done:
            parts: tuple[bytes, ...] = done.value
            return parts
        finally:
            steps.close()  # cancelled mid-answer: its lease ends now

    def _answer(
        self, frame: bytes, slice_seconds: float
    ) -> Generator[None, None, tuple[bytes, ...]]:
        """Answer ``frame``, pausing (``yield``) after every ``slice_seconds`` of work on
        an all-topics Metadata answer whose fragments are not built yet (after a delta
        that touched many topics); returns the response's parts."""
        started = time.perf_counter()
        api_key, version, correlation_id, body = decode_request(frame)
        if api_key != METADATA:
            answer = self._other(api_key, version, body)
            return self._finish(api_key, version, correlation_id, answer, started)
        request = self._metadata_request(body, version)
        with self.cache.lease() as image:
            answers = self.cache.answers(image, self.listener_name)
            wire = image.derived(self._wire_key)
            if request.wants_all_topics:
                yield from wire.prepare_all_topics(image, answers, version, slice_seconds)
            parts = wire.body_parts(image, answers, request, self.cache.rng)
        return self._finish(api_key, version, correlation_id, parts, started)

    def _finish(
        self,
        api_key: int,
        version: int,
        correlation_id: int,
        answer: tuple[bytes, ...] | bytes | None,
        started: float,
    ) -> tuple[bytes, ...]:
        name = _API_NAMES[api_key]
        if answer is None:
            response: tuple[bytes, ...] = (api_versions_response(version, correlation_id),)
        else:
            parts = (answer,) if isinstance(answer, bytes) else answer
            size = sum(map(len, parts))
            response = (response_head(api_key, version, correlation_id, size), *parts)
        self._requests[name] += 1
        histogram = self._latency.get((name, version))
        if histogram is None:
            histogram = self._latency[(name, version)] = LatencyHistogram()
        histogram.observe(time.perf_counter() - started)
        return response

    def _other(self, api_key: int, version: int, body: object) -> bytes | None:
        """The answer body of a request other than Metadata (None for ApiVersions, whose
        response is encoded whole)."""
        cache = self.cache
        if api_key == API_VERSIONS:
            return None
        if api_key == DESCRIBE_CLUSTER:
            return describe_cluster_body(cache.describe_cluster(self.listener_name), version)
        if api_key == DESCRIBE_CONFIGS:
            resources, synonyms = configs_requests(body)
            results = cache.describe_configs(
                resources, broker_id=self.broker_id, include_synonyms=synonyms
            )
            return describe_configs_body(results, version)
        assert api_key == DESCRIBE_TOPIC_PARTITIONS  # decode_request refuses the rest
        topics = cache.describe_topic_partitions(
            topic_partitions_request(body), listener=self.listener_name
        )
        return describe_topic_partitions_body(topics)

    @staticmethod
    def _metadata_request(body: object, version: int) -> MetadataRequest:
        try:
            return metadata_request(body, version)
        except ValueError as error:
            raise ProtocolError(f"invalid Metadata request: {error}") from None

    def statistics(self) -> ListenerStatistics:
        """The listener's connections, requests, latencies and bytes now."""
        return ListenerStatistics(
            address=self.address,
            connections_open=len(self._connections),
            connections_total=self._total,
            connections_refused=self._refused,
            requests=dict(self._requests),
            latency={key: histogram.snapshot() for key, histogram in self._latency.items()},
            closed=dict(self._closed),
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
        )


@asynccontextmanager
async def broker_listeners(
    cache: MetadataCache,
    broker_ids: Iterable[int],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **options: Any,
) -> AsyncIterator[dict[int, KafkaListener]]:
    """One listener per broker, all answering from ``cache``, as a real cluster gives each
    broker its own address: the lowest id listens on ``port``, the next ones on the next
    free ports after it (port 0: every broker gets a port of the system's choosing).

    ``options`` go to every :class:`KafkaListener`. Yields the listeners by broker id.
    """
    ids = sorted(set(broker_ids))
    async with AsyncExitStack() as stack:
        listeners: dict[int, KafkaListener] = {}
        candidate = port
        for index, broker_id in enumerate(ids):
            for _ in range(_PORT_SEARCH):
                listener = KafkaListener(
                    cache, host=host, port=candidate, broker_id=broker_id, **options
                )
                try:
                    await stack.enter_async_context(listener)
                except ListenError as error:
                    if index == 0 or port == 0 or error.errno != errno.EADDRINUSE:
                        raise
                    candidate += 1
                    continue
                break
            else:
                raise ListenError(
                    host, candidate, f"no free port among the {_PORT_SEARCH} after {port}"
                )
            listeners[broker_id] = listener
            if port != 0:
                candidate = listener.port + 1
        yield listeners


_PORT_SEARCH = 100
"""How many ports after a busy one a broker's listener tries."""


def _peer(client: socket.socket) -> str:
    try:
        address = client.getpeername()
    except OSError:
        return "unknown"
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


_RECEIVE_BYTES = 65536


async def _receive_into(client: socket.socket, buffer: bytearray) -> bool:
    """Append what the client sent next to ``buffer`` (waiting while nothing has
    arrived); False when the client closed or reset the connection."""
    while True:
        try:
            data = client.recv(_RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            await anyio.wait_readable(client)
            continue
        except OSError:  # reset by the peer
            return False
        if not data:
            return False
        buffer += data
        return True


async def _send_all(client: socket.socket, parts: tuple[bytes, ...]) -> bool:
    """Send ``parts`` one after the other, without joining them (waiting while the
    socket's buffer is full); False when the client is gone."""
    views = [memoryview(part) for part in parts if part]
    while views:
        try:
            sent = client.sendmsg(views)
        except (BlockingIOError, InterruptedError):
            await anyio.wait_writable(client)
            continue
        except OSError:  # broken pipe, reset by the peer
            return False
        while sent and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if sent:
            views[0] = views[0][sent:]
    return True
