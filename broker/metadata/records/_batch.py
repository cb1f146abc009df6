"""The registry of record types, and the record batch: records appended together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from types import MappingProxyType
from typing import Any, ClassVar

from broker.metadata.records import _automq, _kafka
from broker.metadata.records._base import MetadataRecord

__all__ = ["AUTOMQ_RECORD_IDS", "RECORD_TYPES", "RecordBatch", "RecordView"]

# Both modules define record types; the registry below finds them as subclasses.
_RECORD_MODULES = (_kafka, _automq)


def _registry() -> Mapping[int, type[MetadataRecord]]:
    types: dict[int, type[MetadataRecord]] = {}
    pending: list[type[MetadataRecord]] = list(MetadataRecord.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.api_key in types:  # a duplicate id would silently decode as the wrong type
            raise AssertionError(f"api_key {cls.api_key} used twice")
        types[cls.api_key] = cls
    return MappingProxyType(dict(sorted(types.items())))


RECORD_TYPES: Mapping[int, type[MetadataRecord]] = _registry()
"""Every record type by api key."""

AUTOMQ_RECORD_IDS: Mapping[str, int] = MappingProxyType(
    {cls.__name__: key for key, cls in RECORD_TYPES.items() if key >= 500}
)
"""The ids we assigned to AutoMQ's record types (AutoMQ itself renumbered them)."""


class RecordView(tuple[Any, ...]):
    """A record of a trusted batch as replay reads it: its wire array (api key, version,
    fields in order, enums converted) with the record type's field names as attributes.

    Building a pydantic record costs three to five times more than this, and a catch-up
    from our own log replays every record once and drops it: :attr:`RecordBatch.replayable`
    holds views for the hot record types of a controller's log, whose replay rules only
    read fields. Nothing outside replay sees one: :attr:`RecordBatch.records` builds the
    records (:meth:`record`). Subclasses are made per record type by the codec.
    """

    __slots__ = ()
    record_class: ClassVar[type[MetadataRecord]]
    """The record type this views (replay finds its rule by it)."""

    def record(self) -> MetadataRecord:
        """The record object, built from the view's fields."""
        raise NotImplementedError  # pragma: no cover - every subclass has its builder


class RecordBatch:
    """Records appended together; record ``i`` has offset ``base_offset + i``.

    Frozen, equal by offset, epoch, append time and records. A batch decoded from this
    library's own storage builds its record objects when :attr:`records` is first read;
    replay reads :attr:`replayable` instead (see :class:`RecordView`).
    """

    __slots__ = (
        "_records",
        "_replayable",
        "append_time_ms",
        "base_offset",
        "encoded_size",
        "epoch",
        "record_count",
    )
    __match_args__ = ("base_offset", "epoch", "append_time_ms", "records", "encoded_size")

    base_offset: int
    epoch: int
    append_time_ms: int
    encoded_size: int | None
    """Bytes of the batch's frame, when it was read from an encoding (None otherwise)."""
    record_count: int
    """How many records the batch holds (without building them)."""
    _records: tuple[MetadataRecord, ...] | None
    _replayable: tuple[MetadataRecord, ...]
    """Records and RecordViews (typed as the records they replay as)."""

    def __init__(
        self,
        base_offset: int,
        epoch: int,
        append_time_ms: int,
        records: tuple[MetadataRecord, ...],
        encoded_size: int | None = None,
    ) -> None:
        _fill(self, base_offset, epoch, append_time_ms, records, records, encoded_size)

    @classmethod
    def _decoded(
        cls,
        base_offset: int,
        epoch: int,
        append_time_ms: int,
        replayable: tuple[MetadataRecord, ...],
        encoded_size: int,
    ) -> RecordBatch:
        """A batch of trusted records, some of them views (the codec's): its records
        are built when first read."""
        batch = _new(cls)
        _fill(batch, base_offset, epoch, append_time_ms, None, replayable, encoded_size)
        return batch

    @property
    def records(self) -> tuple[MetadataRecord, ...]:
        """The record objects (built on first read for a batch decoded from our storage)."""
        records = self._records
        if records is None:
            records = tuple(
                [r.record() if isinstance(r, RecordView) else r for r in self._replayable]
            )
            _set_records(self, records)
        return records

    @property
    def replayable(self) -> tuple[MetadataRecord, ...]:
        """What ``MetadataDelta.replay_all`` takes for this batch: :attr:`records`, or,
        for a batch decoded from our own storage, records and views of records that
        replay the same (the loader's way, which builds no record it does not need)."""
        return self._replayable

    @property
    def last_offset(self) -> int:
        """Offset of the batch's last record."""
        return self.base_offset + self.record_count - 1

    @property
    def next_offset(self) -> int:
        """Offset after the batch's last record."""
        return self.base_offset + self.record_count

    def _key(self) -> tuple[int, int, int, tuple[MetadataRecord, ...]]:
        return (self.base_offset, self.epoch, self.append_time_ms, self.records)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordBatch):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"RecordBatch(base_offset={self.base_offset!r}, epoch={self.epoch!r}, "
            f"append_time_ms={self.append_time_ms!r}, records={self.records!r}, "
            f"encoded_size={self.encoded_size!r})"
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (RecordBatch, (*self._key(), self.encoded_size))

    def replace(self, **changes: Any) -> RecordBatch:
        """A copy with some fields changed (as ``dataclasses.replace`` did when this
        was a dataclass): ``batch.replace(append_time_ms=now)``."""
        fields: dict[str, Any] = {
            "base_offset": self.base_offset,
            "epoch": self.epoch,
            "append_time_ms": self.append_time_ms,
            "records": self.records,
            "encoded_size": self.encoded_size,
        }
        unknown = changes.keys() - fields.keys()
        if unknown:
            raise TypeError(f"RecordBatch has no field {sorted(unknown)[0]!r}")
        fields.update(changes)
        return RecordBatch(**fields)


def _fill(
    batch: RecordBatch,
    base_offset: int,
    epoch: int,
    append_time_ms: int,
    records: tuple[MetadataRecord, ...] | None,
    replayable: tuple[MetadataRecord, ...],
    encoded_size: int | None,
) -> None:
    """Set a new batch's fields, slot by slot (a file log decodes tens of thousands of
    small batches: ``object.__setattr__`` by name cost twice as much)."""
    if base_offset < 0:
        raise ValueError(f"base_offset must be >= 0, got {base_offset}")
    if not replayable:
        raise ValueError("a record batch holds at least one record")
    _set_base_offset(batch, base_offset)
    _set_epoch(batch, epoch)
    _set_append_time_ms(batch, append_time_ms)
    _set_records(batch, records)
    _set_replayable(batch, replayable)
    _set_encoded_size(batch, encoded_size)
    _set_record_count(batch, len(replayable))


_new = object.__new__
# The slots' own setters (RecordBatch.__setattr__ refuses assignment: it is frozen).
(
    _set_base_offset,
    _set_epoch,
    _set_append_time_ms,
    _set_records,
    _set_replayable,
    _set_encoded_size,
    _set_record_count,
) = (
    RecordBatch.__dict__[name].__set__
    for name in (
        "base_offset",
        "epoch",
        "append_time_ms",
        "_records",
        "_replayable",
        "encoded_size",
        "record_count",
    )
)
