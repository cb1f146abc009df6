"""Serving METADATA over the wire at scale: under churn, against a static image.

Starts ``broker-sim --listen`` (its own process) at 10k and 100k partitions, once with
``--rate 200`` churn and once with a static image (``--events 0``: the bootstrapped
cluster, unchanged), and loads it with 20 wire clients from a second process: 95% of
requests ask for three topics (Metadata v1), 5% for all topics (Metadata v1). The
simulation's own in-process METADATA clients are off (``--clients 0``): the wire
clients are the load; its failover checkers and stream fetchers run as usual.

It prints, per size and mode, how long the broker took to serve, requests/s, p50 and
p99, and the churn/static ratio. Targets (issue "Serving at scale"): 10k under churn
>= 2,000 requests/s with p99 <= 20 ms; 100k under churn >= 500 requests/s with p99 <=
250 ms; under churn >= 50% of the static requests/s; a 100k cluster serves within 30 s.

    python3 dev bench serve [--sizes 10000,100000] [--seconds 20] [--connections 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from broker.server import METADATA, decode_response, encode_request, metadata_request_body

PER_TOPIC = 100
BROKERS = 10
VERSION = 1
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def frame(topics: list[str] | None, correlation_id: int = 1) -> bytes:
    return encode_request(METADATA, VERSION, correlation_id, metadata_request_body(VERSION, topics))


def ask_topics(port: int) -> list[str]:
    """The topic names the broker serves now (empty while it is not serving)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(frame(None))
            (size,) = struct.unpack(">i", _read(sock, 4))
            _, body = decode_response(METADATA, VERSION, _read(sock, size))
            return [t.name for t in body.topics]
    except OSError:
        return []


def _read(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return bytes(data)


# --- the client process ------------------------------------------------------------------


async def client_process(port: int, topics: list[str], connections: int, seconds: float) -> None:
    """Run the load and print its latencies as JSON (runs in its own process)."""
    rng = random.Random(11)
    three = [frame(rng.sample(topics, 3), i) for i in range(2000)]
    everything = frame(None)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def one(index: int) -> None:
        nonlocal errors
        local = random.Random(index)
        try:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                receive = BufferedByteReceiveStream(stream)
                while time.monotonic() < deadline:
                    request = everything if local.random() < 0.05 else local.choice(three)
                    started = time.perf_counter()
                    await stream.send(request)
                    (size,) = struct.unpack(">i", await receive.receive_exactly(4))
                    await receive.receive_exactly(size)
                    latencies.append(time.perf_counter() - started)
        except (OSError, anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            errors += 1

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for index in range(connections):
            tg.start_soon(one, index)
    elapsed = time.monotonic() - started
    print(json.dumps({"latencies": latencies, "elapsed": elapsed, "errors": errors}))


# --- one measurement ------------------------------------------------------------------


def measure(partitions: int, churn: bool, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    topics = partitions // PER_TOPIC
    command = [
        sys.executable,
        "-m",
        "broker.sim",
        "--listen",
        f"127.0.0.1:{port}",
        "--topics",
        str(topics),
        "--partitions-per-topic",
        str(PER_TOPIC),
        "--brokers",
        str(BROKERS),
        "--clients",
        "0",
        "--duration",
        str(args.seconds + 120),
        "--no-live",
        *(["--rate", "200"] if churn else ["--events", "0"]),
    ]
    started = time.monotonic()
    sim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        names: list[str] = []
        # Churn keeps the topic count within 10% of the configured one.
        while len(names) < topics * 0.9:  # an external process starting: poll until it serves
            if sim.poll() is not None:
                raise RuntimeError(f"broker-sim exited with {sim.returncode}")
            if time.monotonic() - started > 180:
                raise RuntimeError("broker-sim did not serve within 180 s")
            time.sleep(0.5)
            names = ask_topics(port)
        ready = time.monotonic() - started
        out = subprocess.run(
            [sys.executable, __file__, "--client", str(port), str(args.seconds)],
            input=json.dumps(names),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "SERVE_CONNECTIONS": str(args.connections)},
        )
        result = json.loads(out.stdout)
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sim.kill()
    latencies = sorted(result["latencies"])
    last = len(latencies) - 1
    return {
        "ready": ready,
        "rps": len(latencies) / result["elapsed"],
        "p50": latencies[int(last * 0.50)] * 1e3 if latencies else float("nan"),
        "p99": latencies[int(last * 0.99)] * 1e3 if latencies else float("nan"),
        "errors": result["errors"],
    }


TARGETS = {10_000: (2000.0, 20.0), 100_000: (500.0, 250.0)}


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--client":
        topics = json.loads(sys.stdin.read())
        connections = int(os.environ.get("SERVE_CONNECTIONS", "20"))
        anyio.run(client_process, int(argv[1]), topics, connections, float(argv[2]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args(argv)
    print(
        f"{args.connections} wire clients for {args.seconds:g}s: 95% three-topic Metadata v1,"
        " 5% all-topics Metadata v1"
    )
    header = (
        f"{'partitions':>10} {'image':>7} {'ready s':>8} {'requests/s':>11} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'errors':>7} {'churn/static':>13}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for size in (int(s) for s in args.sizes.split(",")):
        static = measure(size, churn=False, args=args)
        churned = measure(size, churn=True, args=args)
        ratio = churned["rps"] / static["rps"]
        for label, m in (("static", static), ("churn", churned)):
            shown = f"{ratio:>13.0%}" if label == "churn" else ""
            print(
                f"{size:>10,} {label:>7} {m['ready']:>8.1f} {m['rps']:>11,.0f} "
                f"{m['p50']:>8.2f} {m['p99']:>8.2f} {m['errors']:>7.0f} {shown}"
            )
        rps, p99 = TARGETS.get(size, (0.0, float("inf")))
        ok &= churned["rps"] >= rps and churned["p99"] <= p99 and ratio >= 0.5
        if size >= 100_000:
            ok &= max(static["ready"], churned["ready"]) <= 30
    print()
    print("ready: seconds from starting broker-sim until it answered with its topics")
    print(
        "targets: 10k churn >= 2000/s, p99 <= 20 ms; 100k churn >= 500/s, p99 <= 250 ms; "
        "churn >= 50% of static; 100k ready within 30 s:",
        "met" if ok else "NOT met",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
