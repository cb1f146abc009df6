"""Prometheus metrics: the pipeline's, the images' lifetime, and the Kafka listeners'.

Needs the ``[metrics]`` extra (prometheus_client). An embedding application registers
one collector and serves its registry as it already does::

    from broker.metrics import register_metrics
    register_metrics(pipeline=pipeline, cache=cache, listeners=[listener])

``broker-sim --metrics HOST:PORT`` does the same and serves ``/metrics`` with
:func:`serve_metrics`.
"""

from broker.metrics._collector import MetricsCollector, register_metrics
from broker.metrics._server import serve_metrics

__all__ = ["MetricsCollector", "register_metrics", "serve_metrics"]
