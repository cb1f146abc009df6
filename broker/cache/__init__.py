"""The metadata cache: METADATA answers, the failover check and stream metadata.

The answers and the failover check are pure functions of one image
(:func:`answer_metadata`, :func:`check_partition`); the consumers keep their own
reference to the newest image and lease it per request: :class:`MetadataCache`,
:class:`StreamMetadataManager` and :class:`FailoverMonitor`.
"""

from broker.cache._answers import (
    DEFAULT_LISTENER,
    AnswerSettings,
    BrokerViews,
    ClusterDescription,
    DirectoryId,
    ImageAnswers,
    PartitionLeader,
    answer_metadata,
    answers_key,
    version_class,
)
from broker.cache._cache import MetadataCache
from broker.cache._failover import (
    FailoverIndex,
    FailoverState,
    FailoverStatus,
    MissingStreamPolicy,
    PartitionInFailover,
    TopicPartitionKey,
    check_partition,
    failed_nodes,
    failover_state_key,
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
    "AnswerSettings",
    "BrokerMetadata",
    "BrokerViews",
    "ClusterDescription",
    "DirectoryId",
    "ErrorCode",
    "FailoverIndex",
    "FailoverMonitor",
    "FailoverState",
    "FailoverStatistics",
    "FailoverStatus",
    "FetchResult",
    "ImageAnswers",
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
    "TopicPartitionKey",
    "answer_metadata",
    "answers_key",
    "check_partition",
    "failed_nodes",
    "failover_state_key",
    "partitions_in_failover",
    "version_class",
]
