"""Random and mutated frames never crash the listener nor disturb a good client."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.cache import ConfigsRequest, TopicPartitionsCursor, TopicPartitionsRequest
from broker.server import (
    API_VERSIONS,
    DESCRIBE_CLUSTER,
    DESCRIBE_CONFIGS,
    DESCRIBE_TOPIC_PARTITIONS,
    METADATA,
    decode_response,
    describe_configs_request_body,
    encode_request,
    metadata_request_body,
    topic_partitions_request_body,
)
from tests.server.cluster import blocking_call, served_cluster

pytestmark = pytest.mark.integration


def valid_frames() -> list[bytes]:
    from kio.index import load_request_schema

    frames = [encode_request(METADATA, v, v, metadata_request_body(v)) for v in range(14)]
    frames += [
        encode_request(METADATA, v, v, metadata_request_body(v, ["orders"])) for v in (0, 9, 13)
    ]
    for version in range(5):
        schema: Any = load_request_schema(API_VERSIONS, version)
        fields = (
            {"client_software_name": "f", "client_software_version": "1"} if version >= 3 else {}
        )
        frames.append(encode_request(API_VERSIONS, version, 100 + version, schema(**fields)))
    describe: Any = load_request_schema(DESCRIBE_CLUSTER, 0)
    body = describe(include_cluster_authorized_operations=False)
    frames.append(encode_request(DESCRIBE_CLUSTER, 0, 200, body))
    for version in range(1, 5):
        configs = describe_configs_request_body(
            version, [ConfigsRequest(2, "orders"), ConfigsRequest(4, "1", keys=("a",))]
        )
        frames.append(encode_request(DESCRIBE_CONFIGS, version, 300 + version, configs))
    pages = TopicPartitionsRequest(partition_limit=1, cursor=TopicPartitionsCursor("orders", 1))
    frames.append(
        encode_request(DESCRIBE_TOPIC_PARTITIONS, 0, 400, topic_partitions_request_body(pages))
    )
    return frames


VALID = valid_frames()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "extend", "length", "header"]))
        if kind == "flip" and frame:
            at = draw(st.integers(0, len(frame) - 1))
            frame[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del frame[draw(st.integers(0, len(frame))) :]
        elif kind == "extend":
            frame += draw(st.binary(min_size=1, max_size=64))
        elif kind == "length" and len(frame) >= 4:
            frame[0:4] = struct.pack(">i", draw(st.integers(-(2**31), 2**31 - 1)))
        elif kind == "header" and len(frame) >= 8:
            frame[4:8] = struct.pack(">hh", draw(st.integers(-5, 80)), draw(st.integers(-2, 20)))
    return bytes(frame)


def random_frame() -> st.SearchStrategy[bytes]:
    body = st.binary(max_size=120)
    framed = body.map(lambda b: struct.pack(">i", len(b)) + b)
    return st.one_of(st.binary(max_size=120), framed, mutated())


def good_client(port: int, stop: threading.Event, outcome: dict[str, object]) -> None:
    """A well-behaved client on one connection for the whole fuzz run."""
    calls = 0
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
            sock.makefile("rb") as stream,  # closed too, or the socket's fd outlives it
        ):
            while not stop.is_set():
                calls += 1
                sock.sendall(encode_request(METADATA, 12, calls, metadata_request_body(12)))
                (size,) = struct.unpack(">i", stream.read(4))
                correlation, body = decode_response(METADATA, 12, stream.read(size))
                assert correlation == calls
                assert {t.name for t in body.topics} == {"orders", "payments"}
    except Exception as error:
        outcome["error"] = repr(error)
    outcome["calls"] = calls


def test_fuzzed_frames_never_crash_the_server_nor_disturb_a_good_client() -> None:
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(served_cluster()) as served,
    ):
        port = served.port
        stop = threading.Event()
        outcome: dict[str, object] = {}
        client = threading.Thread(target=good_client, args=(port, stop, outcome))
        client.start()

        @settings(max_examples=250, deadline=None)
        @given(frame=random_frame())
        def fuzz(frame: bytes) -> None:
            blocking_call(port, frame, timeout=5)

        try:
            fuzz()
        finally:
            stop.set()
            client.join()
        assert "error" not in outcome, outcome
        assert isinstance(outcome["calls"], int)
        assert outcome["calls"] > 10
        # Still serving after the storm.
        reply = blocking_call(port, encode_request(METADATA, 1, 9, metadata_request_body(1)))
        correlation, body = decode_response(METADATA, 1, reply[4:])
        assert correlation == 9
        assert {t.name for t in body.topics} == {"orders", "payments"}
        stats = served.listener.statistics()
        assert stats.connections_total > 250
        assert stats.closed.get("internal error", 0) == 0
