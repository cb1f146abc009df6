"""Several broker-sim processes on one etcd follow the same log to the same image."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.etcd.conftest import EtcdServer

pytestmark = pytest.mark.integration


SMALL = ["--topics", "4", "--partitions-per-topic", "2", "--clients", "2", "--no-live"]


def sim(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "broker.sim", *SMALL, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(*processes: subprocess.Popen[str]) -> None:
    """Wait for every process and assert each ended well; none is left running when
    one failed (its failure is the one reported, not a stray process's warning)."""
    try:
        for process in processes:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


def test_broker_sims_on_one_etcd_converge(etcd: EtcdServer, tmp_path: Path) -> None:
    followers = [
        sim(
            "--etcd",
            etcd.url,
            "--follow",
            "--duration",
            "12",
            "--json",
            str(tmp_path / f"f{i}.json"),
        )
        for i in range(2)
    ]
    writer = sim(
        "--etcd", etcd.url, "--events", "300", "--rate", "0", "--json", str(tmp_path / "w.json")
    )
    finish(writer, *followers)
    written = json.loads((tmp_path / "w.json").read_text())
    assert written["role"] == "writer"
    assert written["events"] == 300
    for index in range(2):
        followed = json.loads((tmp_path / f"f{index}.json").read_text())
        assert followed["role"] == "follower"
        assert followed["healthy"] is True
        assert followed["final_offset"] == written["final_offset"]
        assert followed["image_sha256"] == written["image_sha256"]


def test_a_second_writer_fences_the_first(etcd: EtcdServer, tmp_path: Path) -> None:
    first = sim(
        "--etcd", etcd.url, "--duration", "6", "--rate", "100", "--json", str(tmp_path / "a.json")
    )
    second = sim(
        "--etcd", etcd.url, "--duration", "3", "--rate", "100", "--json", str(tmp_path / "b.json")
    )
    finish(first, second)
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    # Whoever claimed last wrote on; the other was fenced and followed. The log never forked.
    assert {a["role"], b["role"]} == {"writer", "follower"}
    assert a["replay_errors"] == b["replay_errors"] == 0
