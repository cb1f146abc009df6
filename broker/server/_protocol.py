"""Kafka wire protocol for the APIs the listener serves, on kio's schemas and codecs.

Pure functions: a request frame in, a response frame out (or ProtocolError, after which
the connection is closed). Served: ApiVersions v0-4 (with the UNSUPPORTED_VERSION
fallback clients rely on), Metadata v0-13 (through the metadata cache, so the failover
check and Kafka's error semantics hold on the wire) and DescribeCluster v0-1.
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
    ErrorCode,
    MetadataRequest,
    MetadataResponse,
    RequestTopic,
)
from broker.errors import ProtocolError

__all__ = [
    "API_VERSIONS",
    "DESCRIBE_CLUSTER",
    "METADATA",
    "SUPPORTED_VERSIONS",
    "api_versions_response",
    "decode_request",
    "decode_response",
    "describe_cluster_body",
    "encode_request",
    "encode_response",
    "metadata_body",
    "metadata_request",
    "metadata_request_body",
]

API_VERSIONS = 18
"""API key of ApiVersions."""
METADATA = 3
"""API key of Metadata."""
DESCRIBE_CLUSTER = 60
"""API key of DescribeCluster."""
SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {
    API_VERSIONS: (0, 4),
    METADATA: (0, 13),
    DESCRIBE_CLUSTER: (0, 1),
}
"""Served versions (lowest, highest) by API key: what ApiVersions advertises."""
_NO_THROTTLE = datetime.timedelta(0)
_INT32 = struct.Struct(">i")
_HEADER_START = struct.Struct(">hhi")  # api key, api version, correlation id


@cache
def _module(api_key: int, version: int, request: bool) -> ModuleType:
    schema = (
        load_request_schema(api_key, version) if request else load_response_schema(api_key, version)
    )
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
    schema = load_request_schema(api_key, version)
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
    return bool(load_response_schema(api_key, version).__header_schema__.__flexible__)


def encode_response(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    """A whole response frame: size, header (the version's header schema), body.

    The header is the correlation id, plus an empty tagged-field section in flexible
    versions (header v1); tests check it against kio's encoding.
    """
    header = _INT32.pack(correlation_id) + (b"\x00" if _flexible_header(api_key, version) else b"")
    return _INT32.pack(len(header) + len(body)) + header + body


def api_versions_response(version: int, correlation_id: int) -> bytes:
    """Our version ranges; a version we do not know gets a v0 body with
    UNSUPPORTED_VERSION, which makes clients retry with one we do."""
    error = ErrorCode.NONE
    if version > SUPPORTED_VERSIONS[API_VERSIONS][1]:
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


def encode_request(
    api_key: int, version: int, correlation_id: int, body: Any, client_id: str = "broker"
) -> bytes:
    """A whole request frame (for tools, tests and benchmarks acting as a client)."""
    schema = load_request_schema(api_key, version)
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
    schema = load_response_schema(api_key, version)
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
