"""The Kafka wire listener: real Kafka clients fetch metadata from the broker."""

from broker.server._listener import KafkaListener, ListenerStatistics
from broker.server._metadata_wire import (
    MetadataFormat,
    WireMetadata,
    metadata_format,
    wire_metadata_key,
)
from broker.server._protocol import (
    API_VERSIONS,
    DESCRIBE_CLUSTER,
    METADATA,
    SUPPORTED_VERSIONS,
    api_versions_response,
    decode_request,
    decode_response,
    describe_cluster_body,
    encode_request,
    encode_response,
    metadata_body,
    metadata_request,
    metadata_request_body,
)

__all__ = [
    "API_VERSIONS",
    "DESCRIBE_CLUSTER",
    "METADATA",
    "SUPPORTED_VERSIONS",
    "KafkaListener",
    "ListenerStatistics",
    "MetadataFormat",
    "WireMetadata",
    "api_versions_response",
    "decode_request",
    "decode_response",
    "describe_cluster_body",
    "encode_request",
    "encode_response",
    "metadata_body",
    "metadata_format",
    "metadata_request",
    "metadata_request_body",
    "wire_metadata_key",
]
