"""The registry of record types, and the record batch: records appended together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from broker.metadata.records import _automq, _kafka
from broker.metadata.records._base import MetadataRecord

__all__ = ["AUTOMQ_RECORD_IDS", "RECORD_TYPES", "RecordBatch"]

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


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Records appended together; record ``i`` has offset ``base_offset + i``."""

    base_offset: int
    epoch: int
    append_time_ms: int
    records: tuple[MetadataRecord, ...]
    encoded_size: int | None = field(default=None, compare=False)
    """Bytes of the batch's frame, when it was read from an encoding (None otherwise)."""

    def __post_init__(self) -> None:
        if self.base_offset < 0:
            raise ValueError(f"base_offset must be >= 0, got {self.base_offset}")
        if not self.records:
            raise ValueError("a record batch holds at least one record")

    @property
    def last_offset(self) -> int:
        """Offset of the batch's last record."""
        return self.base_offset + len(self.records) - 1

    @property
    def next_offset(self) -> int:
        """Offset after the batch's last record."""
        return self.base_offset + len(self.records)
