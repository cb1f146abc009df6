"""broker: the metadata pipeline of an async, Kafka-compatible broker prototype.

The names an embedding application needs, loaded on first use so that importing the
pure image core (``broker.metadata``, ``broker.metadata.records``) stays free of the
event loop::

    async with broker.MetadataPipeline(source) as pipeline:
        cache = broker.MetadataCache("my-cluster")
        pipeline.add_consumer(cache, broker.DeliveryMode.LATEST_IMAGE)
        with await cache.wait_for_offset(0) as image: ...

Everything else lives in the subpackages: ``metadata`` (images, deltas, lifetime),
``metadata.records``, ``metadata.pipeline``, ``metadata.sources``, ``cache``,
``server`` and ``sim``.
"""

from __future__ import annotations

import typing

from broker._gc import IMAGE_FRIENDLY_GC_THRESHOLDS, tune_gc
from broker._lazy import lazy_exports as _lazy_exports
from broker._malloc import tune_malloc
from broker.errors import BrokerError

if typing.TYPE_CHECKING:
    from broker.cache import MetadataCache, MetadataRequest
    from broker.metadata import Lease, MetadataDelta, MetadataImage, Provenance
    from broker.metadata.pipeline import (
        DeliveryMode,
        ImageHolder,
        MetadataConsumer,
        MetadataPipeline,
        MetadataUpdate,
    )
    from broker.metadata.sources import FileRecordLog, InMemoryRecordSource

__version__ = "0.1.0"

__all__ = [
    "IMAGE_FRIENDLY_GC_THRESHOLDS",
    "BrokerError",
    "DeliveryMode",
    "FileRecordLog",
    "ImageHolder",
    "InMemoryRecordSource",
    "Lease",
    "MetadataCache",
    "MetadataConsumer",
    "MetadataDelta",
    "MetadataImage",
    "MetadataPipeline",
    "MetadataRequest",
    "MetadataUpdate",
    "Provenance",
    "__version__",
    "tune_gc",
    "tune_malloc",
]

_HOME = {
    "MetadataCache": "broker.cache",
    "MetadataRequest": "broker.cache",
    "Lease": "broker.metadata",
    "MetadataDelta": "broker.metadata",
    "MetadataImage": "broker.metadata",
    "Provenance": "broker.metadata",
    "DeliveryMode": "broker.metadata.pipeline",
    "ImageHolder": "broker.metadata.pipeline",
    "MetadataConsumer": "broker.metadata.pipeline",
    "MetadataPipeline": "broker.metadata.pipeline",
    "MetadataUpdate": "broker.metadata.pipeline",
    "FileRecordLog": "broker.metadata.sources",
    "InMemoryRecordSource": "broker.metadata.sources",
}

# Loaded on first use: ``import broker.metadata`` must not pull in anyio.
__getattr__, __dir__ = _lazy_exports(__name__, _HOME, __all__)
