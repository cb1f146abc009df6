"""Metadata records, immutable images and deltas, and reference-counted image lifetime.

Everything here is pure, synchronous code except the loader, publisher and record
sources, which run on anyio.
"""

from broker.metadata._cluster import (
    BrokerRegistration,
    ClusterDelta,
    ClusterImage,
    ControllerRegistration,
)
from broker.metadata._codec import (
    FORMAT_VERSION,
    MAX_FRAME_SIZE,
    decode_batch,
    decode_record,
    encode_batch,
    encode_record,
    iter_batches,
)
from broker.metadata._configs import (
    ClientQuotasDelta,
    ClientQuotasImage,
    ConfigResource,
    ConfigurationsDelta,
    ConfigurationsImage,
)
from broker.metadata._delta import MetadataDelta, replay_records
from broker.metadata._etcd import EtcdLogStatistics, EtcdRecordLog, LocalEtcd, parse_etcd_url
from broker.metadata._features import (
    FeaturesDelta,
    FeaturesImage,
    ProducerIdsDelta,
    ProducerIdsImage,
)
from broker.metadata._file_log import FileRecordLog, RecoveryReport
from broker.metadata._holder import HoldingConsumer, ImageHolder
from broker.metadata._image import SUB_IMAGES, MetadataImage, Provenance
from broker.metadata._loader import LoaderStatistics, MetadataLoader
from broker.metadata._pipeline import MetadataPipeline, PipelineStatistics, SnapshotWriter
from broker.metadata._publisher import (
    ConsumerStatistics,
    DeliveryMode,
    LoadManifest,
    MetadataConsumer,
    MetadataPublisher,
    MetadataUpdate,
    PublisherStatistics,
    Subscription,
)
from broker.metadata._records import *  # noqa: F403 - the record types are the API
from broker.metadata._records import __all__ as _record_names
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
from broker.metadata._sources import (
    InMemoryRecordSource,
    RecordLog,
    RecordSource,
    Snapshot,
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
    *_record_names,
    "FORMAT_VERSION",
    "MAX_FRAME_SIZE",
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
    "ConsumerStatistics",
    "DeliveryMode",
    "EtcdLogStatistics",
    "EtcdRecordLog",
    "FeaturesImage",
    "FileRecordLog",
    "HoldingConsumer",
    "InMemoryRecordSource",
    "LoadManifest",
    "LocalEtcd",
    "LoaderStatistics",
    "MetadataConsumer",
    "MetadataLoader",
    "MetadataPipeline",
    "MetadataPublisher",
    "MetadataUpdate",
    "PipelineStatistics",
    "PublisherStatistics",
    "RecordLog",
    "RecordSource",
    "RecoveryReport",
    "Snapshot",
    "SnapshotWriter",
    "Subscription",
    "ImageHolder",
    "KVDelta",
    "KVImage",
    "Lease",
    "LeadershipChanges",
    "LeakDetectionLevel",
    "LifetimeStatistics",
    "MetadataDelta",
    "MetadataImage",
    "NodeWALDelta",
    "NodeWALImage",
    "ObjectsDelta",
    "ObjectsImage",
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
    "decode_batch",
    "decode_record",
    "encode_batch",
    "encode_record",
    "get_leak_detection_level",
    "iter_batches",
    "leak_detection_level",
    "lifetime_statistics",
    "parse_etcd_url",
    "release_all",
    "replay_records",
    "retain_all",
    "set_leak_detection_level",
]
