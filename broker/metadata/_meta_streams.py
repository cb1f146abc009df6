"""AutoMQ's layout in the KV map: which stream holds a partition, and the failover plan.

A partition's data lives in its *meta stream*. The stream's id is stored in the KV map
under ``_kafka_<cluster-id>/<topic-id>/<partition>`` as an 8-byte big-endian integer.
The controller writes these keys and the failover check reads them: this module is the
one place that knows the layout.
"""

from __future__ import annotations

from functools import lru_cache
from uuid import UUID

__all__ = [
    "FAILOVER_KV_KEY",
    "decode_stream_id",
    "encode_stream_id",
    "meta_stream_key",
    "meta_stream_prefix",
    "parse_meta_stream_key",
]

FAILOVER_KV_KEY = "__a.failover"
"""KV key of the in-flight failover plan (JSON), as AutoMQ's controller stores it."""


def meta_stream_prefix(cluster_id: str) -> str:
    """The KV key prefix under which ``cluster_id`` stores its partitions' meta streams."""
    return f"_kafka_{cluster_id}/"


def meta_stream_key(cluster_id: str, topic_id: UUID, partition: int) -> str:
    """KV key holding the meta stream id of one partition."""
    return f"{meta_stream_prefix(cluster_id)}{topic_id}/{partition}"


def parse_meta_stream_key(prefix: str, key: str) -> tuple[UUID, int] | None:
    """``(topic id, partition)`` of a meta stream key under ``prefix``; None for other keys."""
    if not key.startswith(prefix):
        return None
    topic, _, partition = key[len(prefix) :].partition("/")
    try:
        return _topic_id(topic), int(partition)
    except ValueError:
        return None


@lru_cache(maxsize=1 << 16)
def _topic_id(text: str) -> UUID:
    # A topic's partitions share its id: parsing each key's copy anew costs 10 us apiece.
    return UUID(text)


def encode_stream_id(stream_id: int) -> bytes:
    """The KV value of a meta stream entry: the stream id as 8 bytes, big endian."""
    return stream_id.to_bytes(8, "big", signed=True)


def decode_stream_id(value: bytes) -> int | None:
    """Inverse of :func:`encode_stream_id`; None for a value of another size."""
    return int.from_bytes(value, "big", signed=True) if len(value) == 8 else None
