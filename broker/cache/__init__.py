"""The metadata cache: METADATA answers, the failover check and stream metadata.

The answers and the failover check are pure functions of one image
(:func:`answer_metadata`, :func:`check_partition`); the consumers keep their own
reference to the newest image and lease it per request: :class:`MetadataCache`,
:class:`StreamMetadataManager` and :class:`FailoverMonitor`.
"""

from broker.cache._answers import (
    DEFAULT_LISTENER,
    ClusterDescription,
    DirectoryId,
    PartitionLeader,
    alive_brokers,
    answer_metadata,
    partition_answer,
)
from broker.cache._cache import MetadataCache
from broker.cache._failover import (
    FailoverIndex,
    FailoverStatus,
    MissingStreamPolicy,
    PartitionInFailover,
    check_partition,
    failed_nodes,
    failover_index_key,
    partitions_in_failover,
)
from broker.cache._failover_monitor import FailoverMonitor, FailoverStatistics
from broker.cache._models import (
    AUTHORIZED_OPERATIONS_OMITTED,
    INTERNAL_TOPICS,
    MAX_METADATA_VERSION,
    BrokerMetadata,
    ErrorCode,
    MetadataRequest,
    MetadataResponse,
    PartitionMetadata,
    RequestTopic,
    TopicMetadata,
)
from broker.cache._streams import FetchResult, StreamManagerStatistics, StreamMetadataManager

__all__ = [
    "AUTHORIZED_OPERATIONS_OMITTED",
    "DEFAULT_LISTENER",
    "INTERNAL_TOPICS",
    "MAX_METADATA_VERSION",
    "BrokerMetadata",
    "ClusterDescription",
    "DirectoryId",
    "ErrorCode",
    "FailoverIndex",
    "FailoverMonitor",
    "FailoverStatistics",
    "FailoverStatus",
    "FetchResult",
    "MetadataCache",
    "MetadataRequest",
    "MetadataResponse",
    "MissingStreamPolicy",
    "PartitionInFailover",
    "PartitionLeader",
    "PartitionMetadata",
    "RequestTopic",
    "StreamManagerStatistics",
    "StreamMetadataManager",
    "TopicMetadata",
    "alive_brokers",
    "answer_metadata",
    "check_partition",
    "failed_nodes",
    "failover_index_key",
    "partition_answer",
    "partitions_in_failover",
]
