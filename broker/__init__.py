"""broker: the metadata pipeline of an async, Kafka-compatible broker prototype."""

from broker._gc import IMAGE_FRIENDLY_GC_THRESHOLDS, tune_gc
from broker.errors import (
    BrokerError,
    ConfigurationError,
    CorruptRecordError,
    FetchTimeoutError,
    HolderClosedError,
    ImageReleasedError,
    LifetimeError,
    LoaderHaltedError,
    ReferenceCountError,
    ReplayError,
    SnapshotRequiredError,
    WriterFencedError,
)

__version__ = "0.1.0"

__all__ = [
    "IMAGE_FRIENDLY_GC_THRESHOLDS",
    "BrokerError",
    "ConfigurationError",
    "CorruptRecordError",
    "FetchTimeoutError",
    "HolderClosedError",
    "ImageReleasedError",
    "LifetimeError",
    "LoaderHaltedError",
    "ReferenceCountError",
    "ReplayError",
    "SnapshotRequiredError",
    "WriterFencedError",
    "__version__",
    "tune_gc",
]
