"""A small served cluster for the wire tests: records, and a raw protocol client."""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from broker.cache import MetadataCache
from broker.metadata import encode_stream_id, meta_stream_key
from broker.metadata.pipeline import DeliveryMode, MetadataPipeline
from broker.metadata.records import (
    BrokerEndpoint,
    ConfigRecord,
    ConfigResourceType,
    KeyValue,
    KVRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RangeRecord,
    RegisterBrokerRecord,
    S3StreamRecord,
    TopicRecord,
    UnfenceBrokerRecord,
)
from broker.metadata.sources import InMemoryRecordSource
from broker.server import KafkaListener, broker_listeners, decode_response, encode_request

CLUSTER = "wire-cluster"
ORDERS = uuid.UUID(int=0xABC)
PAYMENTS = uuid.UUID(int=0xDEF)


BROKERS = (1, 2, 3)


def cluster_records(ports: Mapping[int, int]) -> list[MetadataRecord]:
    """Brokers 1-3 (each advertising its port in ``ports``), their dynamic configs, and
    topics orders and payments (2 partitions each, with streams), orders with a
    retention override."""
    records: list[MetadataRecord] = []
    for broker in BROKERS:
        endpoint = BrokerEndpoint(name="PLAINTEXT", host="127.0.0.1", port=ports[broker])
        records.append(
            RegisterBrokerRecord(
                broker_id=broker,
                incarnation_id=uuid.UUID(int=broker),
                broker_epoch=broker,
                end_points=(endpoint,),
            )
        )
        records.append(UnfenceBrokerRecord(id=broker, epoch=broker))
    records += [
        broker_config("", "log.retention.ms", "604800000"),
        broker_config("", "num.io.threads", "8"),
        broker_config("1", "num.io.threads", "16"),
    ]
    stream = 10
    for topic_id, name in ((ORDERS, "orders"), (PAYMENTS, "payments")):
        records.append(TopicRecord(name=name, topic_id=topic_id))
        for partition in range(2):
            leader = 1 + partition
            records.append(
                PartitionRecord(
                    partition_id=partition,
                    topic_id=topic_id,
                    replicas=(leader, 3),
                    isr=(leader, 3),
                    leader=leader,
                    leader_epoch=0,
                    partition_epoch=0,
                )
            )
            records.append(S3StreamRecord(stream_id=stream, epoch=0, range_index=0))
            records.append(
                RangeRecord(
                    stream_id=stream,
                    epoch=0,
                    range_index=0,
                    start_offset=0,
                    end_offset=0,
                    node_id=leader,
                )
            )
            key = meta_stream_key(CLUSTER, topic_id, partition)
            records.append(
                KVRecord(key_values=(KeyValue(key=key, value=encode_stream_id(stream)),))
            )
            stream += 1
    records.append(
        ConfigRecord(
            resource_type=ConfigResourceType.TOPIC,
            resource_name="orders",
            name="retention.ms",
            value="3600000",
        )
    )
    return records


def broker_config(broker: str, name: str, value: str) -> ConfigRecord:
    """A dynamic config of broker ``broker`` ("" for the cluster-wide default)."""
    return ConfigRecord(
        resource_type=ConfigResourceType.BROKER, resource_name=broker, name=name, value=value
    )


ORDERS_0_STREAM = 10


def failover_started() -> list[MetadataRecord]:
    """orders-0 moves from broker 1 to 2; its stream is still owned by 1: mid-failover."""
    return [PartitionChangeRecord(partition_id=0, topic_id=ORDERS, leader=2, isr=(2, 3))]


def failover_completed() -> list[MetadataRecord]:
    """Broker 2 reopens the stream with the new epoch: the failover completed."""
    return [
        S3StreamRecord(stream_id=ORDERS_0_STREAM, epoch=1, range_index=1),
        RangeRecord(
            stream_id=ORDERS_0_STREAM,
            epoch=1,
            range_index=1,
            start_offset=0,
            end_offset=0,
            node_id=2,
        ),
    ]


@dataclass
class Served:
    source: InMemoryRecordSource
    cache: MetadataCache
    pipeline: MetadataPipeline
    listeners: dict[int, KafkaListener]
    """One per broker, each on its own port."""

    @property
    def listener(self) -> KafkaListener:
        """Broker 1's listener (the bootstrap address)."""
        return self.listeners[1]

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def ports(self) -> dict[int, int]:
        return {broker: listener.port for broker, listener in self.listeners.items()}

    async def append(self, records: list[MetadataRecord]) -> None:
        self.source.append_nowait(records)
        with await self.cache.wait_for_offset(self.source.next_offset - 1):
            pass


@asynccontextmanager
async def served_cluster(**listener_options: Any) -> AsyncIterator[Served]:
    source = InMemoryRecordSource()
    cache = MetadataCache(CLUSTER)
    try:
        async with MetadataPipeline(source) as pipeline:
            pipeline.add_consumer(cache, DeliveryMode.LATEST_IMAGE)
            async with broker_listeners(
                cache, BROKERS, host="127.0.0.1", port=0, **listener_options
            ) as listeners:
                served = Served(source, cache, pipeline, listeners)
                await served.append(cluster_records(served.ports))
                yield served
    finally:
        cache.close()


class RawClient:
    """One connection speaking the protocol with kio (no client library)."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.receive = BufferedByteReceiveStream(stream)
        self.correlation = 0

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[RawClient]:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            yield cls(stream)

    async def call(self, api_key: int, version: int, body: Any) -> Any:
        self.correlation += 1
        await self.stream.send(encode_request(api_key, version, self.correlation, body))
        return await self.read(api_key, version)

    async def read(self, api_key: int, version: int) -> Any:
        (size,) = struct.unpack(">i", await self.receive.receive_exactly(4))
        correlation, body = decode_response(
            api_key, version, await self.receive.receive_exactly(size)
        )
        assert correlation == self.correlation
        return body

    async def closed_by_server(self) -> bool:
        """True once the server closed the connection (what it does with bad input)."""
        try:
            with anyio.fail_after(5):
                await self.receive.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead):
            return True
        return False


def blocking_call(port: int, frame: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes on a new blocking socket; return all bytes until the server closes
    (or the timeout, after half-closing our side)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(frame)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)
