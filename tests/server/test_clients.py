"""Real Kafka clients against the listener: topics, leaders, and a failover."""

from __future__ import annotations

import anyio
import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, TopicPartition

from tests.server.cluster import failover_completed, failover_started, served_cluster

pytestmark = pytest.mark.integration


def kafka_python_view(port: int) -> tuple[set[str], set[int], int | None]:
    """Topics, orders' partitions and orders-0's leader, from a fresh kafka-python client."""
    consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=10_000)
    try:
        topics = consumer.topics()
        partitions = consumer.partitions_for_topic("orders") or set()
        leader = consumer._client.cluster.leader_for_partition(TopicPartition("orders", 0))
        return topics, partitions, leader
    finally:
        consumer.close()


async def aiokafka_view(port: int) -> tuple[set[str], int | None]:
    client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{port}")
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        return metadata.topics(), metadata.leader_for_partition(AioTopicPartition("orders", 0))
    finally:
        await client.close()


async def test_kafka_python_sees_topics_leaders_and_a_failover() -> None:
    async with served_cluster() as served:
        topics, partitions, leader = await anyio.to_thread.run_sync(kafka_python_view, served.port)
        assert topics == {"orders", "payments"}
        assert partitions == {0, 1}
        assert leader == 1

        await served.append(failover_started())
        _, _, leader = await anyio.to_thread.run_sync(kafka_python_view, served.port)
        assert leader == -1  # LEADER_NOT_AVAILABLE: the stream is mid-failover

        await served.append(failover_completed())
        _, _, leader = await anyio.to_thread.run_sync(kafka_python_view, served.port)
        assert leader == 2
        assert served.listener.statistics().requests["Metadata"] >= 3


def librdkafka_view(port: int) -> tuple[set[str], set[int], int, str | None]:
    """Topics, broker ids, orders-0's leader and its error, from librdkafka
    (confluent-kafka's AdminClient, the engine under most non-Java clients)."""
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 5000})
    metadata = admin.list_topics(timeout=10)
    partition = metadata.topics["orders"].partitions[0]
    error = partition.error.name() if partition.error is not None else None
    return set(metadata.topics), set(metadata.brokers), partition.leader, error


async def test_librdkafka_sees_topics_brokers_leaders_and_a_failover() -> None:
    async with served_cluster() as served:
        topics, brokers, leader, error = await anyio.to_thread.run_sync(
            librdkafka_view, served.port
        )
        assert topics == {"orders", "payments"}
        assert brokers == {1, 2, 3}
        assert (leader, error) == (1, None)

        await served.append(failover_started())
        _, _, leader, error = await anyio.to_thread.run_sync(librdkafka_view, served.port)
        assert (leader, error) == (-1, "LEADER_NOT_AVAILABLE")

        await served.append(failover_completed())
        _, _, leader, error = await anyio.to_thread.run_sync(librdkafka_view, served.port)
        assert (leader, error) == (2, None)


async def test_aiokafka_sees_topics_leaders_and_a_failover() -> None:
    async with served_cluster() as served:
        topics, leader = await aiokafka_view(served.port)
        assert topics == {"orders", "payments"}
        assert leader == 1

        await served.append(failover_started())
        _, leader = await aiokafka_view(served.port)
        assert leader == -1

        await served.append(failover_completed())
        _, leader = await aiokafka_view(served.port)
        assert leader == 2
