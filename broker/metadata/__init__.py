"""The image core: immutable images, deltas, and reference-counted image lifetime.

Pure, synchronous code (no event loop). Records are in :mod:`broker.metadata.records`;
the async loader and publisher in :mod:`broker.metadata.pipeline`; where batches come
from in :mod:`broker.metadata.sources`. Importing this package loads none of those.
"""

from broker.metadata._cluster import (
    BrokerRegistration,
    ClusterDelta,
    ClusterImage,
    ControllerRegistration,
)
from broker.metadata._configs import (
    ClientQuotasDelta,
    ClientQuotasImage,
    ConfigResource,
    ConfigurationsDelta,
    ConfigurationsImage,
)
from broker.metadata._delta import MetadataDelta, replay_records
from broker.metadata._features import (
    FeaturesDelta,
    FeaturesImage,
    ProducerIdsDelta,
    ProducerIdsImage,
)
from broker.metadata._image import SUB_IMAGES, MetadataImage, Provenance
from broker.metadata._meta_streams import (
    FAILOVER_KV_KEY,
    decode_stream_id,
    encode_stream_id,
    meta_stream_key,
    meta_stream_prefix,
    parse_meta_stream_key,
)
from broker.metadata._pieces import ImagePiece, MapPiece, Part, records_of
from broker.metadata._refcount import (
    DerivedKey,
    LeakDetectionLevel,
    Lease,
    LifetimeStatistics,
    RefCounted,
    get_leak_detection_level,
    leak_detection_level,
    lifetime_statistics,
    release_all,
    retain_all,
    set_leak_detection_level,
)
from broker.metadata._security import (
    AclsDelta,
    AclsImage,
    DelegationTokensDelta,
    DelegationTokensImage,
    ScramDelta,
    ScramImage,
)
from broker.metadata._streams import (
    KVDelta,
    KVImage,
    NodeWALDelta,
    NodeWALImage,
    ObjectsDelta,
    ObjectsImage,
    RangeMetadata,
    StreamMetadata,
    StreamObject,
    StreamsDelta,
    StreamsImage,
)
from broker.metadata._topics import (
    LeadershipChanges,
    PartitionRegistration,
    TopicDelta,
    TopicIdPartition,
    TopicImage,
    TopicsDelta,
    TopicsImage,
)

__all__ = [
    "FAILOVER_KV_KEY",
    "SUB_IMAGES",
    "AclsDelta",
    "AclsImage",
    "BrokerRegistration",
    "ClientQuotasDelta",
    "ClientQuotasImage",
    "ClusterDelta",
    "ClusterImage",
    "ConfigResource",
    "ConfigurationsDelta",
    "ConfigurationsImage",
    "ControllerRegistration",
    "DelegationTokensDelta",
    "DelegationTokensImage",
    "DerivedKey",
    "FeaturesDelta",
    "FeaturesImage",
    "ImagePiece",
    "KVDelta",
    "KVImage",
    "LeadershipChanges",
    "LeakDetectionLevel",
    "Lease",
    "LifetimeStatistics",
    "MapPiece",
    "MetadataDelta",
    "MetadataImage",
    "NodeWALDelta",
    "NodeWALImage",
    "ObjectsDelta",
    "ObjectsImage",
    "Part",
    "PartitionRegistration",
    "ProducerIdsDelta",
    "ProducerIdsImage",
    "Provenance",
    "RangeMetadata",
    "RefCounted",
    "ScramDelta",
    "ScramImage",
    "StreamMetadata",
    "StreamObject",
    "StreamsDelta",
    "StreamsImage",
    "TopicDelta",
    "TopicIdPartition",
    "TopicImage",
    "TopicsDelta",
    "TopicsImage",
    "decode_stream_id",
    "encode_stream_id",
    "get_leak_detection_level",
    "leak_detection_level",
    "lifetime_statistics",
    "meta_stream_key",
    "meta_stream_prefix",
    "parse_meta_stream_key",
    "records_of",
    "release_all",
    "replay_records",
    "retain_all",
    "set_leak_detection_level",
]
