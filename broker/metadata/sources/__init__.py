"""Where record batches come from: in memory, a file log with snapshots, or etcd.

:class:`RecordSource` is what the loader reads; :class:`RecordLog` is a source that can
also be written. The etcd log loads its client (aetcd, grpc) only when first used.
"""

from __future__ import annotations

import typing

from broker._lazy import lazy_exports as _lazy_exports
from broker.metadata.sources._etcd_url import parse_etcd_url
from broker.metadata.sources._file_log import FileRecordLog, FsyncPolicy, RecoveryReport
from broker.metadata.sources._memory import InMemoryRecordSource
from broker.metadata.sources._source import (
    RecordLog,
    RecordSource,
    Snapshot,
    SnapshotEncoder,
    SnapshotInfo,
    encode_snapshot,
    encoded_records,
    event_loop_turn,
)

if typing.TYPE_CHECKING:
    from broker.metadata.sources._etcd import EtcdLogStatistics, EtcdRecordLog

__all__ = [
    "EtcdLogStatistics",
    "EtcdRecordLog",
    "FileRecordLog",
    "FsyncPolicy",
    "InMemoryRecordSource",
    "RecordLog",
    "RecordSource",
    "RecoveryReport",
    "Snapshot",
    "SnapshotEncoder",
    "SnapshotInfo",
    "encode_snapshot",
    "encoded_records",
    "event_loop_turn",
    "parse_etcd_url",
]

# The etcd client pulls in grpc (about 0.5 s and 20 MB): it loads on first use only.
__getattr__, __dir__ = _lazy_exports(
    __name__,
    {"EtcdLogStatistics": f"{__name__}._etcd", "EtcdRecordLog": f"{__name__}._etcd"},
    __all__,
)
