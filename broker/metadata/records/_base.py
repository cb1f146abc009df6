"""What every record type shares: the base model, field types and sentinel values.

Field names are Kafka's, in snake case. Lists are tuples so records are hashable values.
"""

from __future__ import annotations

from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "METADATA_VERSION_FEATURE",
    "NO_LEADER",
    "NO_LEADER_CHANGE",
    "ZERO_UUID",
    "MetadataRecord",
]

Int8 = Annotated[int, Field(ge=-(2**7), le=2**7 - 1)]
Int16 = Annotated[int, Field(ge=-(2**15), le=2**15 - 1)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
UInt16 = Annotated[int, Field(ge=0, le=2**16 - 1)]
# Non-negative ids and offsets (constraints inside Annotated win over an outer Field).
Id32 = Annotated[int, Field(ge=0, le=2**31 - 1)]
Id64 = Annotated[int, Field(ge=0, le=2**63 - 1)]
Level16 = Annotated[int, Field(ge=0, le=2**15 - 1)]
Int32s = tuple[Int32, ...]

NO_LEADER = -1
"""``leader`` value meaning the partition has no leader."""
NO_LEADER_CHANGE = -2
"""``PartitionChangeRecord.leader`` value meaning the leader did not change."""
METADATA_VERSION_FEATURE = "metadata.version"
"""The feature whose level decides how records are read (Kafka's MetadataVersion)."""

ZERO_UUID = UUID(int=0)
"""Kafka's ``Uuid.ZERO_UUID``: no id (an unassigned directory, a topic known only by name)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class MetadataRecord(_Model):
    """Base of every record type; ``api_key`` and ``version`` identify the schema."""

    api_key: ClassVar[int]
    version: ClassVar[int]

    @classmethod
    def type_name(cls) -> str:
        """The record type's name (the class name, as Kafka names it)."""
        return cls.__name__
