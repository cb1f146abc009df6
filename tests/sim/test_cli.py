"""broker-sim end to end: smoke run, determinism, restart, bad options."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import broker
from broker.metadata.records import iter_batches
from broker.sim import _cli as sim_cli
from broker.sim import main

SMALL = ["--topics", "6", "--partitions-per-topic", "3", "--no-live", "--clients", "8"]


def run(tmp_path: Path, *argv: str, name: str = "summary") -> tuple[int, dict[str, Any]]:
    out = tmp_path / f"{name}.json"
    code = main([*SMALL, "--json", str(out), *argv])
    return code, json.loads(out.read_text())


def test_smoke_run_reports_sane_counts_and_no_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary = run(tmp_path, "--duration", "2")
    assert code == 0
    assert summary["healthy"] is True
    assert summary["events"] > 100
    assert summary["images"] > 0
    assert summary["records"] == summary["final_offset"] + 1  # every record reached an image
    assert summary["metadata_requests"] > 100
    assert summary["failover_checks"] > 0
    assert summary["brokers"] == 6
    assert summary["partitions"] == summary["streams"] > 0
    assert summary["latency_p99_ms"] >= summary["latency_p50_ms"] > 0
    for counter in (
        "refcount_errors",
        "released_reads",
        "leaks",
        "consumer_faults",
        "replay_errors",
    ):
        assert summary[counter] == 0, counter
    assert summary["live_images_at_end"] == 0
    printed = capsys.readouterr().out
    assert "broker-sim summary" in printed
    assert "clean" in printed


def test_same_seed_gives_the_same_final_image(tmp_path: Path) -> None:
    first = run(tmp_path, "--events", "300", "--seed", "5", name="a")[1]
    second = run(tmp_path, "--events", "300", "--seed", "5", name="b")[1]
    other = run(tmp_path, "--events", "300", "--seed", "6", name="c")[1]
    assert first["image_sha256"] == second["image_sha256"]
    assert first["final_offset"] == second["final_offset"]
    assert other["image_sha256"] != first["image_sha256"]


def test_restart_from_log_dir_reaches_the_same_image_and_goes_on(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    common = ["--log-dir", str(log_dir), "--snapshot-every", "400", "--seed", "9"]
    code, before = run(tmp_path, *common, "--events", "300", name="before")
    assert code == 0
    assert before["snapshots"] >= 1
    code, reopened = run(tmp_path, *common, "--events", "0", name="reopened")
    assert code == 0
    assert reopened["resumed_from_offset"] == before["final_offset"]
    assert reopened["image_sha256"] == before["image_sha256"]
    code, after = run(tmp_path, *common, "--events", "200", name="after")
    assert code == 0
    assert after["final_offset"] > before["final_offset"]
    assert after["replay_errors"] == 0


@pytest.mark.parametrize("frames_kept", [1, 2, 3])
def test_a_log_cut_inside_the_bootstrap_resumes_cleanly(tmp_path: Path, frames_kept: int) -> None:
    # A crash between bootstrap batches: the log ends part-way through topic creation,
    # with no snapshot to fall back on.
    log_dir = tmp_path / "log"
    argv = ["--log-dir", str(log_dir), "--topics", "100", "--partitions-per-topic", "20"]
    code, _ = main_json(tmp_path, [*argv, "--events", "10", "--no-live"], name="first")
    assert code == 0
    (segment,) = sorted((log_dir / "segments").glob("*.log"))
    data = segment.read_bytes()
    positions = [position for position, _ in iter_batches(data)]
    segment.write_bytes(data[: positions[frames_kept]])
    for snapshot in (log_dir / "snapshots").glob("*"):
        snapshot.unlink()
    code, resumed = main_json(tmp_path, [*argv, "--events", "50", "--no-live"], name="resumed")
    assert code == 0
    assert resumed["replay_errors"] == 0
    assert resumed["healthy"] is True


def main_json(tmp_path: Path, argv: list[str], *, name: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / f"{name}.json"
    code = main([*argv, "--json", str(out)])
    return code, json.loads(out.read_text())


def test_a_timed_durable_run_reports_the_end_of_its_log(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    code, summary = run(
        tmp_path, "--log-dir", str(log_dir), "--fsync", "always", "--duration", "2", "--rate", "0"
    )
    assert code == 0
    # Unthrottled churn stops mid-append at the deadline; the summary describes the
    # image at the end of what the log holds, and says where that is.
    assert summary["final_offset"] == summary["log_end_offset"] > 0
    code, reopened = run(tmp_path, "--log-dir", str(log_dir), "--events", "0", name="reopened")
    assert code == 0
    assert reopened["resumed_from_offset"] == summary["log_end_offset"]
    assert reopened["image_sha256"] == summary["image_sha256"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--brokers", "2", "--replication-factor", "3"],
            "replication_factor (3) exceeds brokers (2)",
        ),
        (["--duration", "-1"], "--duration: Input should be greater than 0"),
        (["--topics", "many"], "argument --topics: invalid int value: 'many'"),
        (["--leak-detection", "loud"], "argument --leak-detection: invalid choice: 'loud'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("broker-sim: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_partitions_sets_the_topic_count(tmp_path: Path) -> None:
    code, summary = run(
        tmp_path, "--partitions", "25", "--partitions-per-topic", "3", "--events", "0"
    )
    assert code == 0
    assert summary["topics"] == 9  # 25 / 3, rounded up
    assert summary["partitions"] == 27


def test_version_and_help_list_the_version_exit_codes_and_every_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0
    assert capsys.readouterr().out.strip() == f"broker-sim {broker.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "exit status:" in text
    assert "  2    bad options" in text
    options = text[text.index("options:") :]
    for option in ("--fsync", "--seed", "--brokers", "--max-records-per-image", "--log-level"):
        block = options[options.index(f"  {option}") :].split("\n  -", 1)[0]
        assert "(default:" in block, option


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing-dir/summary.json", "does not exist"),
        (".", "is a directory"),
    ],
)
def test_an_unusable_json_path_exits_2_before_the_run(
    where: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / where
    assert main([*SMALL, "--duration", "60", "--json", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"broker-sim: error: --json {path}")
    assert message in err
    assert "summary" not in capsys.readouterr().out


def test_an_interrupt_before_the_run_starts_still_ends_with_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ctrl-C while the options are parsed: the run starts interrupted and summarises.
    original = sim_cli._check_json_path

    def check_then_interrupt(path: str | None) -> None:
        original(path)
        signal.raise_signal(signal.SIGINT)

    out = tmp_path / "summary.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sim_cli, "_check_json_path", check_then_interrupt)
        code = main([*SMALL, "--duration", "60", "--json", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["interrupted"] is True
    assert summary["seconds"] < 30
    assert "broker-sim summary" in capsys.readouterr().out


@pytest.mark.integration
def test_a_corrupt_log_dir_exits_2_without_a_traceback(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    assert run(tmp_path, "--log-dir", str(log_dir), "--events", "50")[0] == 0
    (segment,) = sorted((log_dir / "segments").glob("*.log"))
    data = bytearray(segment.read_bytes())
    data[40] ^= 0xFF  # inside the first frame, with valid frames after it
    segment.write_bytes(bytes(data))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "broker.sim",
            "--log-dir",
            str(log_dir),
            "--events",
            "1",
            "--no-live",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("broker-sim: error: corrupt record batch: CRC32C mismatch")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_the_module_and_the_console_script_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker.sim", *SMALL, "--events", "20", "--json", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is the JSON alone; the table is on stderr
    assert summary["events"] == 20
    assert summary["healthy"] is True
    assert "broker-sim summary" in result.stderr


@pytest.mark.integration
async def test_listen_serves_real_clients_the_simulated_cluster() -> None:
    import socket

    import anyio
    from aiokafka.client import AIOKafkaClient

    from broker.sim import Simulation, SimulationConfig, WorkloadConfig

    with socket.socket() as probe:  # a free port for the listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = SimulationConfig(
        workload=WorkloadConfig(topics=4, partitions_per_topic=2),
        duration=None,
        events=400,
        rate=200,
        clients=2,
        listen=("127.0.0.1", port),
    )
    seen: dict[str, object] = {}

    async def client() -> None:
        while True:
            kafka = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{port}")
            try:
                await kafka.bootstrap()
                metadata = await kafka.fetch_all_metadata()
                if metadata.topics():
                    seen["topics"] = metadata.topics()
                    seen["brokers"] = {(b.host, b.port) for b in metadata.brokers()}
                    return
            except Exception:
                await anyio.sleep(0.05)
            finally:
                await kafka.close()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(client)
            summary = await Simulation(config).run(handle_signals=False)
    assert summary.healthy
    assert summary.listen == f"127.0.0.1:{port}"
    assert summary.wire_requests > 0
    # One port per simulated broker, advertised by each (the sim's 6 brokers; a fenced
    # one may be missing from the list at the moment the client asked).
    ports = {int(address.rsplit(":", 1)[1]) for address in summary.broker_addresses.values()}
    assert len(ports) == 6
    assert port in ports
    assert {host for host, _ in seen["brokers"]} == {"127.0.0.1"}  # type: ignore[attr-defined]
    assert {p for _, p in seen["brokers"]} <= ports  # type: ignore[attr-defined]
    assert len(seen["brokers"]) >= 4  # type: ignore[arg-type]
    assert len(seen["topics"]) >= 3  # type: ignore[arg-type]


async def test_readers_start_once_the_bootstrap_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a Kafka broker opens its listeners only after catching up: readers that polled
    a loading broker would take the event loop from the loader."""
    from broker.cache import MetadataCache
    from broker.metadata import MetadataImage
    from broker.sim import Simulation, SimulationConfig, WorkloadConfig

    answered_from: list[int] = []
    answer = MetadataCache.answer

    def recording(self: MetadataCache, image: MetadataImage, *args: Any, **kw: Any) -> Any:
        answered_from.append(image.offset)
        return answer(self, image, *args, **kw)

    monkeypatch.setattr(MetadataCache, "answer", recording)
    config = SimulationConfig(
        workload=WorkloadConfig(topics=40, partitions_per_topic=5),
        duration=1.5,
        events=0,  # the bootstrapped cluster, unchanged: the log ends with the bootstrap
        clients=4,
    )
    summary = await Simulation(config).run(handle_signals=False)
    assert summary.healthy
    assert answered_from, "the clients ran"
    assert min(answered_from) == summary.final_offset == summary.log_end_offset


