"""DescribeConfigs and DescribeTopicPartitions over the wire, and ApiVersions' promise:
every advertised API version is answered, and nothing else is."""

from __future__ import annotations

from typing import Any

import pytest
from kio.index import load_request_schema
from kio.schema.errors import ErrorCode as KioErrorCode

from broker.cache import ConfigsRequest, TopicPartitionsCursor, TopicPartitionsRequest
from broker.server import (
    API_VERSIONS,
    DESCRIBE_CLUSTER,
    DESCRIBE_CONFIGS,
    DESCRIBE_TOPIC_PARTITIONS,
    METADATA,
    SUPPORTED_VERSIONS,
    describe_configs_request_body,
    encode_request,
    metadata_request_body,
    topic_partitions_request_body,
)
from tests.server.cluster import RawClient, failover_started, served_cluster

pytestmark = pytest.mark.integration

TOPIC, BROKER = 2, 4


def minimal_body(api_key: int, version: int) -> Any:
    """A valid request body of every API and version we advertise."""
    if api_key == METADATA:
        return metadata_request_body(version)
    if api_key == DESCRIBE_CONFIGS:
        return describe_configs_request_body(version, [ConfigsRequest(TOPIC, "orders")])
    if api_key == DESCRIBE_TOPIC_PARTITIONS:
        return topic_partitions_request_body(TopicPartitionsRequest())
    schema: Any = load_request_schema(api_key, version)
    if api_key == API_VERSIONS:
        extra = {"client_software_name": "t", "client_software_version": "1"}
        return schema(**(extra if version >= 3 else {}))
    assert api_key == DESCRIBE_CLUSTER
    return schema(
        include_cluster_authorized_operations=False, **({"endpoint_type": 1} if version else {})
    )


ADVERTISED = [
    (key, version)
    for key, (low, high) in SUPPORTED_VERSIONS.items()
    for version in range(low, high + 1)
]


async def test_every_advertised_api_version_is_answered_and_no_other() -> None:
    async with served_cluster() as served:
        async with RawClient.connect(served.port) as client:
            for api_key, version in ADVERTISED:
                response = await client.call(api_key, version, minimal_body(api_key, version))
                assert getattr(response, "error_code", KioErrorCode.none) == KioErrorCode.none
        outside = [(key, high + 1, high) for key, (_, high) in SUPPORTED_VERSIONS.items()]
        outside += [(key, low - 1, low) for key, (low, _) in SUPPORTED_VERSIONS.items() if low]
        for api_key, version, valid in outside:
            if api_key == API_VERSIONS:
                continue  # a newer ApiVersions gets the v0 fallback (test_listener)
            async with RawClient.connect(served.port) as client:
                frame = encode_request(api_key, valid, 1, minimal_body(api_key, valid))
                frame = frame[:6] + version.to_bytes(2, "big") + frame[8:]
                await client.stream.send(frame)
                assert await client.closed_by_server(), (api_key, version)


@pytest.mark.parametrize("version", range(1, 5))
async def test_describe_configs_every_version(version: int) -> None:
    resources = [
        ConfigsRequest(TOPIC, "orders"),
        ConfigsRequest(BROKER, "2"),
        ConfigsRequest(BROKER, "1"),
        ConfigsRequest(TOPIC, "nope"),
    ]
    async with served_cluster() as served, RawClient.connect(served.ports[2]) as client:
        body = describe_configs_request_body(version, resources, include_synonyms=True)
        response = await client.call(DESCRIBE_CONFIGS, version, body)
    orders, own, other, nope = response.results
    assert [(c.name, c.value, c.config_source) for c in orders.configs] == [
        ("retention.ms", "3600000", 1)
    ]
    assert [(s.name, s.source) for s in orders.configs[0].synonyms] == [
        ("retention.ms", 1),
        ("log.retention.ms", 3),
    ]
    assert {c.name: (c.value, c.config_source) for c in own.configs} == {
        "log.retention.ms": ("604800000", 3),
        "num.io.threads": ("8", 3),
    }
    assert other.error_code == KioErrorCode.invalid_request  # broker 2 was asked about 1
    assert other.error_message is not None
    assert "expected 2" in other.error_message
    assert nope.error_code == KioErrorCode.unknown_topic_or_partition
    if version >= 3:
        assert orders.configs[0].config_type == 5  # LONG


async def test_describe_topic_partitions_pages_with_a_cursor() -> None:
    async with served_cluster() as served, RawClient.connect(served.port) as client:
        await served.append(failover_started())
        first = await client.call(
            DESCRIBE_TOPIC_PARTITIONS,
            0,
            topic_partitions_request_body(TopicPartitionsRequest(partition_limit=3)),
        )
        assert [(t.name, len(t.partitions)) for t in first.topics] == [
            ("orders", 2),
            ("payments", 1),
        ]
        orders = {p.partition_index: p for p in first.topics[0].partitions}
        assert orders[0].error_code == KioErrorCode.leader_not_available  # mid-failover
        assert orders[1].leader_id == 2
        assert first.topics[0].topic_id is not None
        cursor = first.next_cursor
        assert (cursor.topic_name, cursor.partition_index) == ("payments", 1)
        rest = await client.call(
            DESCRIBE_TOPIC_PARTITIONS,
            0,
            topic_partitions_request_body(
                TopicPartitionsRequest(
                    partition_limit=3, cursor=TopicPartitionsCursor("payments", 1)
                )
            ),
        )
        assert [(t.name, [p.partition_index for p in t.partitions]) for t in rest.topics] == [
            ("payments", [1])
        ]
        assert rest.next_cursor is None
