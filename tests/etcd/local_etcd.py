"""A throwaway single-member etcd server for tests and benchmarks (not library API)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from broker.errors import BrokerError, ConfigurationError

__all__ = ["LocalEtcd"]


class LocalEtcd:
    """A throwaway single-member etcd on loopback, from the ``etcd`` binary.

    For tests, benchmarks and demos (``.ci/run`` installs Debian's etcd-server). It can
    be stopped and started again on the same data directory to simulate an outage.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, binary: str | None = None) -> None:
        found = binary or shutil.which("etcd")
        if found is None:
            raise ConfigurationError("etcd is not installed (Debian package etcd-server)")
        self.binary = found
        self.data_dir = Path(data_dir)
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}/broker/metadata/"

    def start(self, timeout: float = 20.0) -> None:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = subprocess.Popen(
            [
                self.binary,
                "--name=local",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=local={peer}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise BrokerError(
                        f"etcd exited with status {self.process.returncode}"
                    ) from None
                time.sleep(0.05)  # an external process is starting: nothing to wait on but its port
        raise BrokerError(f"etcd did not listen on port {self.client_port} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
