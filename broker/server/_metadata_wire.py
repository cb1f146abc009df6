"""Metadata responses assembled from encoded fragments, not re-encoded per request.

A Metadata response body is a prefix (throttle time, the broker list, cluster id,
controller id), the topics array and a tail. Each topic's entry is encoded once per
image and Metadata version and reused by every request that asks for it; the next image
keeps the entries of every topic whose answer object it kept (identity), and a topic
that changed reuses the encoded bytes of its unchanged partitions. A response is the
concatenation of those pieces.

Fields are written with ``struct`` in the layout Kafka's ``MetadataResponse.json``
gives each version (flexible versions 9+ with compact arrays, compact strings and
tagged fields); tests check every version byte for byte against kio's encoder.
"""

from __future__ import annotations

import math
import random
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple
from uuid import UUID

from immutables import Map

from broker.cache import (
    AUTHORIZED_OPERATIONS_OMITTED,
    AnswerSettings,
    BrokerMetadata,
    ImageAnswers,
    MetadataRequest,
    MetadataResponse,
    PartitionMetadata,
    TopicMetadata,
    answers_key,
)
from broker.metadata import DerivedKey, MetadataDelta, MetadataImage

__all__ = ["MetadataFormat", "WireMetadata", "metadata_format", "wire_metadata_key"]

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I16_I32_I32 = struct.Struct(">hii")
_TAGS = b"\x00"  # an empty tagged-field section (flexible versions)


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class MetadataFormat:
    """How one version of the Metadata response lays out its fields."""

    __slots__ = (
        "_int32s",
        "flexible",
        "has_authorized_operations",
        "has_cluster_authorized_operations",
        "has_cluster_id",
        "has_controller",
        "has_is_internal",
        "has_leader_epoch",
        "has_offline_replicas",
        "has_rack",
        "has_throttle",
        "has_top_error",
        "has_topic_id",
        "tail",
        "version",
    )

    def __init__(self, version: int) -> None:
        self.version = version
        self.flexible = version >= 9
        self.has_rack = self.has_controller = self.has_is_internal = version >= 1
        self.has_cluster_id = version >= 2
        self.has_throttle = version >= 3
        self.has_offline_replicas = version >= 5
        self.has_leader_epoch = version >= 7
        self.has_authorized_operations = version >= 8
        self.has_cluster_authorized_operations = 8 <= version <= 10
        self.has_topic_id = version >= 10
        self.has_top_error = version >= 13
        self._int32s: dict[int, struct.Struct] = {}
        tail = b""
        if self.has_cluster_authorized_operations:
            tail += _I32.pack(AUTHORIZED_OPERATIONS_OMITTED)
        if self.has_top_error:
            tail += _I16.pack(0)
        self.tail = tail + _TAGS if self.flexible else tail
        """What follows the topics array."""

    # primitives ------------------------------------------------------------------------

    def array_length(self, count: int) -> bytes:
        """The length prefix of an array of ``count`` elements."""
        return _uvarint(count + 1) if self.flexible else _I32.pack(count)

    def _string(self, text: str | None) -> bytes:
        if text is None:
            return b"\x00" if self.flexible else _I16.pack(-1)
        data = text.encode()
        return (_uvarint(len(data) + 1) if self.flexible else _I16.pack(len(data))) + data

    def _int32_array(self, values: Sequence[int]) -> bytes:
        count = len(values)
        packer = self._int32s.get(count)
        if packer is None:
            packer = self._int32s[count] = struct.Struct(f">{count}i")
        return self.array_length(count) + packer.pack(*values)

    # fragments -------------------------------------------------------------------------

    def partition(self, partition: PartitionMetadata) -> bytes:
        """One partition entry."""
        head = _I16_I32_I32.pack(
            partition.error_code, partition.partition_index, partition.leader_id
        )
        if self.has_leader_epoch:
            head += _I32.pack(partition.leader_epoch)
        entry = head + self._int32_array(partition.replica_nodes)
        entry += self._int32_array(partition.isr_nodes)
        if self.has_offline_replicas:
            entry += self._int32_array(partition.offline_replicas)
        return entry + _TAGS if self.flexible else entry

    def topic(self, topic: TopicMetadata, partitions: Sequence[bytes]) -> bytes:
        """One topic entry around its already encoded partition entries."""
        parts = [_I16.pack(topic.error_code), self._string(topic.name)]
        if self.has_topic_id:
            parts.append(topic.topic_id.bytes)
        if self.has_is_internal:
            parts.append(b"\x01" if topic.is_internal else b"\x00")
        parts.append(self.array_length(len(partitions)))
        parts.extend(partitions)
        if self.has_authorized_operations:
            parts.append(_I32.pack(topic.topic_authorized_operations))
        if self.flexible:
            parts.append(_TAGS)
        return b"".join(parts)

    def brokers(self, brokers: Sequence[BrokerMetadata]) -> bytes:
        """The broker list, with its length prefix."""
        parts = [self.array_length(len(brokers))]
        for broker in brokers:
            parts += [_I32.pack(broker.node_id), self._string(broker.host), _I32.pack(broker.port)]
            if self.has_rack:
                parts.append(self._string(broker.rack))
            if self.flexible:
                parts.append(_TAGS)
        return b"".join(parts)

    def body(self, response: MetadataResponse) -> bytes:
        """A whole response body encoded from scratch (what the cached fragments add up to)."""
        topics = [self.topic(t, [self.partition(p) for p in t.partitions]) for t in response.topics]
        prefix = self.prefix(
            self.brokers(response.brokers), response.cluster_id, response.controller_id
        )
        return prefix + self.array_length(len(topics)) + b"".join(topics) + self.tail

    def prefix(self, brokers: bytes, cluster_id: str | None, controller_id: int) -> bytes:
        """Everything before the topics array."""
        parts = [_I32.pack(0)] if self.has_throttle else []
        parts.append(brokers)
        if self.has_cluster_id:
            parts.append(self._string(cluster_id))
        if self.has_controller:
            parts.append(_I32.pack(controller_id))
        return b"".join(parts)


