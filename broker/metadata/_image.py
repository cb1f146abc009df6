"""The metadata image: an immutable, reference-counted view of the whole cluster.

An image is provenance (the last offset, epoch and append time it contains) plus one
sub-image per area. Sub-images are plain immutable values shared between consecutive
images; the image itself is reference counted (see ``_refcount``) so per-image derived
state (encoded responses, indexes) lives exactly as long as somebody holds the image,
and a read of a released image fails loudly instead of answering from dead state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, overload

from broker.metadata._cluster import ClusterImage
from broker.metadata._configs import ClientQuotasImage, ConfigurationsImage
from broker.metadata._features import FeaturesImage, ProducerIdsImage
from broker.metadata._pieces import Part, records_of
from broker.metadata._refcount import RefCounted
from broker.metadata._security import AclsImage, DelegationTokensImage, ScramImage
from broker.metadata._streams import KVImage, NodeWALImage, ObjectsImage, StreamsImage
from broker.metadata._topics import TopicsImage
from broker.metadata.records import MetadataRecord

__all__ = ["SUB_IMAGES", "MetadataImage", "Provenance"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where an image comes from: the last record it contains."""

    offset: int
    epoch: int
    append_time_ms: int

    EMPTY: ClassVar[Provenance]


Provenance.EMPTY = Provenance(-1, -1, -1)


class _SubImage(Generic[T]):
    """Accessor of one sub-image that refuses to read a released image."""

    __slots__ = ("index", "name")

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name
        self.index = _SUB_IMAGE_INDEX[name]

    @overload
    def __get__(self, image: None, owner: type[Any]) -> _SubImage[T]: ...
    @overload
    def __get__(self, image: MetadataImage, owner: type[Any]) -> T: ...
    def __get__(self, image: MetadataImage | None, owner: type[Any]) -> T | _SubImage[T]:
        if image is None:
            return self
        if image._refcnt <= 0:
            image.check_live(self.name)
        value: T = image._parts[self.index]
        return value


SUB_IMAGES = (
    "features",
    "cluster",
    "topics",
    "configs",
    "client_quotas",
    "producer_ids",
    "acls",
    "scram",
    "delegation_tokens",
    "streams",
    "objects",
    "node_wal",
    "kv",
)
"""Sub-image names in ``write()`` order: features first (metadata.version), topics before
their configs."""

_SUB_IMAGE_INDEX = {name: index for index, name in enumerate(SUB_IMAGES)}
"""Each sub-image's place in an image's ``_parts`` tuple, by name."""