async def test_a_fenced_writer_follows_even_with_its_append_queue_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fence reaches the churn while it waits for room in the append queue: the
    churn wakes to a closed queue before its cancellation arrives, and must stop there
    rather than fail the run (seen on etcd when a second sim claimed the log)."""
    from broker.errors import WriterFencedError
    from broker.metadata.sources import InMemoryRecordSource
    from broker.sim import Simulation, SimulationConfig, WorkloadConfig, _controller, _simulation

    bootstrapped: list[bool] = []
    parts = _controller.SyntheticController.bootstrap_parts
    append = InMemoryRecordSource.append_batches

    def recording_parts(self: Any, *args: Any, **kw: Any) -> Any:
        yield from parts(self, *args, **kw)
        bootstrapped.append(True)

    async def fencing_append(self: InMemoryRecordSource, batches: Any) -> None:
        if bootstrapped:
            raise WriterFencedError(1, 2)
        await append(self, batches)

    monkeypatch.setattr(_controller.SyntheticController, "bootstrap_parts", recording_parts)
    monkeypatch.setattr(InMemoryRecordSource, "append_batches", fencing_append)
    monkeypatch.setattr(_simulation, "APPEND_QUEUE", 1)  # the churn waits for room at once
    config = SimulationConfig(
        workload=WorkloadConfig(topics=6, partitions_per_topic=3),
        duration=1.0,
        rate=0,  # unthrottled
        clients=2,
    )
    summary = await Simulation(config).run(handle_signals=False)
    assert summary.role == "follower"
    assert summary.healthy
