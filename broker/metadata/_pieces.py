"""Pieces of an image as it writes itself: what lets a snapshot reuse unchanged bytes.

``image.write()`` yields the records that rebuild an image. ``image.write_pieces()``
yields the same records in the same order, except that the parts that grow with the
cluster (a topic, each of its partitions, a stream) come as an :class:`ImagePiece`: a
stable key, the persistent object itself, and how to write it (records, or smaller
pieces). Consecutive images share every untouched object, so an encoder that remembers
the bytes it wrote per key reuses them whenever the piece is still the same object, and
builds records only for what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, NamedTuple

from broker.metadata.records import MetadataRecord

__all__ = ["ImagePiece", "records_of"]


class ImagePiece(NamedTuple):
    """A part of an image written as ``write(*args)``; unchanged while ``value`` is the
    same object under the same ``key`` (or, with ``by_value``, an equal one)."""

    key: Hashable
    """Unique among its siblings (the pieces of one parent, or of the image)."""
    value: object
    write: Callable[..., Iterable[MetadataRecord | ImagePiece]]
    args: tuple[Any, ...] = ()
    by_value: bool = False
    """Compare ``value`` by equality: for a piece that is not one persistent object but
    a flat run of them (a chunk of a map's items), cheap to compare element by element."""

    def parts(self) -> Iterable[MetadataRecord | ImagePiece]:
        """What the piece writes: records and smaller pieces, in order."""
        return self.write(*self.args)


def records_of(pieces: Iterable[MetadataRecord | ImagePiece]) -> Iterator[MetadataRecord]:
    """The records that ``pieces`` stand for, in order."""
    for piece in pieces:
        if type(piece) is ImagePiece:
            yield from records_of(piece.write(*piece.args))
        else:
            yield piece  # type: ignore[misc]  # a record