class MetadataImage(RefCounted):
    """One immutable version of the cluster metadata.

    Holds one reference when created, owned by the creator (``with Lease(image):``
    scopes it).
    ``MetadataImage.EMPTY`` is immortal. Every accessor raises ImageReleasedError once
    the last reference is released.
    """

    __slots__ = ("_parts", "_provenance")

    EMPTY: ClassVar[MetadataImage]

    features = _SubImage[FeaturesImage]()
    cluster = _SubImage[ClusterImage]()
    topics = _SubImage[TopicsImage]()
    configs = _SubImage[ConfigurationsImage]()
    client_quotas = _SubImage[ClientQuotasImage]()
    producer_ids = _SubImage[ProducerIdsImage]()
    acls = _SubImage[AclsImage]()
    scram = _SubImage[ScramImage]()
    delegation_tokens = _SubImage[DelegationTokensImage]()
    streams = _SubImage[StreamsImage]()
    objects = _SubImage[ObjectsImage]()
    node_wal = _SubImage[NodeWALImage]()
    kv = _SubImage[KVImage]()

    def __init__(
        self,
        provenance: Provenance,
        *,
        features: FeaturesImage = FeaturesImage.EMPTY,
        cluster: ClusterImage = ClusterImage.EMPTY,
        topics: TopicsImage = TopicsImage.EMPTY,
        configs: ConfigurationsImage = ConfigurationsImage.EMPTY,
        client_quotas: ClientQuotasImage = ClientQuotasImage.EMPTY,
        producer_ids: ProducerIdsImage = ProducerIdsImage.EMPTY,
        acls: AclsImage = AclsImage.EMPTY,
        scram: ScramImage = ScramImage.EMPTY,
        delegation_tokens: DelegationTokensImage = DelegationTokensImage.EMPTY,
        streams: StreamsImage = StreamsImage.EMPTY,
        objects: ObjectsImage = ObjectsImage.EMPTY,
        node_wal: NodeWALImage = NodeWALImage.EMPTY,
        kv: KVImage = KVImage.EMPTY,
        immortal: bool = False,
    ) -> None:
        self._provenance = provenance
        # One tuple in SUB_IMAGES order, not a slot each: a successor copies it whole.
        self._parts: tuple[Any, ...] = (
            features,
            cluster,
            topics,
            configs,
            client_quotas,
            producer_ids,
            acls,
            scram,
            delegation_tokens,
            streams,
            objects,
            node_wal,
            kv,
        )
        super().__init__(immortal=immortal)

    # identity: readable on dead images too, so errors can name them -------------------

    @property
    def provenance(self) -> Provenance:
        """Where the image comes from: offset, epoch and append time of its last record."""
        return self._provenance

    @property
    def offset(self) -> int:
        """Offset of the last record the image contains (-1: none)."""
        return self._provenance.offset

    @property
    def epoch(self) -> int:
        """Leader epoch of the last record the image contains."""
        return self._provenance.epoch

    def describe(self) -> str:
        """A short name for messages: serial, offset and epoch."""
        p = self._provenance
        kind = "EMPTY " if self._immortal and p == Provenance.EMPTY else ""
        return f"{kind}MetadataImage#{self._serial}(offset={p.offset}, epoch={p.epoch})"

    def __repr__(self) -> str:
        state = "immortal" if self._immortal else f"refCnt={self._refcnt}"
        return f"<{self.describe()} {state}>"

    # content ---------------------------------------------------------------------------

    def sub_images(self) -> dict[str, Any]:
        """Every sub-image by name (checked: raises on a released image)."""
        self.check_live("sub_images")
        return dict(zip(SUB_IMAGES, self._parts, strict=True))

    def _successor(self, provenance: Provenance, changed: dict[str, Any]) -> MetadataImage:
        """A new image of this one's sub-images with ``changed`` (by name) in their place,
        at ``provenance``; it holds one reference, owned by the caller (checked: raises
        on a released image).

        What ``MetadataImage(provenance, **{**self.sub_images(), **changed})`` builds,
        without the dict and the keyword binding: a delta's apply, once per image.
        """
        self.check_live("sub_images")
        parts = list(self._parts)
        for name, part in changed.items():
            parts[_SUB_IMAGE_INDEX[name]] = part
        image = MetadataImage.__new__(MetadataImage)
        image._parts = tuple(parts)
        image._provenance = provenance
        RefCounted.__init__(image)
        return image

    @property
    def is_empty(self) -> bool:
        """True when every sub-image is empty (the provenance may still be set)."""
        return self.sub_images() == MetadataImage.EMPTY.sub_images()

    def write(self) -> Iterator[MetadataRecord]:
        """Records that rebuild this image when replayed onto EMPTY; metadata.version first."""
        return records_of(self.write_pieces())

    def write_pieces(self) -> Iterator[Part]:
        """:meth:`write`, with partitions and streams as pieces that an encoder can
        recognise from one image to the next (see ``ImagePiece``)."""
        for name in SUB_IMAGES:
            part: Any = getattr(self, name)
            yield from part.write_pieces() if hasattr(part, "write_pieces") else part.write()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetadataImage):
            return NotImplemented
        return self.provenance == other.provenance and self.sub_images() == other.sub_images()

    __hash__ = None  # type: ignore[assignment]  # equal by value, and mutable refcount


MetadataImage.EMPTY = MetadataImage(Provenance.EMPTY, immortal=True)
