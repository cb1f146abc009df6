"""The listener's protocol handling, limits, bad input and shutdown."""

from __future__ import annotations

import socket
import struct
from typing import Any

import anyio
import pytest
from kio.schema.errors import ErrorCode as KioErrorCode
from structlog.testing import capture_logs

from broker.server import (
    API_VERSIONS,
    DESCRIBE_CLUSTER,
    METADATA,
    SUPPORTED_VERSIONS,
    encode_request,
    metadata_request_body,
    wire_metadata_key,
)
from broker.server._listener import _send_all
from tests.server.cluster import CLUSTER, RawClient, blocking_call, failover_started, served_cluster

pytestmark = pytest.mark.integration


def api_versions_body(version: int) -> object:
    from kio.index import load_request_schema

    schema: Any = load_request_schema(API_VERSIONS, version)
    fields = {"client_software_name": "t", "client_software_version": "1"} if version >= 3 else {}
    return schema(**fields)


@pytest.mark.parametrize("version", range(5))
async def test_api_versions_lists_what_we_serve(version: int) -> None:
    async with served_cluster() as served, RawClient.connect(served.port) as client:
        response = await client.call(API_VERSIONS, version, api_versions_body(version))
        assert response.error_code == KioErrorCode.none
        assert {(a.api_key, a.min_version, a.max_version) for a in response.api_keys} == {
            (key, low, high) for key, (low, high) in SUPPORTED_VERSIONS.items()
        }


@pytest.mark.parametrize("version", [9, -1, -11008])  # newer, and no version at all
async def test_an_unknown_api_versions_request_gets_the_v0_fallback(version: int) -> None:
    async with served_cluster() as served, RawClient.connect(served.port) as client:
        # Header v2 and a body we do not know; we only need its correlation id.
        frame = encode_request(API_VERSIONS, 4, 77, api_versions_body(4))
        frame = frame[:6] + struct.pack(">h", version) + frame[8:]
        await client.stream.send(frame)
        client.correlation = 77
        response = await client.read(API_VERSIONS, 0)
        assert response.error_code == KioErrorCode.unsupported_version
        assert any(a.api_key == METADATA and a.max_version == 13 for a in response.api_keys)


@pytest.mark.parametrize("version", range(14))
async def test_metadata_every_version_through_the_cache(version: int) -> None:
    async with served_cluster() as served, RawClient.connect(served.port) as client:
        await served.append(failover_started())
        response = await client.call(METADATA, version, metadata_request_body(version))
        topics = {t.name: t for t in response.topics}
        assert set(topics) == {"orders", "payments"}
        orders = {p.partition_index: p for p in topics["orders"].partitions}
        assert orders[0].error_code == KioErrorCode.leader_not_available  # mid-failover
        assert orders[0].leader_id == -1
        assert orders[1].error_code == KioErrorCode.none
        assert orders[1].leader_id == 2
        assert [b.node_id for b in response.brokers] == [1, 2, 3]
        if version >= 2:
            assert response.cluster_id == CLUSTER
        if version >= 10:
            assert topics["orders"].topic_id is not None
        named = await client.call(
            METADATA, version, metadata_request_body(version, ["payments", "nope"])
        )
        assert [(t.name, t.error_code) for t in named.topics] == [
            ("payments", KioErrorCode.none),
            ("nope", KioErrorCode.unknown_topic_or_partition),
        ]


@pytest.mark.parametrize("version", [0, 1])
async def test_describe_cluster(version: int) -> None:
    from kio.index import load_request_schema

    schema: Any = load_request_schema(DESCRIBE_CLUSTER, version)
    body = schema(
        include_cluster_authorized_operations=False, **({"endpoint_type": 1} if version else {})
    )
    async with served_cluster() as served, RawClient.connect(served.port) as client:
        response = await client.call(DESCRIBE_CLUSTER, version, body)
        assert response.cluster_id == CLUSTER
        assert sorted(b.broker_id for b in response.brokers) == [1, 2, 3]
        assert response.controller_id in {1, 2, 3}


