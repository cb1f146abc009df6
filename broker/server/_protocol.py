"""Kafka wire protocol for the APIs the listener serves, on kio's schemas and codecs.

Pure functions: a request frame in, a response frame out (or ProtocolError, after which
the connection is closed). Served: ApiVersions v0-4 (with the UNSUPPORTED_VERSION
fallback clients rely on), Metadata v0-13 (through the metadata cache, so the failover
check and Kafka's error semantics hold on the wire), DescribeConfigs v1-4 (v0 is gone
from Kafka 4.0 and from kio), DescribeCluster v0-1 and DescribeTopicPartitions v0.
"""

from __future__ import annotations

import datetime
import io
import struct
import sys
import uuid
from dataclasses import fields
from functools import cache
from types import ModuleType
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode as KioErrorCode
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i16, i32

from broker.cache import (
    ClusterDescription,
    ConfigsRequest,
    ConfigsResult,
    ErrorCode,
    MetadataRequest,
    MetadataResponse,
    RequestTopic,
    TopicPartitionsCursor,
    TopicPartitionsRequest,
    TopicPartitionsResponse,
)
from broker.errors import ProtocolError

__all__ = [
    "API_VERSIONS",
    "DESCRIBE_CLUSTER",
    "DESCRIBE_CONFIGS",
    "DESCRIBE_TOPIC_PARTITIONS",
    "METADATA",
    "SUPPORTED_VERSIONS",
    "api_versions_response",
    "configs_requests",
    "decode_request",
    "decode_response",
    "describe_cluster_body",
    "describe_configs_body",
    "describe_configs_request_body",
    "describe_topic_partitions_body",
    "encode_request",
    "encode_response",
    "metadata_body",
    "metadata_request",
    "metadata_request_body",
    "topic_partitions_request",
    "topic_partitions_request_body",
]

API_VERSIONS = 18
"""API key of ApiVersions."""
METADATA = 3
"""API key of Metadata."""
DESCRIBE_CONFIGS = 32
"""API key of DescribeConfigs."""
DESCRIBE_CLUSTER = 60
"""API key of DescribeCluster."""
DESCRIBE_TOPIC_PARTITIONS = 75
"""API key of DescribeTopicPartitions."""
SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {
    API_VERSIONS: (0, 4),
    METADATA: (0, 13),
    DESCRIBE_CONFIGS: (1, 4),
    DESCRIBE_CLUSTER: (0, 1),
    DESCRIBE_TOPIC_PARTITIONS: (0, 0),
}
"""Served versions (lowest, highest) by API key: what ApiVersions advertises."""
_NO_THROTTLE = datetime.timedelta(0)
_INT32 = struct.Struct(">i")
_HEADER_START = struct.Struct(">hhi")  # api key, api version, correlation id


@cache
def _request_schema(api_key: int, version: int) -> type[Any]:
    # kio resolves the schema's dotted path on every call: a tenth of a served request.
    return load_request_schema(api_key, version)


@cache
def _response_schema(api_key: int, version: int) -> type[Any]:
    return load_response_schema(api_key, version)


@cache
def _module(api_key: int, version: int, request: bool) -> ModuleType:
    schema = _request_schema(api_key, version) if request else _response_schema(api_key, version)
    return sys.modules[schema.__module__]


_field_names_of: dict[type[Any], frozenset[str]] = {}


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _field_names_of.get(cls)
    if names is None:
        names = _field_names_of[cls] = frozenset(f.name for f in fields(cls))
    return names


def _build(cls: type[Any], **values: Any) -> Any:
    """An instance of a version's schema class, from the fields that version has."""
    names = _field_names(cls)
    return cls(**{name: value for name, value in values.items() if name in names})


