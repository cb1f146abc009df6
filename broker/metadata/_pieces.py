"""Pieces of an image as it writes itself: what lets a snapshot reuse unchanged bytes.

``image.write()`` yields the records that rebuild an image. ``image.write_pieces()``
yields the same records in the same order, except that the parts that grow with the
cluster come as pieces: an :class:`ImagePiece` (a topic, a chunk of the KV map) is a
stable key, the persistent object itself, and how to write it (records, or smaller
pieces); a :class:`MapPiece` (the streams, a topic's partitions) is a map whose every
entry is such a piece, without an object per entry. Consecutive images share every
untouched object, so an encoder that remembers the bytes it wrote per key reuses them
whenever the piece is still the same object, and builds records only for what changed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, NamedTuple

from immutables import Map

from broker.metadata._maps import sorted_items
from broker.metadata.records import MetadataRecord, record_encoder

__all__ = [
    "ImagePiece",
    "MapPiece",
    "Part",
    "RecordFields",
    "encoded_from",
    "records_from",
    "records_of",
]

RecordFields = tuple[type[MetadataRecord], dict[str, Any]]
"""A record to write, as its type and fields: what both :func:`records_from` and
:func:`encoded_from` take, so a piece states its records once."""


class ImagePiece(NamedTuple):
    """A part of an image written as ``write(*args)``; unchanged while ``value`` is the
    same object under the same ``key`` (or, with ``by_value``, an equal one)."""

    key: Hashable
    """Unique among its siblings (the pieces of one parent, or of the image)."""
    value: object
    write: Callable[..., Iterable[Part]]
    args: tuple[Any, ...] = ()
    by_value: bool = False
    """Compare ``value`` by equality: for a piece that is not one persistent object but
    a flat run of them (a chunk of a map's items), cheap to compare element by element."""
    encoded: Callable[..., tuple[bytes, int]] | None = None
    """``encoded(*args)``: the bytes of what ``write(*args)`` yields, encoded record by
    record, and how many records, straight from the values (see ``record_encoder``);
    an encoder that finds it need not build the records."""

    def parts(self) -> Iterable[Part]:
        """What the piece writes: records and smaller pieces, in order."""
        return self.write(*self.args)


class MapPiece(NamedTuple):
    """A map written entry by entry in key order, each entry as
    ``write(key, value, *args)``: one piece per entry, unchanged while the entry's value
    is the same object (and all of them while ``value``, the map, is).

    The flat form of an :class:`ImagePiece` per entry for the maps that grow with the
    cluster (100k streams): an encoder walks the entries with no object per entry."""

    key: Hashable
    """Unique among its siblings."""
    value: Map[Any, Any]
    write: Callable[..., Iterable[MetadataRecord]]
    encoded: Callable[..., tuple[bytes, int]]
    """``encoded(key, value, *args)``: the bytes of what ``write`` yields for the entry,
    encoded record by record, and how many records (see ``ImagePiece.encoded``)."""
    args: tuple[Any, ...] = ()

    def items(self) -> list[tuple[Any, Any]]:
        """The map's entries, in key order."""
        return sorted_items(self.value)

    def parts(self) -> Iterator[MetadataRecord]:
        """The records of every entry, in key order."""
        write, args = self.write, self.args
        for key, value in self.items():
            yield from write(key, value, *args)


Part = MetadataRecord | ImagePiece | MapPiece
"""What ``write_pieces()`` yields."""


def records_of(pieces: Iterable[Part]) -> Iterator[MetadataRecord]:
    """The records that ``pieces`` stand for, in order."""
    for piece in pieces:
        if isinstance(piece, ImagePiece):
            yield from records_of(piece.parts())
        elif isinstance(piece, MapPiece):
            yield from piece.parts()
        else:
            yield piece


def records_from(fields: Iterable[RecordFields]) -> Iterator[MetadataRecord]:
    """The records ``fields`` describe."""
    for record_type, values in fields:
        yield record_type(**values)


def encoded_from(fields: Iterable[RecordFields]) -> tuple[bytes, int]:
    """The records ``fields`` describe, encoded one by one without building them (their
    values come from an image, validated when replayed), and how many there are."""
    encoded = [record_encoder(record_type)(**values) for record_type, values in fields]
    return b"".join(encoded), len(encoded)
