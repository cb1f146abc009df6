"""What flows from the loader to consumers: updates, their manifests, the consumer protocol.

The lowest module of the pipeline: the loader writes manifests, the publisher wraps
them in updates, consumers receive updates, and none of them is needed to describe
these types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from broker.metadata import MetadataDelta, MetadataImage, Provenance

__all__ = [
    "DeliveryMode",
    "ImmediateConsumer",
    "LoadManifest",
    "ManifestSource",
    "MetadataConsumer",
    "MetadataUpdate",
]


class DeliveryMode(enum.Enum):
    """How a consumer receives images."""

    EVERY_DELTA = "every-delta"
    """Each (delta, image) in order through a bounded queue; a full queue holds the
    publisher back (back-pressure)."""
    LATEST_IMAGE = "latest-image"
    """Only the newest image; ones the consumer has not reached yet are released unseen."""


ManifestSource = Literal["log", "snapshot", "image"]
"""Where an image came from: log batches, a snapshot, or a whole image."""


@dataclass(frozen=True, slots=True)
class LoadManifest:
    """How the loader loaded an image (Kafka's LoaderManifest)."""

    source: ManifestSource
    """``log`` (batches of the log), ``snapshot``, or ``image`` (a catch-up delta from
    EMPTY built for a consumer that joined late)."""
    provenance: Provenance
    base_offset: int
    """First offset the image's delta covers (-1 when it covers none)."""
    batches: int
    records: int
    bytes: int | None
    """Encoded size of the batches, when the source knows it."""
    elapsed: float
    """Seconds spent replaying and applying."""
    replay_errors: int = 0
    """Records of this group that failed to replay and were skipped."""

    @classmethod
    def of_image(cls, image: MetadataImage) -> LoadManifest:
        """The manifest of an image handed over whole (no batches of its own)."""
        return cls("image", image.provenance, -1, 0, 0, None, 0.0)


@dataclass(frozen=True, slots=True)
class MetadataUpdate:
    """What a consumer receives. ``image`` (and ``delta.image``) are leased for the
    duration of the callback; retain what you keep."""

    image: MetadataImage
    delta: MetadataDelta | None
    """The change from the consumer's previous image; ``None`` in latest-image mode."""
    manifest: LoadManifest
    coalesced: int = 0
    """Images released unseen since the previous update (latest-image mode)."""


@runtime_checkable
class MetadataConsumer(Protocol):
    """Anything the publisher can feed: a name and an async callback."""

    @property
    def name(self) -> str:
        """Unique among one publisher's consumers."""
        ...

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        """Called once per delivered image, never concurrently with itself."""
        ...


@runtime_checkable
class ImmediateConsumer(Protocol):
    """A consumer whose update is a constant-time swap, done synchronously.

    In latest-image mode the publisher calls ``on_metadata_update_nowait`` at once, in
    its own call, instead of waking the consumer's task: whoever reads the consumer's
    image then always reads the newest published one, and derived state those readers
    build lands on the image the loader applies the next delta to (so it follows).
    It must not block nor take long; the image is leased for the call.
    """

    def on_metadata_update_nowait(self, update: MetadataUpdate) -> None:
        """Take ``update`` now (retain what you keep)."""
        ...
