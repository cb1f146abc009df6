"""Against `broker-sim --listen` under its default load: 500 idle connections and 20
slowloris ones held open, a new client's Metadata is still answered within a second."""

from __future__ import annotations

import re
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from broker.server import METADATA, decode_response, encode_request, metadata_request_body

pytestmark = pytest.mark.integration

IDLE, SLOWLORIS, NEW_CLIENTS = 500, 20, 5
_LISTENING = re.compile(r"Kafka listeners by broker id: 1=([\d.]+):(\d+)")


def metadata_within(port: int, seconds: float, correlation: int) -> tuple[float, int]:
    """Connect, ask for all topics, read the answer: (how long it took, how many topics
    it lists); fails after ``seconds``."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.settimeout(max(0.01, seconds - (time.monotonic() - started)))
        sock.sendall(encode_request(METADATA, 12, correlation, metadata_request_body(12)))
        with sock.makefile("rb") as stream:  # closed too, or the socket's fd outlives it
            (size,) = struct.unpack(">i", stream.read(4))
            answer, body = decode_response(METADATA, 12, stream.read(size))
    assert answer == correlation
    return time.monotonic() - started, len(body.topics)


def test_a_new_client_is_answered_within_a_second_during_a_connection_flood() -> None:
    sim = subprocess.Popen(
        [sys.executable, "-m", "broker.sim", "--listen=127.0.0.1:0", "--duration=120", "--no-live"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    held: list[socket.socket] = []
    try:
        assert sim.stdout is not None
        port = 0
        for line in sim.stdout:
            if found := _LISTENING.search(line):
                port = int(found.group(2))
                break
        assert port, "the simulation never listened"
        deadline = time.monotonic() + 60
        while metadata_within(port, 10.0, 1)[1] == 0:  # until the bootstrap is replayed
            assert time.monotonic() < deadline, "the simulated cluster never had topics"
        frame = encode_request(METADATA, 1, 1, metadata_request_body(1))
        for index in range(IDLE + SLOWLORIS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if index >= IDLE:
                sock.sendall(frame[:3])  # a request begun, never finished
            held.append(sock)
        answers = [metadata_within(port, 1.0, 100 + i) for i in range(NEW_CLIENTS)]
        assert max(wait for wait, _ in answers) < 1.0
        assert all(topics for _, topics in answers)
    finally:
        for sock in held:
            sock.close()
        sim.send_signal(signal.SIGINT)
        try:
            sim.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung simulation
            sim.kill()
            sim.communicate()
    assert sim.returncode == 0
