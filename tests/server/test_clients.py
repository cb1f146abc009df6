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


# configs ---------------------------------------------------------------------------------

EXPECTED_TOPIC = {"retention.ms": ("3600000", "DYNAMIC_TOPIC_CONFIG")}
"""orders' configs: its override (log.retention.ms of the brokers is its synonym)."""
EXPECTED_BROKER_2 = {
    "log.retention.ms": ("604800000", "DYNAMIC_DEFAULT_BROKER_CONFIG"),
    "num.io.threads": ("8", "DYNAMIC_DEFAULT_BROKER_CONFIG"),
}
EXPECTED_BROKER_1 = {**EXPECTED_BROKER_2, "num.io.threads": ("16", "DYNAMIC_BROKER_CONFIG")}
SOURCES = {
    1: "DYNAMIC_TOPIC_CONFIG",
    2: "DYNAMIC_BROKER_CONFIG",
    3: "DYNAMIC_DEFAULT_BROKER_CONFIG",
}


def kafka_python_configs(port: int) -> dict[tuple[str, str], dict[str, tuple[str, str]]]:
    """Configs of topic orders and brokers 1 and 2 (each asked on its own port, as the
    client sends a broker's resource to that broker), by (resource type, name)."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=10_000)
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, "orders"),
            ConfigResource(ConfigResourceType.BROKER, "1"),
            ConfigResource(ConfigResourceType.BROKER, "2"),
        ]
        described = admin.describe_configs(resources, include_synonyms=True, config_filter="all")
        return {
            (kind.upper(), name): {
                key: (config["value"], config["config_source"]) for key, config in configs.items()
            }
            for kind, by_name in described.items()
            for name, configs in by_name.items()
        }
    finally:
        admin.close()


async def test_kafka_python_describes_topic_and_broker_configs() -> None:
    async with served_cluster() as served:
        seen = await anyio.to_thread.run_sync(kafka_python_configs, served.port)
        asked = {b: listener.statistics().requests for b, listener in served.listeners.items()}
    assert seen == {
        ("TOPIC", "orders"): EXPECTED_TOPIC,
        ("BROKER", "1"): EXPECTED_BROKER_1,
        ("BROKER", "2"): EXPECTED_BROKER_2,
    }
    assert asked[2].get("DescribeConfigs", 0) >= 1  # broker 2's own port answered for it


def librdkafka_configs(port: int) -> dict[tuple[str, str], dict[str, tuple[str, str]]]:
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 5000})
    seen = {}
    # librdkafka allows one broker resource per call (it sends it to that broker).
    for resources in (
        [ConfigResource(ResourceType.TOPIC, "orders"), ConfigResource(ResourceType.BROKER, "1")],
        [ConfigResource(ResourceType.BROKER, "2")],
    ):
        for resource, future in admin.describe_configs(resources, request_timeout=10).items():
            entries = future.result(timeout=15)
            seen[(resource.restype.name, resource.name)] = {
                name: (entry.value, ConfigSource(entry.source).name)
                for name, entry in entries.items()
            }
    return seen


async def test_librdkafka_describes_topic_and_broker_configs() -> None:
    async with served_cluster() as served:
        seen = await anyio.to_thread.run_sync(librdkafka_configs, served.port)
    assert seen == {
        ("TOPIC", "orders"): EXPECTED_TOPIC,
        ("BROKER", "1"): EXPECTED_BROKER_1,
        ("BROKER", "2"): EXPECTED_BROKER_2,
    }


async def test_aiokafka_describes_topic_and_broker_configs() -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async with served_cluster() as served:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{served.port}")
        await admin.start()
        try:
            responses = await admin.describe_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, "orders"),
                    ConfigResource(ConfigResourceType.BROKER, "1"),
                    ConfigResource(ConfigResourceType.BROKER, "2"),
                ],
                include_synonyms=True,
            )
        finally:
            await admin.close()
    seen = {}
    for response in responses:
        for error, _, kind, name, entries in response.resources:
            assert error == 0
            seen[(kind, name)] = {e[0]: (e[1], SOURCES[e[3]]) for e in entries}
    assert seen == {
        (2, "orders"): EXPECTED_TOPIC,
        (4, "1"): EXPECTED_BROKER_1,
        (4, "2"): EXPECTED_BROKER_2,
    }