async def test_encoded_fragments_are_per_image_state_that_goes_with_the_image() -> None:
    async with served_cluster() as served, RawClient.connect(served.port) as client:
        key = wire_metadata_key(served.cache.settings())
        with served.cache.lease() as image:
            assert not image.has_derived(key)
            first = await client.call(METADATA, 12, metadata_request_body(12))
            wire = image.derived(key)
            second = await client.call(METADATA, 12, metadata_request_body(12))
            assert image.derived(key) is wire  # built once per image
            assert first.topics == second.topics
            answered_from = image
        await served.append(failover_started())
        assert not answered_from.is_live  # the old image died and took its encodings along
        assert not answered_from.has_derived(key)


BAD_FRAMES = {
    "negative length": struct.pack(">i", -5),
    "oversized length": struct.pack(">i", 2_000_000),
    "truncated frame": struct.pack(">i", 100) + b"\x00\x03\x00\x0c",
    "unknown api key": encode_request(METADATA, 12, 1, metadata_request_body(12))[:4]
    + struct.pack(">h", 999)
    + encode_request(METADATA, 12, 1, metadata_request_body(12))[6:],
    "undecodable body": struct.pack(">i", 14)
    + struct.pack(">hhi", 3, 12, 9)
    + b"\x00\x01\xff\xff\xff\xff",
    "unsupported version": encode_request(METADATA, 12, 1, metadata_request_body(12))[:6]
    + struct.pack(">h", 77)
    + encode_request(METADATA, 12, 1, metadata_request_body(12))[8:],
}
REASONS = {
    "negative length": "frame length -5 out of range",
    "oversized length": "frame length 2000000 out of range",
    "truncated frame": "truncated frame (100 bytes announced)",
    "unknown api key": "unsupported API key 999",
    "undecodable body": "undecodable MetadataRequest v12",
    "unsupported version": "unsupported version 77 of API key 3",
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
async def test_bad_input_closes_only_that_connection(case: str) -> None:
    with capture_logs() as logs:
        async with (
            served_cluster(max_frame_bytes=1_000_000) as served,
            RawClient.connect(served.port) as good,
        ):
            await good.call(METADATA, 12, metadata_request_body(12))
            reply = await anyio.to_thread.run_sync(blocking_call, served.port, BAD_FRAMES[case])
            assert reply == b""  # closed without an answer
            again = await good.call(METADATA, 12, metadata_request_body(12))
            assert {t.name for t in again.topics} == {"orders", "payments"}
            assert served.listener.statistics().closed["protocol"] == 1
    (closed,) = [
        e for e in logs if e["event"] == "connection_closed" and e["reason"].startswith("protocol")
    ]
    assert REASONS[case] in closed["reason"]
    assert closed["log_level"] == "warning"


async def test_at_max_connections_the_oldest_idle_one_makes_room() -> None:
    async with (
        served_cluster(max_connections=2) as served,
        RawClient.connect(served.port) as first,
        RawClient.connect(served.port) as second,
    ):
        await first.call(METADATA, 1, metadata_request_body(1))
        await second.call(METADATA, 1, metadata_request_body(1))
        async with RawClient.connect(served.port) as third:
            reply = await third.call(METADATA, 1, metadata_request_body(1))
            assert {t.name for t in reply.topics} == {"orders", "payments"}
            assert await first.closed_by_server()  # idle the longest: evicted
            await second.call(METADATA, 1, metadata_request_body(1))
        stats = served.listener.statistics()
        assert stats.connections_refused == 0
        assert stats.closed["idle"] == 1


async def test_at_max_connections_with_none_idle_the_new_one_is_refused() -> None:
    frame = encode_request(METADATA, 1, 1, metadata_request_body(1))
    async with (
        served_cluster(max_connections=1) as served,
        RawClient.connect(served.port) as busy,
    ):
        await busy.stream.send(frame[:6])  # a request under way: not idle
        await anyio.wait_all_tasks_blocked()
        async with RawClient.connect(served.port) as extra:
            assert await extra.closed_by_server()
        assert served.listener.statistics().connections_refused == 1
        await busy.stream.send(frame[6:])
        busy.correlation = 1
        await busy.read(METADATA, 1)


async def test_a_request_trickling_in_is_cut_off_while_others_are_answered() -> None:
    frame = encode_request(METADATA, 1, 1, metadata_request_body(1))
    with capture_logs() as logs:
        async with (
            served_cluster(request_timeout=0.2) as served,
            RawClient.connect(served.port) as slow,
            RawClient.connect(served.port) as good,
        ):
            await slow.stream.send(frame[:3])  # and then nothing (slowloris)
            await good.call(METADATA, 1, metadata_request_body(1))
            assert await slow.closed_by_server()
            await good.call(METADATA, 1, metadata_request_body(1))
    reasons = [e["reason"] for e in logs if e["event"] == "connection_closed"]
    assert "timeout: request not received within 0.2s" in reasons


async def test_an_idle_connection_is_closed() -> None:
    async with (
        served_cluster(idle_timeout=0.05) as served,
        RawClient.connect(served.port) as client,
    ):
        assert await client.closed_by_server()
        assert served.listener.statistics().closed["idle"] == 1


async def test_shutdown_finishes_the_request_in_flight() -> None:
    frame = encode_request(METADATA, 12, 5, metadata_request_body(12))
    async with served_cluster() as served:
        listener = served.listener
        async with RawClient.connect(served.port) as busy, RawClient.connect(served.port) as idle:
            await idle.call(METADATA, 12, metadata_request_body(12))
            await busy.stream.send(frame[:10])  # the request is in flight
            await anyio.wait_all_tasks_blocked()
            async with anyio.create_task_group() as tg:
                stopped = anyio.Event()

                async def stop() -> None:
                    await listener.stop()
                    stopped.set()

                tg.start_soon(stop)
                assert await idle.closed_by_server()  # idle connections go at once
                assert not stopped.is_set()
                await busy.stream.send(frame[10:])
                busy.correlation = 5
                response = await busy.read(METADATA, 12)
                assert {t.name for t in response.topics} == {"orders", "payments"}
                assert await busy.closed_by_server()
            assert stopped.is_set()


def test_request_frames_carry_their_size() -> None:
    frame = encode_request(METADATA, 9, 3, metadata_request_body(9, ["a"]))
    assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4


LIBRDKAFKA_METADATA_V13 = bytes.fromhex("0003000d00000003000772646b61666b610000000000010000")
"""A Metadata v13 request as librdkafka 2.x sends it: its body decodes in four bytes and
three more follow (captured from confluent-kafka's AdminClient.list_topics)."""


async def test_librdkafkas_metadata_request_with_trailing_bytes_is_answered() -> None:
    async with served_cluster() as served, RawClient.connect(served.port) as client:
        frame = struct.pack(">i", len(LIBRDKAFKA_METADATA_V13)) + LIBRDKAFKA_METADATA_V13
        await client.stream.send(frame)
        client.correlation = 3
        reply = await client.read(METADATA, 13)
        assert {t.name for t in reply.topics} == {"orders", "payments"}
        assert "protocol" not in served.listener.statistics().closed


async def test_a_response_larger_than_the_socket_buffer_arrives_whole_and_in_order() -> None:
    """Responses are sent in parts (head, body) without joining them; a body far larger
    than what the socket takes at once goes out across many partial sends."""
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server.setblocking(False)
    parts = (b"head", bytes(range(256)) * 4096, b"", b"tail")
    received = bytearray()

    def read_slowly() -> None:
        expected = sum(len(part) for part in parts)
        while len(received) < expected:
            received.extend(client.recv(8192))

    with server, client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, read_slowly)
            assert await _send_all(server, parts)
    assert bytes(received) == b"".join(parts)
