"""A private etcd server per test (``LocalEtcd``, from the Debian package's binary).

``.ci/run`` installs ``etcd-server``; without the binary these tests skip and say why.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd.local_etcd import LocalEtcd

EtcdServer = LocalEtcd


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian package etcd-server; .ci/run installs it)")
    with LocalEtcd(tmp_path / "etcd") as server:
        yield server
