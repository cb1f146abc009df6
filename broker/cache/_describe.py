"""DescribeConfigs and DescribeTopicPartitions answers: pure functions of one image.

DescribeConfigs follows Kafka's broker-side ``ConfigHelper``: a topic resource lists the
topic's dynamic overrides and the topic configs it inherits from dynamic broker configs;
a broker resource is either the cluster-wide default (name ``""``) or the broker that
answers (another broker id is INVALID_REQUEST, as Kafka says "Unexpected broker id").
The image holds only dynamic values (ConfigRecords), so every source is a dynamic one;
static and default configs, which live in a broker's properties file, are not listed.

DescribeTopicPartitions follows Kafka's ``DescribeTopicPartitionsRequestHandler``: topics
in name order from the cursor on, at most ``response_partition_limit`` partitions
(capped at 2000, Kafka's ``max.request.partition.size.limit`` default), and a next cursor
where the answer stopped. Partitions are the Metadata answers of the same image, so the
failover check and the leader error semantics are the same.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from broker.cache._answers import ImageAnswers
from broker.cache._models import INTERNAL_TOPICS, MAX_METADATA_VERSION, ErrorCode, TopicMetadata
from broker.metadata import MetadataImage
from broker.metadata.records import ZERO_UUID, ConfigResourceType

__all__ = [
    "MAX_RESPONSE_PARTITIONS",
    "ConfigEntry",
    "ConfigSource",
    "ConfigSynonym",
    "ConfigType",
    "ConfigsRequest",
    "ConfigsResult",
    "TopicPartitionsCursor",
    "TopicPartitionsRequest",
    "TopicPartitionsResponse",
    "describe_configs",
    "describe_topic_partitions",
    "topic_name_error",
]

MAX_RESPONSE_PARTITIONS = 2000
"""The most partitions one DescribeTopicPartitions answer lists (Kafka's
``max.request.partition.size.limit`` default)."""


class ConfigSource(enum.IntEnum):
    """Where a config value comes from (Kafka's ``DescribeConfigsResponse.ConfigSource``)."""

    UNKNOWN = 0
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5
    DYNAMIC_BROKER_LOGGER_CONFIG = 6


class ConfigType(enum.IntEnum):
    """A config's data type (Kafka's ``DescribeConfigsResponse.ConfigType``)."""

    UNKNOWN = 0
    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7
    CLASS = 8
    PASSWORD = 9


# Topic configs and the broker config each one defaults to (Kafka's
# ServerTopicConfigSynonyms; only the primary synonym, not the ``.hours``/``.minutes``
# variants), with the type both share.
_T = ConfigType
_TOPIC_CONFIGS: dict[str, tuple[str, ConfigType]] = {
    "cleanup.policy": ("log.cleanup.policy", _T.LIST),
    "compression.type": ("compression.type", _T.STRING),
    "delete.retention.ms": ("log.cleaner.delete.retention.ms", _T.LONG),
    "file.delete.delay.ms": ("log.segment.delete.delay.ms", _T.LONG),
    "flush.messages": ("log.flush.interval.messages", _T.LONG),
    "flush.ms": ("log.flush.interval.ms", _T.LONG),
    "index.interval.bytes": ("log.index.interval.bytes", _T.INT),
    "local.retention.bytes": ("log.local.retention.bytes", _T.LONG),
    "local.retention.ms": ("log.local.retention.ms", _T.LONG),
    "max.compaction.lag.ms": ("log.cleaner.max.compaction.lag.ms", _T.LONG),
    "max.message.bytes": ("message.max.bytes", _T.INT),
    "message.timestamp.type": ("log.message.timestamp.type", _T.STRING),
    "min.cleanable.dirty.ratio": ("log.cleaner.min.cleanable.ratio", _T.DOUBLE),
    "min.compaction.lag.ms": ("log.cleaner.min.compaction.lag.ms", _T.LONG),
    "min.insync.replicas": ("min.insync.replicas", _T.INT),
    "preallocate": ("log.preallocate", _T.BOOLEAN),
    "retention.bytes": ("log.retention.bytes", _T.LONG),
    "retention.ms": ("log.retention.ms", _T.LONG),
    "segment.bytes": ("log.segment.bytes", _T.INT),
    "segment.index.bytes": ("log.index.size.max.bytes", _T.INT),
    "segment.jitter.ms": ("log.roll.jitter.ms", _T.LONG),
    "segment.ms": ("log.roll.ms", _T.LONG),
    "unclean.leader.election.enable": ("unclean.leader.election.enable", _T.BOOLEAN),
}
_BROKER_TYPES: dict[str, ConfigType] = dict(_TOPIC_CONFIGS.values()) | {
    "background.threads": _T.INT,
    "log.cleaner.threads": _T.INT,
    "num.io.threads": _T.INT,
    "num.network.threads": _T.INT,
    "num.replica.fetchers": _T.INT,
}
_SECRET = re.compile(r"password|secret|sasl\.jaas\.config|\.key$", re.IGNORECASE)
"""Names whose values Kafka never returns (PASSWORD configs); their value is null."""

_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")
_MAX_TOPIC_NAME = 249


def topic_name_error(name: str) -> str | None:
    """Why ``name`` is not a legal Kafka topic name (Kafka's ``Topic.validate``), or None."""
    if not name:
        return "Topic name is illegal, it can't be empty"
    if name in (".", ".."):
        return 'Topic name cannot be "." or ".."'
    if len(name) > _MAX_TOPIC_NAME:
        return f"Topic name is illegal, it can't be longer than {_MAX_TOPIC_NAME} characters"
    if not _LEGAL_TOPIC.fullmatch(name):
        return (
            f'Topic name "{name}" is illegal, it contains a character other than '
            "ASCII alphanumerics, '.', '_' and '-'"
        )
    return None


# DescribeConfigs ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigsRequest:
    """One resource of a DescribeConfigs request."""

    resource_type: int
    resource_name: str
    keys: tuple[str, ...] | None = None
    """The config names wanted (None: every config the resource has)."""


@dataclass(frozen=True, slots=True)
class ConfigSynonym:
    """A config that sets the same value at another level, highest precedence first."""

    name: str
    value: str | None
    source: ConfigSource


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One config of a resource, as DescribeConfigs reports it."""

    name: str
    value: str | None
    """None for a sensitive config (Kafka never returns those values)."""
    source: ConfigSource
    is_sensitive: bool
    config_type: ConfigType
    synonyms: tuple[ConfigSynonym, ...] = ()
    read_only: bool = False
    """Dynamic configs can be altered, so none of these is read-only."""


@dataclass(frozen=True, slots=True)
class ConfigsResult:
    """The answer for one resource: its configs, or an error."""

    resource_type: int
    resource_name: str
    error_code: ErrorCode = ErrorCode.NONE
    error_message: str | None = None
    configs: tuple[ConfigEntry, ...] = ()


def describe_configs(
    image: MetadataImage,
    resources: Iterable[ConfigsRequest],
    *,
    broker_id: int | None,
    include_synonyms: bool = False,
) -> tuple[ConfigsResult, ...]:
    """DescribeConfigs answered by broker ``broker_id`` (None: it answers the cluster
    default only) from ``image``'s dynamic configs, one result per resource."""
    return tuple(
        _describe_resource(image, resource, broker_id, include_synonyms) for resource in resources
    )


def _describe_resource(
    image: MetadataImage, resource: ConfigsRequest, broker_id: int | None, synonyms: bool
) -> ConfigsResult:
    kind, name = resource.resource_type, resource.resource_name
    configs = image.configs
    broker_level = (
        configs.configs(ConfigResourceType.BROKER, str(broker_id)) if broker_id is not None else {}
    )
    default_level = configs.configs(ConfigResourceType.BROKER, "")

    def error(code: ErrorCode, message: str) -> ConfigsResult:
        return ConfigsResult(kind, name, code, message)

    entries: list[ConfigEntry]
    if kind == ConfigResourceType.TOPIC:
        if (problem := topic_name_error(name)) is not None:
            return error(ErrorCode.INVALID_TOPIC_EXCEPTION, problem)
        if image.topics.get(name) is None:
            return error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic {name} does not exist")
        entries = _topic_entries(
            configs.configs(ConfigResourceType.TOPIC, name), broker_level, default_level
        )
    elif kind == ConfigResourceType.BROKER:
        if name == "":
            entries = [
                _broker_entry(key, [(default_level, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)])
                for key in sorted(default_level)
            ]
        else:
            try:
                requested = int(name)
            except ValueError:
                return error(
                    ErrorCode.INVALID_REQUEST, f"Broker id must be an integer, but it is: {name}"
                )
            if requested != broker_id:
                expected = broker_id if broker_id is not None else "no broker id"
                return error(
                    ErrorCode.INVALID_REQUEST,
                    f"Unexpected broker id, expected {expected} or empty string, "
                    f"but received {name}",
                )
            levels = [
                (broker_level, ConfigSource.DYNAMIC_BROKER_CONFIG),
                (default_level, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
            ]
            entries = [
                _broker_entry(key, levels) for key in sorted({*broker_level, *default_level})
            ]
    else:
        return error(
            ErrorCode.INVALID_REQUEST,
            f"Unsupported resource type {kind} (this broker describes topics and brokers)",
        )
    if resource.keys is not None:
        wanted = set(resource.keys)
        entries = [entry for entry in entries if entry.name in wanted]
    if not synonyms:
        entries = [_without_synonyms(entry) for entry in entries]
    return ConfigsResult(kind, name, configs=tuple(entries))


Level = tuple[Mapping[str, str], ConfigSource]


def _sensitive(name: str, config_type: ConfigType) -> bool:
    return config_type == ConfigType.PASSWORD or _SECRET.search(name) is not None


def _synonyms(
    names: Iterable[tuple[str, Mapping[str, str], ConfigSource]], sensitive: bool
) -> list[ConfigSynonym]:
    return [
        ConfigSynonym(name, None if sensitive else values[name], source)
        for name, values, source in names
        if name in values
    ]


def _broker_entry(key: str, levels: list[Level]) -> ConfigEntry:
    config_type = _BROKER_TYPES.get(key, ConfigType.UNKNOWN)
    sensitive = _sensitive(key, config_type)
    synonyms = _synonyms(((key, values, source) for values, source in levels), sensitive)
    first = synonyms[0]
    return ConfigEntry(key, first.value, first.source, sensitive, config_type, tuple(synonyms))


def _topic_entries(
    topic: Mapping[str, str], broker: Mapping[str, str], default: Mapping[str, str]
) -> list[ConfigEntry]:
    entries = []
    inherited = {
        name
        for name, (broker_name, _) in _TOPIC_CONFIGS.items()
        if broker_name in broker or broker_name in default
    }
    for key in sorted({*topic, *inherited}):
        broker_name, config_type = _TOPIC_CONFIGS.get(key, (None, ConfigType.UNKNOWN))
        sensitive = _sensitive(key, config_type)
        levels = [(key, topic, ConfigSource.DYNAMIC_TOPIC_CONFIG)]
        if broker_name is not None:
            levels += [
                (broker_name, broker, ConfigSource.DYNAMIC_BROKER_CONFIG),
                (broker_name, default, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG),
            ]
        synonyms = _synonyms(levels, sensitive)
        first = synonyms[0]
        entries.append(
            ConfigEntry(key, first.value, first.source, sensitive, config_type, tuple(synonyms))
        )
    return entries


def _without_synonyms(entry: ConfigEntry) -> ConfigEntry:
    return ConfigEntry(entry.name, entry.value, entry.source, entry.is_sensitive, entry.config_type)


# DescribeTopicPartitions -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicPartitionsCursor:
    """Where a DescribeTopicPartitions answer starts, or where the next one should."""

    topic_name: str
    partition_index: int


@dataclass(frozen=True, slots=True)
class TopicPartitionsRequest:
    """A DescribeTopicPartitions request."""

    topics: tuple[str, ...] = ()
    """Topic names (empty: every topic)."""
    partition_limit: int = MAX_RESPONSE_PARTITIONS
    cursor: TopicPartitionsCursor | None = None


@dataclass(frozen=True, slots=True)
class TopicPartitionsResponse:
    """Topics with (a page of) their partitions, and the cursor of the next page."""

    topics: tuple[TopicMetadata, ...]
    next_cursor: TopicPartitionsCursor | None = None


def describe_topic_partitions(
    image: MetadataImage, answers: ImageAnswers, request: TopicPartitionsRequest
) -> TopicPartitionsResponse:
    """The DescribeTopicPartitions answer from ``image`` (which the caller holds)."""
    cursor = request.cursor
    fetch_all = not request.topics
    if cursor is not None and (
        cursor.partition_index < 0 or (not fetch_all and cursor.topic_name not in request.topics)
    ):
        # Kafka answers an invalid cursor with INVALID_REQUEST on every requested topic.
        return TopicPartitionsResponse(
            tuple(
                TopicMetadata(name=name, error_code=ErrorCode.INVALID_REQUEST)
                for name in sorted(set(request.topics))
            )
        )
    start = cursor.topic_name if cursor is not None else ""
    if fetch_all:  # the all-topics order the answers keep per image
        by_id = image.topics.by_id
        names = [by_id[topic_id].name for topic_id in answers.order(image)]
    else:
        names = sorted(set(request.topics))
    remaining = max(0, min(request.partition_limit, MAX_RESPONSE_PARTITIONS))
    topics: list[TopicMetadata] = []
    for name in names:
        if name < start:
            continue
        if remaining <= 0:
            return TopicPartitionsResponse(tuple(topics), TopicPartitionsCursor(name, 0))
        found = image.topics.get(name)
        if found is None:
            if not fetch_all:
                problem = topic_name_error(name)
                code = (
                    ErrorCode.INVALID_TOPIC_EXCEPTION
                    if problem
                    else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                )
                topics.append(
                    TopicMetadata(
                        name=name,
                        error_code=code,
                        topic_id=ZERO_UUID,
                        is_internal=name in INTERNAL_TOPICS,
                    )
                )
            continue
        answer = answers.topic(MAX_METADATA_VERSION, found)
        first = cursor.partition_index if cursor is not None and name == start else 0
        partitions = tuple(p for p in answer.partitions if p.partition_index >= first)
        page = partitions[:remaining]
        topics.append(
            answer if len(page) == len(answer.partitions) else replace(answer, partitions=page)
        )
        if len(page) < len(partitions):
            next_index = partitions[len(page)].partition_index
            return TopicPartitionsResponse(tuple(topics), TopicPartitionsCursor(name, next_index))
        remaining -= len(page)
    return TopicPartitionsResponse(tuple(topics))
