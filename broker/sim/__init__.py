"""The simulated broker: synthetic controller workload and the ``broker-sim`` CLI."""

from broker.sim._cli import main
from broker.sim._simulation import (
    Progress,
    Simulation,
    SimulationConfig,
    SimulationSummary,
    image_fingerprint,
)
from broker.sim._workload import (
    FAILOVER_KV_KEY,
    EventKind,
    SyntheticController,
    WorkloadConfig,
    decode_stream_id,
    encode_stream_id,
    meta_stream_key,
)

__all__ = [
    "FAILOVER_KV_KEY",
    "EventKind",
    "Progress",
    "Simulation",
    "SimulationConfig",
    "SimulationSummary",
    "SyntheticController",
    "WorkloadConfig",
    "decode_stream_id",
    "encode_stream_id",
    "image_fingerprint",
    "main",
    "meta_stream_key",
]
