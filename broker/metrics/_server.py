"""The ``/metrics`` HTTP endpoint, prometheus_client's server, owned by a context manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from prometheus_client import start_http_server
from prometheus_client.registry import REGISTRY, CollectorRegistry

from broker.errors import ListenError

__all__ = ["serve_metrics"]


@asynccontextmanager
async def serve_metrics(
    host: str = "127.0.0.1", port: int = 0, registry: CollectorRegistry = REGISTRY
) -> AsyncIterator[tuple[str, int]]:
    """Serve ``registry`` at ``http://host:port/metrics`` until the block ends; yields the
    bound (host, port) (port 0: one of the system's choosing).

    prometheus_client serves from a thread of its own; leaving the block shuts it down
    and joins it (in a worker thread: its shutdown polls for up to half a second), so
    nothing outlives the block.
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise ListenError(host, port, error.strerror or str(error), error.errno) from error

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    try:
        yield host, int(server.server_port)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(stop)
