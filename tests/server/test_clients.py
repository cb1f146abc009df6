"""Real Kafka clients against the listener: topics, leaders, and a failover."""

from __future__ import annotations

import anyio
import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.structs import TopicPartition as AioTopicPartition
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
