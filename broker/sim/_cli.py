"""``broker-sim``: run the simulated broker with a live display and a summary.

Exit status: 0 when the run was clean; 1 when any reference-count error, released
read, leak, replay error or consumer fault happened; 2 for bad options, a log, address
or output that cannot be opened (one line, no traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import NoReturn, TextIO

import anyio
import structlog
from pydantic import ValidationError

try:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table
except ImportError as missing:  # pragma: no cover - the [cli] extra is not installed
    raise SystemExit(
        f"broker-sim needs the [cli] extra ({missing.name} is missing): "
        "pip install 'kraft-metadata-pipeline[cli]'"
    ) from None

from broker import __version__, tune_malloc
from broker.errors import BrokerError, ListenError
from broker.metadata import LeakDetectionLevel
from broker.sim._model import WorkloadConfig
from broker.sim._simulation import Progress, Simulation, SimulationConfig, SimulationSummary

__all__ = ["main"]

PROG = "broker-sim"
EXIT_CODES = """exit status:
  0    the run was clean
  1    the run saw a refcount error, released read, leak, replay error or consumer fault
  2    bad options, or a log, address or output path that cannot be used
Ctrl-C (or SIGTERM) at any moment ends the run with its summary.
"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Run the metadata pipeline embedded under synthetic churn: a controller appends "
            "records, the loader and publisher feed the metadata cache, the stream metadata "
            "manager and the failover monitor, and concurrent tasks query them."
        ),
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    run = parser.add_argument_group("run")
    run.add_argument("--duration", type=float, default=20.0, help="seconds to run")
    run.add_argument(
        "--events", type=int, help="stop after this many churn events (a deterministic run)"
    )
    run.add_argument("--rate", type=float, default=1000.0, help="churn events/s, 0 = unthrottled")
    run.add_argument("--seed", type=int, default=1, help="seed of the workload and the readers")
    cluster = parser.add_argument_group("cluster")
    cluster.add_argument("--brokers", type=int, default=6, help="simulated brokers")
    cluster.add_argument("--topics", type=int, default=100, help="topics at bootstrap")
    cluster.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="partitions at bootstrap, in all: sets --topics to N / --partitions-per-topic",
    )
    cluster.add_argument(
        "--partitions-per-topic", type=int, default=20, help="partitions of each topic"
    )
    cluster.add_argument(
        "--replication-factor", type=int, default=3, help="replicas of each partition"
    )
    cluster.add_argument("--cluster-id", default="sim-cluster", help="the cluster's id")
    load = parser.add_argument_group("load")
    load.add_argument("--clients", type=int, default=50, help="concurrent METADATA clients")
    load.add_argument(
        "--failover-checkers", type=int, default=4, help="concurrent failover-check tasks"
    )
    load.add_argument("--fetchers", type=int, default=4, help="concurrent stream fetchers")
    load.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=_host_port,
        help="serve the Kafka protocol, one port per simulated broker: the first broker on "
        "PORT, the others on the next free ports (0: any free ports); each broker "
        "advertises its own. A fenced broker is not advertised; its port keeps answering",
    )
    load.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        type=_host_port,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any; needs the "
        "[metrics] extra)",
    )
    load.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="--listen: connections kept; at the limit the one idle longest makes room",
    )
    load.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="--listen: close a connection idle this long",
    )
    load.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="--listen: close a connection whose request takes longer to arrive",
    )
    storage = parser.add_argument_group("storage")
    storage.add_argument("--log-dir", type=Path, help="file log (resumes from snapshot + log)")
    storage.add_argument(
        "--fsync",
        choices=("always", "never"),
        default="never",
        help="file log: acknowledge appends once on disk (always) or once written (never)",
    )
    storage.add_argument(
        "--etcd", metavar="URL", help="keep the log in etcd: http://HOST:PORT[/PREFIX]"
    )
    storage.add_argument(
        "--etcd-open-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for etcd when opening the log (then exit 2)",
    )
    storage.add_argument("--follow", action="store_true", help="only follow the shared --etcd log")
    storage.add_argument(
        "--snapshot-every", type=int, default=50_000, help="records between snapshots"
    )
    storage.add_argument(
        "--max-records-per-image",
        type=int,
        default=2000,
        help="most records the loader folds into one image",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--leak-detection",
        choices=[level.name.lower() for level in LeakDetectionLevel],
        default="simple",
        help="how much the leak detector records about each image's retains",
    )
    output.add_argument(
        "--log-format", choices=("console", "json"), default="console", help="log lines on stderr"
    )
    output.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="least level of the log lines on stderr",
    )
    output.add_argument(
        "--json",
        metavar="PATH",
        help="write the summary as JSON ('-': to stdout, and the table to stderr)",
    )
    output.add_argument("--no-live", action="store_true", help="plain progress lines even on a TTY")
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown for every option; the exit codes keep their lines."""


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


_OPTION_OF_FIELD = {
    "partitions_per_topic": "--partitions-per-topic",
    "replication_factor": "--replication-factor",
    "cluster_id": "--cluster-id",
    "failover_checkers": "--failover-checkers",
    "snapshot_every": "--snapshot-every",
    "max_records_per_image": "--max-records-per-image",
    "log_dir": "--log-dir",
    "max_connections": "--max-connections",
    "idle_timeout": "--idle-timeout",
    "request_timeout": "--request-timeout",
}


def _config(args: argparse.Namespace) -> SimulationConfig:
    if args.partitions is not None:
        if args.partitions < 1 or args.partitions_per_topic < 1:
            raise _UsageError("--partitions and --partitions-per-topic must be positive")
        args.topics = -(-args.partitions // args.partitions_per_topic)  # rounded up
    try:
        workload = WorkloadConfig(
            seed=args.seed,
            cluster_id=args.cluster_id,
            brokers=args.brokers,
            topics=args.topics,
            partitions_per_topic=args.partitions_per_topic,
            replication_factor=args.replication_factor,
        )
        return SimulationConfig(
            workload=workload,
            duration=None if args.events is not None and args.duration == 20.0 else args.duration,
            events=args.events,
            rate=args.rate,
            clients=args.clients,
            failover_checkers=args.failover_checkers,
            fetchers=args.fetchers,
            max_records_per_image=args.max_records_per_image,
            snapshot_every=args.snapshot_every,
            log_dir=args.log_dir,
            fsync=args.fsync,
            leak_detection=LeakDetectionLevel.parse(args.leak_detection),
            seed=args.seed,
            listen=args.listen,
            metrics=args.metrics,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            request_timeout=args.request_timeout,
            etcd=args.etcd,
            etcd_open_timeout=args.etcd_open_timeout,
            follow=args.follow,
        )
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][-1]) if first["loc"] else ""
        option = _OPTION_OF_FIELD.get(name, f"--{name.replace('_', '-')}") if name else "options"
        raise _UsageError(f"{option}: {first['msg']}") from None


class _Stderr:
    """structlog writes through whatever sys.stderr is now (rich's Live redirects it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _configure_logging(log_format: str, level: str) -> None:
    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.dict_tracebacks
            if log_format == "json"
            else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def _progress_table(progress: Progress) -> Table:
    table = Table(title=f"broker-sim  {progress.elapsed:6.1f}s", show_header=False, min_width=60)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("offset", f"{progress.offset:,}"),
        ("records/s", f"{progress.records_per_s:,.0f}"),
        ("images/s", f"{progress.images_per_s:,.0f}"),
        ("METADATA req/s", f"{progress.requests_per_s:,.0f}"),
        ("latency p50 / p99", f"{progress.p50_ms:.3f} / {progress.p99_ms:.3f} ms"),
        ("failover checks", f"{progress.failover_checks:,}"),
        ("partitions mid-failover", f"{progress.partitions_in_failover:,}"),
        ("failovers completed", f"{progress.failovers_completed:,}"),
        ("live images", f"{progress.live_images:,}"),
        ("consumer lag (images)", f"{progress.max_consumer_lag:,}"),
        ("refcount errors", str(progress.refcount_errors)),
        ("leaks", str(progress.leaks)),
        ("consumer faults", str(progress.consumer_faults)),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table


def _progress_line(progress: Progress) -> str:
    return (
        f"{progress.elapsed:6.1f}s offset={progress.offset} records/s={progress.records_per_s:.0f} "
        f"images/s={progress.images_per_s:.0f} req/s={progress.requests_per_s:.0f} "
        f"p50={progress.p50_ms:.3f}ms p99={progress.p99_ms:.3f}ms "
        f"mid-failover={progress.partitions_in_failover} live_images={progress.live_images} "
        f"lag={progress.max_consumer_lag} refcount_errors={progress.refcount_errors} "
        f"leaks={progress.leaks} faults={progress.consumer_faults}"
    )


def summary_table(summary: SimulationSummary) -> Table:
    table = Table(title="broker-sim summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    rows = [
        (
            "duration",
            f"{summary.seconds:.1f} s" + (" (interrupted)" if summary.interrupted else ""),
        ),
        ("churn events / batches", f"{summary.events:,} / {summary.batches:,}"),
        ("records", f"{summary.records:,} ({summary.records_per_s:,.0f}/s)"),
        ("images published", f"{summary.images:,} ({summary.images_per_s:,.0f}/s)"),
        (
            "final offset",
            f"{summary.final_offset:,}"
            if summary.final_offset >= summary.log_end_offset
            else f"{summary.final_offset:,} (log ends at {summary.log_end_offset:,})",
        ),
        (
            "brokers / topics / partitions / streams",
            f"{summary.brokers} / {summary.topics} / {summary.partitions:,} / {summary.streams:,}",
        ),
        ("METADATA requests", f"{summary.metadata_requests:,} ({summary.requests_per_s:,.0f}/s)"),
        ("latency p50 / p99", f"{summary.latency_p50_ms:.3f} / {summary.latency_p99_ms:.3f} ms"),
        ("failover checks", f"{summary.failover_checks:,}"),
        ("failovers completed (partitions)", f"{summary.failovers_completed:,}"),
        ("partitions mid-failover at end", f"{summary.partitions_in_failover:,}"),
        (
            "role",
            summary.role
            + (f" on {summary.etcd} ({summary.etcd_outages} outages)" if summary.etcd else ""),
        ),
        ("stream fetches", f"{summary.fetches:,}"),
        *(
            [
                (
                    "Kafka listeners / wire requests",
                    f"{_addresses(summary.broker_addresses)} / {summary.wire_requests:,}",
                )
            ]
            if summary.listen
            else []
        ),
        ("snapshots", f"{summary.snapshots:,}"),
        ("live images: max / at end", f"{summary.max_live_images} / {summary.live_images_at_end}"),
        ("max consumer lag (images)", f"{summary.max_consumer_lag:,}"),
        ("replay errors", str(summary.replay_errors)),
        (
            "refcount errors / released reads",
            f"{summary.refcount_errors} / {summary.released_reads}",
        ),
        ("leaks", str(summary.leaks)),
        ("consumer faults", str(summary.consumer_faults)),
        ("image sha256", summary.image_sha256[:16]),
        ("result", "clean" if summary.healthy else "ERRORS"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table


def _addresses(addresses: dict[int, str]) -> str:
    """``host:first-last`` for consecutive ports on one host, else every address."""
    hosts_ports = [a.rsplit(":", 1) for a in addresses.values()]
    hosts = {host for host, _ in hosts_ports}
    ports = [int(port) for _, port in hosts_ports]
    if len(hosts) == 1 and len(ports) > 1 and ports == list(range(ports[0], ports[0] + len(ports))):
        return f"{hosts.pop()}:{ports[0]}-{ports[-1]}"
    return ", ".join(addresses.values())


def _listening_line(addresses: dict[int, tuple[str, int]]) -> str:
    brokers = ", ".join(f"{broker}={host}:{port}" for broker, (host, port) in addresses.items())
    return f"{PROG}: Kafka listeners by broker id: {brokers}"


def _metrics_line(address: tuple[str, int]) -> str:
    return f"{PROG}: Prometheus metrics at http://{address[0]}:{address[1]}/metrics"


def _run(
    simulation: Simulation, *, live: bool, console: Console, lines: TextIO
) -> SimulationSummary:
    if live:
        with Live(
            console=console, refresh_per_second=4, redirect_stderr=True, transient=True
        ) as display:
            simulation.on_progress = lambda p: display.update(_progress_table(p))
            simulation.on_listening = lambda a: display.console.print(_listening_line(a))
            simulation.on_metrics = lambda a: display.console.print(_metrics_line(a))
            return anyio.run(simulation.run)
    ticks = 0

    def line(progress: Progress) -> None:
        nonlocal ticks
        ticks += 1
        if ticks % 4 == 0:  # every 2 seconds
            print(_progress_line(progress), file=lines, flush=True)

    simulation.on_progress = line
    simulation.on_listening = lambda a: print(_listening_line(a), file=lines, flush=True)
    simulation.on_metrics = lambda a: print(_metrics_line(a), file=lines, flush=True)
    return anyio.run(simulation.run)


def _check_json_path(path: str | None) -> None:
    """Refuse an output the summary could not be written to, before the run."""
    if path is None or path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise _UsageError(f"--json {path}: is a directory")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise _UsageError(f"--json {path}: directory {parent} does not exist")
    writable = os.access(target, os.W_OK) if target.exists() else os.access(parent, os.W_OK)
    if not writable:
        raise _UsageError(f"--json {path}: not writable")


def _write_json(summary: SimulationSummary, path: str, stdout: TextIO) -> None:
    text = json.dumps(summary.as_dict(), indent=2, sort_keys=True)
    if path == "-":
        print(text, file=stdout)
    else:
        Path(path).write_text(text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run ``broker-sim`` with ``argv``; returns the exit status."""
    simulations: list[Simulation] = []
    pending = False

    def interrupted(signum: int, frame: FrameType | None) -> None:
        # Until the run's own signal handling starts (and after it ends), Ctrl-C only
        # asks the run to stop: an interrupted start-up still ends with its summary.
        nonlocal pending
        pending = True
        for simulation in simulations:
            simulation.interrupt()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupted) if in_main_thread else None
    try:
        try:
            args = _parser().parse_args(argv)
            config = _config(args)
            _check_json_path(args.json)
        except _UsageError as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 2
        _configure_logging(args.log_format, args.log_level)
        tune_malloc()  # a long-running broker process: see broker._malloc
        json_on_stdout = args.json == "-"
        console = Console(stderr=json_on_stdout)  # stdout stays pure JSON
        live = console.is_terminal and not args.no_live
        simulation = Simulation(config)
        simulations.append(simulation)
        if pending:
            simulation.interrupt()
        lines = sys.stderr if json_on_stdout else sys.stdout
        try:
            summary = _run(simulation, live=live, console=console, lines=lines)
        except ListenError as error:
            flag = "--metrics" if (error.host, error.port) == args.metrics else "--listen"
            print(f"{PROG}: error: {flag}: {error}", file=sys.stderr)
            return 2
        except (BrokerError, OSError) as error:
            print(f"{PROG}: error: {error}".splitlines()[0], file=sys.stderr)
            return 2
        console.print(summary_table(summary))
        if args.json:
            try:
                _write_json(summary, args.json, sys.stdout)
            except OSError as error:
                print(
                    f"{PROG}: error: --json {args.json}: {error.strerror or error}", file=sys.stderr
                )
                return 2
        return 0 if summary.healthy else 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