_FORMATS = tuple(MetadataFormat(version) for version in range(14))


def metadata_format(version: int) -> MetadataFormat:
    """The layout of Metadata response ``version`` (0-13)."""
    return _FORMATS[version]


class _EncodedTopic(NamedTuple):
    metadata: TopicMetadata
    """The answer these bytes encode (they are valid while it is the answer)."""
    partitions: tuple[bytes, ...]
    entry: bytes


_NO_TOPICS: Map[UUID, _EncodedTopic] = Map()


class _AllTopics(NamedTuple):
    """The topic entries of an all-topics answer, in its order, and which of them later
    images' answers may have changed (the rest are valid as they are)."""

    order: tuple[UUID, ...]
    entries: tuple[bytes, ...]
    positions: dict[UUID, int]
    """Index of each topic id in ``order`` (shared by every image with this order)."""
    dirty: frozenset[UUID]


_DIRTY_FRACTION = 0.5
"""Carried entries are dropped once more than this fraction of the topics is dirty."""


class WireMetadata:
    """One image's encoded Metadata fragments, per version, for one set of settings.

    :meth:`following` hands the next image every fragment (validated on use by the
    identity of the answer it encodes), and the all-topics entries with the topics whose
    answers changed since: the next all-topics answer re-encodes those and joins.
    """

    __slots__ = ("_all_topics", "_brokers", "_lists", "_lock", "_topics")

    def __init__(
        self,
        topics: dict[int, Map[UUID, _EncodedTopic]] | None = None,
        brokers: dict[int, tuple[tuple[BrokerMetadata, ...], bytes]] | None = None,
        lists: dict[int, _AllTopics] | None = None,
    ) -> None:
        self._topics = topics if topics is not None else {}
        self._brokers = brokers if brokers is not None else {}
        self._lists = lists if lists is not None else {}
        """All-topics entries by version: this image's, or carried from a previous one."""
        self._all_topics: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def following(
        self, delta: MetadataDelta, image: MetadataImage, answers: ImageAnswers
    ) -> WireMetadata:
        """The next image's fragments (``answers`` are its answers): all of these,
        checked on use, and the all-topics entries marked with what changed."""
        lists = {}
        for version, listed in self._lists.items():
            changed = answers.changed_topics(version)
            if changed is None:
                continue
            if changed:
                dirty = listed.dirty | changed
                if len(dirty) > len(listed.order) * _DIRTY_FRACTION:
                    continue
                listed = listed._replace(dirty=dirty)
            lists[version] = listed
        return WireMetadata(dict(self._topics), dict(self._brokers), lists)

    def topic_entry(self, fmt: MetadataFormat, topic: TopicMetadata) -> bytes:
        """The encoded entry of ``topic`` (an answer of this image) for ``fmt``."""
        encoded = self._topics.get(fmt.version, _NO_TOPICS)
        found = encoded.get(topic.topic_id)
        if found is not None and found.metadata is topic:
            return found.entry
        old, old_parts = (found.metadata.partitions, found.partitions) if found else ((), ())
        parts = tuple(
            old_parts[i] if i < len(old) and old[i] is partition else fmt.partition(partition)
            for i, partition in enumerate(topic.partitions)
        )
        entry = fmt.topic(topic, parts)
        with self._lock:  # two requests may add topics of the same version at once
            current = self._topics.get(fmt.version, _NO_TOPICS)
            self._topics[fmt.version] = current.set(
                topic.topic_id, _EncodedTopic(topic, parts, entry)
            )
        return entry

    def brokers(self, fmt: MetadataFormat, listed: tuple[BrokerMetadata, ...]) -> bytes:
        """The encoded broker list ``listed`` for ``fmt``."""
        found = self._brokers.get(fmt.version)
        if found is not None and found[0] is listed:
            return found[1]
        encoded = fmt.brokers(listed)
        self._brokers[fmt.version] = (listed, encoded)
        return encoded

    def prepare_all_topics(
        self, image: MetadataImage, answers: ImageAnswers, version: int, slice_seconds: float
    ) -> Iterator[None]:
        """Build the all-topics answer's topics array for ``version``, pausing (one
        ``yield``) whenever ``slice_seconds`` of work went by: after a delta that touched
        many topics, or a broker every answer names, a server answers the next all-topics
        request between turns of its event loop instead of in one long one.

        Entries carried from a previous image are reused unless their topic's answer
        changed since: after a small delta this re-encodes a few topics and joins.
        """
        if version in self._all_topics:
            return
        fmt = _FORMATS[version]
        order = answers.order(image)
        listed = self._lists.get(version)
        entries: list[bytes]
        if listed is None:
            positions = {topic_id: i for i, topic_id in enumerate(order)}
            entries, todo = [b""] * len(order), list(enumerate(order))
        elif listed.order is order:  # the same topics (no create, delete or rename since)
            positions, entries = listed.positions, list(listed.entries)
            todo = [(positions[t], t) for t in listed.dirty if t in positions]
        else:
            positions = {topic_id: i for i, topic_id in enumerate(order)}
            entries, todo = [b""] * len(order), []
            old_positions, old_entries, dirty = listed.positions, listed.entries, listed.dirty
            for i, topic_id in enumerate(order):
                j = old_positions.get(topic_id)
                if j is None or topic_id in dirty:
                    todo.append((i, topic_id))
                else:
                    entries[i] = old_entries[j]
        by_id = image.topics.by_id
        slice_started = time.perf_counter()
        for i, topic_id in todo:
            entries[i] = self.topic_entry(fmt, answers.topic(version, by_id[topic_id]))
            if time.perf_counter() - slice_started >= slice_seconds:
                yield
                slice_started = time.perf_counter()
        self._lists[version] = _AllTopics(order, tuple(entries), positions, frozenset())
        self._all_topics[version] = fmt.array_length(len(order)) + b"".join(entries)

    def body(
        self,
        image: MetadataImage,
        answers: ImageAnswers,
        request: MetadataRequest,
        rng: random.Random | None = None,
    ) -> bytes:
        """The encoded Metadata response body for ``request`` (``request.version``)."""
        return b"".join(self.body_parts(image, answers, request, rng))

    def body_parts(
        self,
        image: MetadataImage,
        answers: ImageAnswers,
        request: MetadataRequest,
        rng: random.Random | None = None,
    ) -> tuple[bytes, bytes, bytes]:
        """:meth:`body` in parts, for a server to send as they are: an all-topics answer's
        topics array is the one kept for the image, not a copy (megabytes at 100k
        partitions)."""
        version = request.version
        fmt = _FORMATS[version]
        if request.wants_all_topics:
            topics = self._all_topics.get(version)
            if topics is None:
                for _ in self.prepare_all_topics(image, answers, version, math.inf):
                    pass
                topics = self._all_topics[version]
        else:
            wanted = answers.topics(image, request)
            topics = fmt.array_length(len(wanted)) + b"".join(
                # Errors (unknown topics) are answers of this request only: not kept.
                self.topic_entry(fmt, t) if t.error_code == 0 else fmt.topic(t, ())
                for t in wanted
            )
        cluster_id = answers.settings.cluster_id if version >= 2 else None
        brokers = self.brokers(fmt, answers.views.listed)
        prefix = fmt.prefix(brokers, cluster_id, answers.controller_id(rng))
        return prefix, topics, fmt.tail


_wire_keys: dict[AnswerSettings, DerivedKey[WireMetadata]] = {}
_wire_keys_lock = threading.Lock()


def wire_metadata_key(settings: AnswerSettings) -> DerivedKey[WireMetadata]:
    """The derived-state key of the encoded fragments for ``settings`` (one per settings)."""
    with _wire_keys_lock:
        key = _wire_keys.get(settings)
        if key is None:
            key = _wire_keys[settings] = DerivedKey(
                f"wire-metadata:{settings.cluster_id}:{settings.listener}",
                lambda image: WireMetadata(),
                lambda wire, delta, image: wire.following(
                    delta, image, image.derived(answers_key(settings))
                ),
            )
        return key
