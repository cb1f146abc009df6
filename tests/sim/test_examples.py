"""Every example runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broker.sim import main

pytestmark = pytest.mark.integration


EXAMPLES = Path(__file__).parents[2] / "examples"


def run_example(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quickstart() -> None:
    out = run_example("quickstart.py")
    assert out.splitlines() == ["topics: ['orders']", "{'orders': [1]}"]


def test_embed_pipeline() -> None:
    out = run_example("embed_pipeline.py")
    assert "answered from offset" in out
    assert "brokers:" in out


def test_custom_consumer() -> None:
    out = run_example("custom_consumer.py")
    assert "topic created" in out
    assert "broker 1: became leader" in out


def test_metadata_shell(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    assert main(["--log-dir", str(log_dir), "--events", "120", "--topics", "3", "--no-live"]) == 0
    brokers = run_example("metadata_shell.py", str(log_dir), "brokers")
    assert brokers.startswith("# image at offset")
    assert "broker 1 epoch=" in brokers
    partitions = run_example("metadata_shell.py", str(log_dir), "partitions", "--offset", "50")
    assert partitions.startswith("# image at offset 50,")
    assert "topic-00001-0 leader=" in partitions
    assert "stream " in run_example("metadata_shell.py", str(log_dir), "streams")
    assert "topic-00001" in run_example("metadata_shell.py", str(log_dir), "topics")
