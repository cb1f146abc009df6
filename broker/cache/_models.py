"""METADATA request and response, shaped like Kafka's Metadata API (versions 0-13).

Fields every version shares are always present here; the wire layer writes the ones
a version has. What differs in *meaning* between versions is applied by the cache:

* v0: an empty topic list means all topics; unavailable replicas are filtered out of
  replicas/ISR and reported as REPLICA_NOT_AVAILABLE.
* v1+: ``topics=None`` means all topics, an empty list none.
* v6+: a leader without the request's listener is LISTENER_NOT_FOUND (else
  LEADER_NOT_AVAILABLE).
* v12+: topics may be named by id only (names are nullable from v12, as in Kafka's
  MetadataRequest builder; v10-11 carry ids but look topics up by name).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.metadata import Provenance
from broker.metadata.records import NO_LEADER, ZERO_UUID

__all__ = [
    "AUTHORIZED_OPERATIONS_OMITTED",
    "INTERNAL_TOPICS",
    "MAX_METADATA_VERSION",
    "BrokerMetadata",
    "ErrorCode",
    "MetadataRequest",
    "MetadataResponse",
    "PartitionMetadata",
    "RequestTopic",
    "TopicMetadata",
]

MAX_METADATA_VERSION = 13
"""The newest Metadata API version answered."""
AUTHORIZED_OPERATIONS_OMITTED = -(2**31)
"""Kafka's value for authorized operations that were not asked for (no authorizer here)."""
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
"""Topics Kafka marks ``is_internal`` in METADATA answers."""


class ErrorCode(enum.IntEnum):
    """Kafka protocol error codes the cache answers with."""

    NONE = 0
    UNKNOWN_TOPIC_OR_PARTITION = 3
    LEADER_NOT_AVAILABLE = 5
    REPLICA_NOT_AVAILABLE = 9
    INVALID_TOPIC_EXCEPTION = 17
    UNSUPPORTED_VERSION = 35
    INVALID_REQUEST = 42
    LISTENER_NOT_FOUND = 72
    UNKNOWN_TOPIC_ID = 100


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RequestTopic(_Model):
    """One topic a METADATA request asks for, by name or (v12+) by id."""

    name: str | None = None
    topic_id: UUID | None = None
    """v12+: a topic may be named by id instead of name."""

    @model_validator(mode="after")
    def _named(self) -> RequestTopic:
        if self.name is None and (self.topic_id is None or self.topic_id == ZERO_UUID):
            raise ValueError("a requested topic needs a name or a topic id")
        return self


class MetadataRequest(_Model):
    """A METADATA request, validated (the wire decodes into this)."""

    version: int = Field(default=MAX_METADATA_VERSION, ge=0, le=MAX_METADATA_VERSION)
    topics: tuple[RequestTopic, ...] | None = None
    """None: all topics (v1+). Empty: none (v1+), all (v0)."""
    allow_auto_topic_creation: bool = True
    """Ignored: this broker never creates topics on METADATA."""
    include_cluster_authorized_operations: bool = False
    """Ignored (no authorizer): answered with the 'omitted' value."""
    include_topic_authorized_operations: bool = False
    """Ignored (no authorizer): answered with the 'omitted' value."""

    @model_validator(mode="after")
    def _ids_need_v12(self) -> MetadataRequest:
        if self.version < 12 and any(t.name is None for t in self.topics or ()):
            raise ValueError(
                f"topics named only by id need version 12 or later, not {self.version}"
            )
        return self

    @classmethod
    def for_topics(cls, *names: str, version: int = MAX_METADATA_VERSION) -> MetadataRequest:
        """A request for the topics called ``names``."""
        return cls(version=version, topics=tuple(RequestTopic(name=n) for n in names))

    @property
    def wants_all_topics(self) -> bool:
        """Whether the request asks for every topic (null list; an empty one in v0)."""
        if self.topics is None:
            return True
        return self.version == 0 and not self.topics


@dataclass(frozen=True, slots=True)
class BrokerMetadata:
    """A live broker as METADATA lists it: id and the address of the listener asked about."""

    node_id: int
    host: str
    port: int
    rack: str | None = None


class PartitionMetadata(NamedTuple):
    """One partition's answer: its leader (or why there is none), replicas and ISR.

    A NamedTuple: a cold answer builds one per partition, and unchanged partitions keep
    theirs from image to image (their encoded bytes are reused by identity).
    """

    partition_index: int
    error_code: ErrorCode = ErrorCode.NONE
    leader_id: int = NO_LEADER
    leader_epoch: int = -1
    replica_nodes: tuple[int, ...] = ()
    isr_nodes: tuple[int, ...] = ()
    offline_replicas: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    """One topic's answer: its error code, id and partitions."""

    name: str | None
    error_code: ErrorCode = ErrorCode.NONE
    topic_id: UUID = ZERO_UUID
    is_internal: bool = False
    partitions: tuple[PartitionMetadata, ...] = ()
    topic_authorized_operations: int = AUTHORIZED_OPERATIONS_OMITTED


@dataclass(frozen=True, slots=True)
class MetadataResponse:
    """One METADATA answer, entirely from the image at ``provenance``."""

    version: int
    provenance: Provenance
    """The image this answer was computed from (not on the wire)."""
    throttle_time_ms: int = 0
    brokers: tuple[BrokerMetadata, ...] = ()
    cluster_id: str | None = None
    controller_id: int = NO_LEADER
    topics: tuple[TopicMetadata, ...] = ()
    cluster_authorized_operations: int = AUTHORIZED_OPERATIONS_OMITTED

    def topic(self, name: str) -> TopicMetadata:
        """The answer for topic ``name``; KeyError if the response has none."""
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(name)
