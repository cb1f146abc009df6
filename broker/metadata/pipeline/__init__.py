"""The async pipeline: the loader turns batches into images, the publisher hands them on.

Data flows one way: a :class:`~broker.metadata.sources.RecordSource` feeds the
:class:`MetadataLoader`, which replays batches into deltas and applies them; the
:class:`MetadataPublisher` retains each new image once per consumer and hands it over;
consumers keep what they need in an :class:`ImageHolder`. :class:`MetadataPipeline` is
the loader and publisher in one ``async with``.

Every holder of images leases the same way::

    with x.lease() as image: ...                       # the current image, now
    with await x.wait_for_offset(n) as image: ...      # once it reaches offset n
"""

from broker._gc import (
    GcStatistics,
    gc_management,
    gc_statistics,
    set_gc_management,
)
from broker.metadata.pipeline._holder import HoldingConsumer, ImageHolder
from broker.metadata.pipeline._loader import LoaderStatistics, MetadataLoader, ReplayErrorPolicy
from broker.metadata.pipeline._pipeline import MetadataPipeline, PipelineStatistics
from broker.metadata.pipeline._publisher import MetadataPublisher, PublisherStatistics
from broker.metadata.pipeline._snapshots import SnapshotWriter
from broker.metadata.pipeline._subscription import ConsumerStatistics, Subscription
from broker.metadata.pipeline._updates import (
    DeliveryMode,
    ImmediateConsumer,
    LoadManifest,
    ManifestSource,
    MetadataConsumer,
    MetadataUpdate,
)

__all__ = [
    "ConsumerStatistics",
    "DeliveryMode",
    "GcStatistics",
    "HoldingConsumer",
    "ImageHolder",
    "ImmediateConsumer",
    "LoadManifest",
    "LoaderStatistics",
    "ManifestSource",
    "MetadataConsumer",
    "MetadataLoader",
    "MetadataPipeline",
    "MetadataPublisher",
    "MetadataUpdate",
    "PipelineStatistics",
    "PublisherStatistics",
    "ReplayErrorPolicy",
    "SnapshotWriter",
    "Subscription",
    "gc_management",
    "gc_statistics",
    "set_gc_management",
]
