"""DescribeConfigs and DescribeTopicPartitions answers, as pure functions of one image."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from broker.cache import (
    AnswerSettings,
    ConfigSource,
    ConfigsRequest,
    ConfigsResult,
    ConfigType,
    ErrorCode,
    ImageAnswers,
    TopicPartitionsCursor,
    TopicPartitionsRequest,
    TopicPartitionsResponse,
    describe_configs,
    describe_topic_partitions,
    topic_name_error,
)
from broker.metadata import Lease, MetadataImage, Provenance, replay_records
from broker.metadata.records import (
    ConfigRecord,
    ConfigResourceType,
    PartitionRecord,
    TopicRecord,
)
from tests.server.cluster import (
    BROKERS,
    broker_config,
    cluster_records,
    failover_started,
)

TOPIC, BROKER = int(ConfigResourceType.TOPIC), int(ConfigResourceType.BROKER)
PORTS = dict.fromkeys(BROKERS, 9092)
MANY = uuid.UUID(int=7)


@pytest.fixture
def image() -> Iterator[MetadataImage]:
    records = [
        *cluster_records(PORTS),
        *failover_started(),
        broker_config("", "ssl.keystore.password", "hunter2"),
        ConfigRecord(
            resource_type=ConfigResourceType.TOPIC,
            resource_name="payments",
            name="x.custom",
            value="1",
        ),
    ]
    with Lease(replay_records(records, Provenance(50, 1, 0))) as leased:
        yield leased


def configs_of(
    image: MetadataImage,
    *resources: ConfigsRequest,
    broker_id: int | None,
    include_synonyms: bool = False,
) -> list[ConfigsResult]:
    return list(
        describe_configs(image, resources, broker_id=broker_id, include_synonyms=include_synonyms)
    )


def test_topic_configs_are_its_overrides_and_what_it_inherits_from_dynamic_broker_configs(
    image: MetadataImage,
) -> None:
    [result] = configs_of(image, ConfigsRequest(TOPIC, "orders"), broker_id=2)
    assert result.error_code == ErrorCode.NONE
    entries = {e.name: e for e in result.configs}
    assert set(entries) == {"retention.ms"}
    retention = entries["retention.ms"]
    assert (retention.value, retention.source) == ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert retention.config_type == ConfigType.LONG
    assert retention.synonyms == ()  # not asked for

    [with_synonyms] = configs_of(
        image, ConfigsRequest(TOPIC, "orders"), broker_id=2, include_synonyms=True
    )
    assert [(s.name, s.value, s.source) for s in with_synonyms.configs[0].synonyms] == [
        ("retention.ms", "3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG),
        ("log.retention.ms", "604800000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
    ]

    # payments has no retention override: it inherits the cluster default's, by synonym.
    [payments] = configs_of(image, ConfigsRequest(TOPIC, "payments"), broker_id=2)
    inherited = {e.name: (e.value, e.source) for e in payments.configs}
    assert inherited == {
        "retention.ms": ("604800000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
        "x.custom": ("1", ConfigSource.DYNAMIC_TOPIC_CONFIG),
    }


def test_a_broker_describes_itself_and_the_cluster_default_but_no_other_broker(
    image: MetadataImage,
) -> None:
    own, default, other, not_a_number = configs_of(
        image,
        ConfigsRequest(BROKER, "1"),
        ConfigsRequest(BROKER, ""),
        ConfigsRequest(BROKER, "2"),
        ConfigsRequest(BROKER, "one"),
        broker_id=1,
        include_synonyms=True,
    )
    threads = {e.name: e for e in own.configs}["num.io.threads"]
    assert (threads.value, threads.source) == ("16", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert [(s.value, s.source) for s in threads.synonyms] == [
        ("16", ConfigSource.DYNAMIC_BROKER_CONFIG),
        ("8", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
    ]
    assert {e.name: e.source for e in default.configs} == dict.fromkeys(
        ["log.retention.ms", "num.io.threads", "ssl.keystore.password"],
        ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
    )
    assert other.error_code == ErrorCode.INVALID_REQUEST
    assert other.error_message == (
        "Unexpected broker id, expected 1 or empty string, but received 2"
    )
    assert not_a_number.error_code == ErrorCode.INVALID_REQUEST
    assert "must be an integer" in (not_a_number.error_message or "")


def test_broker_zero_describes_its_own_configs() -> None:
    records = [broker_config("0", "num.io.threads", "4"), broker_config("", "num.io.threads", "8")]
    with Lease(replay_records(records, Provenance(1, 1, 0))) as image:
        [own] = configs_of(image, ConfigsRequest(BROKER, "0"), broker_id=0)
    assert [(e.name, e.value, e.source) for e in own.configs] == [
        ("num.io.threads", "4", ConfigSource.DYNAMIC_BROKER_CONFIG)
    ]


def test_secrets_are_never_returned(image: MetadataImage) -> None:
    [default] = configs_of(image, ConfigsRequest(BROKER, ""), broker_id=1, include_synonyms=True)
    secret = {e.name: e for e in default.configs}["ssl.keystore.password"]
    assert secret.is_sensitive
    assert secret.value is None
    assert all(s.value is None for s in secret.synonyms)


def test_keys_filter_and_errors_name_what_was_wrong(image: MetadataImage) -> None:
    only, unknown, illegal, logger = configs_of(
        image,
        ConfigsRequest(BROKER, "1", keys=("num.io.threads", "no.such.key")),
        ConfigsRequest(TOPIC, "nope"),
        ConfigsRequest(TOPIC, "bad/name"),
        ConfigsRequest(int(ConfigResourceType.BROKER_LOGGER), "1"),
        broker_id=1,
    )
    assert [e.name for e in only.configs] == ["num.io.threads"]
    assert (unknown.error_code, unknown.error_message) == (
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        "Topic nope does not exist",
    )
    assert illegal.error_code == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert "illegal" in (illegal.error_message or "")
    assert logger.error_code == ErrorCode.INVALID_REQUEST
    assert [r.configs for r in (unknown, illegal, logger)] == [(), (), ()]


@pytest.mark.parametrize(
    ("name", "legal"),
    [("orders", True), ("a.b_c-D9", True), ("", False), (".", False), ("..", False),
     ("a" * 249, True), ("a" * 250, False), ("a b", False), ("ü", False)],
)  # fmt: skip
def test_topic_names_follow_kafka_rules(name: str, legal: bool) -> None:
    assert (topic_name_error(name) is None) == legal


# DescribeTopicPartitions -----------------------------------------------------------------


def big_image() -> MetadataImage:
    """orders and payments (2 partitions each) and a topic with 5 partitions."""
    records = [*cluster_records(PORTS), TopicRecord(name="many", topic_id=MANY)]
    for partition in range(5):
        records.append(
            PartitionRecord(
                partition_id=partition,
                topic_id=MANY,
                replicas=(1, 2),
                isr=(1, 2),
                leader=1,
                leader_epoch=0,
                partition_epoch=0,
            )
        )
    return replay_records([*records, *failover_started()], Provenance(60, 1, 0))


def describe(image: MetadataImage, request: TopicPartitionsRequest) -> TopicPartitionsResponse:
    answers = ImageAnswers.build(AnswerSettings("wire-cluster", "PLAINTEXT"), image)
    return describe_topic_partitions(image, answers, request)


def test_pages_walk_every_partition_in_name_order_once() -> None:
    with Lease(big_image()) as image:
        seen: list[tuple[str, int]] = []
        cursor = None
        pages = 0
        while True:
            response = describe(image, TopicPartitionsRequest(partition_limit=3, cursor=cursor))
            pages += 1
            assert sum(len(t.partitions) for t in response.topics) <= 3
            seen += [
                (t.name or "", p.partition_index) for t in response.topics for p in t.partitions
            ]
            cursor = response.next_cursor
            if cursor is None:
                break
        expected = [("many", i) for i in range(5)] + [
            (name, i) for name in ("orders", "payments") for i in range(2)
        ]
        assert seen == expected
        assert pages == 3


def test_partitions_carry_the_metadata_answers_failover_semantics() -> None:
    with Lease(big_image()) as image:
        response = describe(image, TopicPartitionsRequest(topics=("orders", "nope", "bad/x")))
        by_name = {t.name: t for t in response.topics}
        assert [t.name for t in response.topics] == ["bad/x", "nope", "orders"]
        orders = {p.partition_index: p for p in by_name["orders"].partitions}
        assert orders[0].error_code == ErrorCode.LEADER_NOT_AVAILABLE  # mid-failover
        assert orders[0].leader_id == -1
        assert by_name["nope"].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert by_name["bad/x"].error_code == ErrorCode.INVALID_TOPIC_EXCEPTION
        assert response.next_cursor is None


def test_a_cursor_inside_a_topic_resumes_there_and_a_bad_cursor_is_refused() -> None:
    with Lease(big_image()) as image:
        resumed = describe(
            image,
            TopicPartitionsRequest(
                topics=("many", "orders"),
                partition_limit=4,
                cursor=TopicPartitionsCursor("many", 3),
            ),
        )
        assert [(t.name, [p.partition_index for p in t.partitions]) for t in resumed.topics] == [
            ("many", [3, 4]),
            ("orders", [0, 1]),
        ]
        assert resumed.next_cursor is None
        for cursor in (TopicPartitionsCursor("payments", 0), TopicPartitionsCursor("many", -1)):
            refused = describe(
                image, TopicPartitionsRequest(topics=("many", "orders"), cursor=cursor)
            )
            assert [(t.name, t.error_code) for t in refused.topics] == [
                ("many", ErrorCode.INVALID_REQUEST),
                ("orders", ErrorCode.INVALID_REQUEST),
            ]


def test_the_limit_is_capped_and_a_limit_reached_at_a_topic_boundary_points_at_the_next() -> None:
    with Lease(big_image()) as image:
        response = describe(image, TopicPartitionsRequest(partition_limit=5))
        assert [t.name for t in response.topics] == ["many"]
        assert response.next_cursor == TopicPartitionsCursor("orders", 0)
        everything = describe(image, TopicPartitionsRequest(partition_limit=10**9))
        assert everything.next_cursor is None
        assert len(everything.topics) == 3
