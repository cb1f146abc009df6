"""The simulated broker: a synthetic controller, the whole pipeline, and ``broker-sim``.

:class:`SyntheticController` writes deterministic churn from a seed, valid against its
own :class:`ClusterModel`; :class:`Simulation` runs the pipeline, the cache and its
readers under that churn; :func:`main` is the ``broker-sim`` command.
"""

from broker.sim._cli import main
from broker.sim._controller import SyntheticController
from broker.sim._events import EVENT_WEIGHTS, ChurnEvents, EventKind
from broker.sim._model import ClusterModel, FailoverStep, WorkloadConfig
from broker.sim._simulation import (
    FinalImage,
    Progress,
    Simulation,
    SimulationConfig,
    SimulationSummary,
    image_fingerprint,
)

__all__ = [
    "EVENT_WEIGHTS",
    "ChurnEvents",
    "ClusterModel",
    "EventKind",
    "FailoverStep",
    "FinalImage",
    "Progress",
    "Simulation",
    "SimulationConfig",
    "SimulationSummary",
    "SyntheticController",
    "WorkloadConfig",
    "image_fingerprint",
    "main",
]