def _encode(entity: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


def decode_request(frame: bytes) -> tuple[int, int, int, Any]:
    """(api key, version, correlation id, request body) of one request frame.

    The body is None for an ApiVersions request of a version newer than we know (the
    client then gets our versions and retries); anything else undecodable raises. Bytes
    after a decoded body are ignored, as Kafka does.
    """
    if len(frame) < _HEADER_START.size:
        raise ProtocolError(f"request of {len(frame)} bytes has no header")
    api_key, version, correlation_id = _HEADER_START.unpack_from(frame)
    supported = SUPPORTED_VERSIONS.get(api_key)
    if supported is None:
        raise ProtocolError(f"unsupported API key {api_key}")
    low, high = supported
    if not low <= version <= high:
        if api_key == API_VERSIONS:
            return api_key, version, correlation_id, None
        raise ProtocolError(
            f"unsupported version {version} of API key {api_key} (supported {low}-{high})"
        )
    schema = _request_schema(api_key, version)
    try:
        header, used = entity_reader(schema.__header_schema__)(frame, 0)
        body, _ = entity_reader(schema)(frame, used)
    except Exception as error:  # kio raises several types for malformed input
        raise ProtocolError(
            f"undecodable {schema.__name__} v{version}: {type(error).__name__}: {error}"
        ) from None
    # Bytes after a body that decoded are ignored, as Kafka's RequestContext.parseRequest
    # does (it reads the request's struct and never looks at what remains): librdkafka
    # sends Metadata v13 with three of them, and Kafka brokers answer it.
    return api_key, version, header.correlation_id, body


@cache
def _flexible_header(api_key: int, version: int) -> bool:
    """Whether the response header of this API version carries tagged fields (v1)."""
    return bool(_response_schema(api_key, version).__header_schema__.__flexible__)


def encode_response(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    """A whole response frame: size, header (the version's header schema), body.

    The header is the correlation id, plus an empty tagged-field section in flexible
    versions (header v1); tests check it against kio's encoding.
    """
    return response_head(api_key, version, correlation_id, len(body)) + body


def response_head(api_key: int, version: int, correlation_id: int, body_size: int) -> bytes:
    """What comes before a response body of ``body_size`` bytes: the frame's size and the
    header (``encode_response`` without the body, for a server that sends both as they
    are instead of copying a large body into one frame)."""
    header = _INT32.pack(correlation_id) + (b"\x00" if _flexible_header(api_key, version) else b"")
    return _INT32.pack(len(header) + body_size) + header


def api_versions_response(version: int, correlation_id: int) -> bytes:
    """Our version ranges; a version we do not know (newer, or negative from a broken
    client) gets a v0 body with UNSUPPORTED_VERSION, which makes clients retry with one
    we do."""
    error = ErrorCode.NONE
    low, high = SUPPORTED_VERSIONS[API_VERSIONS]
    if not low <= version <= high:
        version, error = 0, ErrorCode.UNSUPPORTED_VERSION
    module = _module(API_VERSIONS, version, request=False)
    ranges = tuple(
        module.ApiVersion(api_key=key, min_version=low, max_version=high)
        for key, (low, high) in sorted(SUPPORTED_VERSIONS.items())
    )
    body = _build(
        module.ApiVersionsResponse,
        error_code=KioErrorCode(error),
        api_keys=ranges,
        throttle_time=_NO_THROTTLE,
    )
    return encode_response(API_VERSIONS, version, correlation_id, _encode(body))


def metadata_request(body: Any, version: int) -> MetadataRequest:
    """Our request model from a decoded kio MetadataRequest of ``version``."""
    topics: tuple[RequestTopic, ...] | None
    if body.topics is None:
        topics = None
    else:
        topics = tuple(
            RequestTopic(
                name=t.name,
                topic_id=getattr(t, "topic_id", None) if version >= 12 else None,
            )
            for t in body.topics
            if t.name is not None or (version >= 12 and getattr(t, "topic_id", None))
        )
    return MetadataRequest(
        version=version,
        topics=topics,
        allow_auto_topic_creation=getattr(body, "allow_auto_topic_creation", True),
        include_cluster_authorized_operations=getattr(
            body, "include_cluster_authorized_operations", False
        ),
        include_topic_authorized_operations=getattr(
            body, "include_topic_authorized_operations", False
        ),
    )


def metadata_body(response: MetadataResponse, version: int) -> bytes:
    """The encoded body of ``response`` for Metadata ``version`` (no header)."""
    module = _module(METADATA, version, request=False)
    brokers = tuple(
        _build(
            module.MetadataResponseBroker, node_id=b.node_id, host=b.host, port=b.port, rack=b.rack
        )
        for b in response.brokers
    )
    topics = tuple(
        _build(
            module.MetadataResponseTopic,
            error_code=KioErrorCode(t.error_code),
            name=t.name,
            topic_id=t.topic_id if t.topic_id.int else uuid.UUID(int=0),
            is_internal=t.is_internal,
            partitions=tuple(
                _build(
                    module.MetadataResponsePartition,
                    error_code=KioErrorCode(p.error_code),
                    partition_index=p.partition_index,
                    leader_id=p.leader_id,
                    leader_epoch=p.leader_epoch,
                    replica_nodes=p.replica_nodes,
                    isr_nodes=p.isr_nodes,
                    offline_replicas=p.offline_replicas,
                )
                for p in t.partitions
            ),
            topic_authorized_operations=t.topic_authorized_operations,
        )
        for t in response.topics
    )
    body = _build(
        module.MetadataResponse,
        throttle_time=_NO_THROTTLE,
        brokers=brokers,
        cluster_id=response.cluster_id,
        controller_id=response.controller_id,
        topics=topics,
        cluster_authorized_operations=response.cluster_authorized_operations,
        error_code=KioErrorCode(0),
    )
    return _encode(body)


def describe_cluster_body(description: ClusterDescription, version: int) -> bytes:
    """The encoded DescribeCluster body of ``description`` for ``version``."""
    module = _module(DESCRIBE_CLUSTER, version, request=False)
    brokers = tuple(
        _build(
            module.DescribeClusterBroker, broker_id=b.node_id, host=b.host, port=b.port, rack=b.rack
        )
        for b in description.brokers
    )
    body = _build(
        module.DescribeClusterResponse,
        throttle_time=_NO_THROTTLE,
        error_code=KioErrorCode(0),
        error_message=None,
        endpoint_type=1,
        cluster_id=description.cluster_id,
        controller_id=description.controller_id,
        brokers=brokers,
        cluster_authorized_operations=-(2**31),
    )
    return _encode(body)


def configs_requests(body: Any) -> tuple[list[ConfigsRequest], bool]:
    """The resources of a decoded kio DescribeConfigs request, and whether it asks for
    synonyms."""
    resources = [
        ConfigsRequest(
            int(r.resource_type),
            r.resource_name,
            tuple(r.configuration_keys) if r.configuration_keys is not None else None,
        )
        for r in body.resources
    ]
    return resources, bool(getattr(body, "include_synonyms", False))


def describe_configs_body(results: tuple[ConfigsResult, ...], version: int) -> bytes:
    """The encoded DescribeConfigs body of ``results`` for ``version``."""
    module = _module(DESCRIBE_CONFIGS, version, request=False)
    body = _build(
        module.DescribeConfigsResponse,
        throttle_time=_NO_THROTTLE,
        results=tuple(
            _build(
                module.DescribeConfigsResult,
                error_code=KioErrorCode(result.error_code),
                error_message=result.error_message,
                resource_type=result.resource_type,
                resource_name=result.resource_name,
                configs=tuple(
                    _build(
                        module.DescribeConfigsResourceResult,
                        name=entry.name,
                        value=entry.value,
                        read_only=entry.read_only,
                        config_source=int(entry.source),
                        is_sensitive=entry.is_sensitive,
                        synonyms=tuple(
                            _build(
                                module.DescribeConfigsSynonym,
                                name=synonym.name,
                                value=synonym.value,
                                source=int(synonym.source),
                            )
                            for synonym in entry.synonyms
                        ),
                        config_type=int(entry.config_type),
                        documentation=None,
                    )
                    for entry in result.configs
                ),
            )
            for result in results
        ),
    )
    return _encode(body)


def topic_partitions_request(body: Any) -> TopicPartitionsRequest:
    """Our request model from a decoded kio DescribeTopicPartitions request."""
    cursor = body.cursor
    return TopicPartitionsRequest(
        topics=tuple(t.name for t in body.topics),
        partition_limit=body.response_partition_limit,
        cursor=TopicPartitionsCursor(cursor.topic_name, cursor.partition_index)
        if cursor is not None
        else None,
    )


def describe_topic_partitions_body(response: TopicPartitionsResponse) -> bytes:
    """The encoded DescribeTopicPartitions v0 body of ``response``."""
    module = _module(DESCRIBE_TOPIC_PARTITIONS, 0, request=False)
    cursor = response.next_cursor
    body = module.DescribeTopicPartitionsResponse(
        throttle_time=_NO_THROTTLE,
        topics=tuple(
            module.DescribeTopicPartitionsResponseTopic(
                error_code=KioErrorCode(t.error_code),
                name=t.name,
                topic_id=t.topic_id,
                is_internal=t.is_internal,
                partitions=tuple(
                    module.DescribeTopicPartitionsResponsePartition(
                        error_code=KioErrorCode(p.error_code),
                        partition_index=p.partition_index,
                        leader_id=p.leader_id,
                        leader_epoch=p.leader_epoch,
                        replica_nodes=p.replica_nodes,
                        isr_nodes=p.isr_nodes,
                        # No eligible leader replicas in this image model: empty, as
                        # Kafka sends for a partition without them.
                        eligible_leader_replicas=(),
                        last_known_elr=(),
                        offline_replicas=p.offline_replicas,
                    )
                    for p in t.partitions
                ),
                topic_authorized_operations=t.topic_authorized_operations,
            )
            for t in response.topics
        ),
        next_cursor=module.Cursor(
            topic_name=cursor.topic_name, partition_index=cursor.partition_index
        )
        if cursor is not None
        else None,
    )
    return _encode(body)


def encode_request(
    api_key: int, version: int, correlation_id: int, body: Any, client_id: str = "broker"
) -> bytes:
    """A whole request frame (for tools, tests and benchmarks acting as a client)."""
    schema = _request_schema(api_key, version)
    header = schema.__header_schema__(
        request_api_key=i16(api_key),
        request_api_version=i16(version),
        correlation_id=i32(correlation_id),
        client_id=client_id,
    )
    payload = _encode(header) + _encode(body)
    return _INT32.pack(len(payload)) + payload


def decode_response(api_key: int, version: int, frame: bytes) -> tuple[int, Any]:
    """(correlation id, body) of a response frame without its size prefix."""
    schema = _response_schema(api_key, version)
    header, used = entity_reader(schema.__header_schema__)(frame, 0)
    body, _ = entity_reader(schema)(frame, used)
    return header.correlation_id, body


def metadata_request_body(version: int, topics: list[str] | None = None) -> Any:
    """A kio Metadata request body of ``version`` (None: all topics)."""
    module = _module(METADATA, version, request=True)
    requested = None
    if topics is not None or version == 0:
        requested = tuple(
            _build(module.MetadataRequestTopic, name=name, topic_id=None) for name in topics or ()
        )
    return _build(
        module.MetadataRequest,
        topics=requested,
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=False,
    )


def describe_configs_request_body(
    version: int, resources: list[ConfigsRequest], *, include_synonyms: bool = False
) -> Any:
    """A kio DescribeConfigs request body of ``version`` (1-4)."""
    module = _module(DESCRIBE_CONFIGS, version, request=True)
    return _build(
        module.DescribeConfigsRequest,
        resources=tuple(
            module.DescribeConfigsResource(
                resource_type=r.resource_type,
                resource_name=r.resource_name,
                configuration_keys=r.keys,
            )
            for r in resources
        ),
        include_synonyms=include_synonyms,
        include_documentation=False,
    )


def topic_partitions_request_body(request: TopicPartitionsRequest) -> Any:
    """A kio DescribeTopicPartitions v0 request body of ``request``."""
    module = _module(DESCRIBE_TOPIC_PARTITIONS, 0, request=True)
    cursor = request.cursor
    return module.DescribeTopicPartitionsRequest(
        topics=tuple(module.TopicRequest(name=name) for name in request.topics),
        response_partition_limit=request.partition_limit,
        cursor=module.Cursor(topic_name=cursor.topic_name, partition_index=cursor.partition_index)
        if cursor is not None
        else None,
    )
