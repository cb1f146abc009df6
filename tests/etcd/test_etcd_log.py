"""The metadata log on etcd: convergence, fencing, restarts, compaction."""

from __future__ import annotations

import time

import anyio
import pytest
from anyio.lowlevel import checkpoint

from broker.errors import LogUnavailableError, WriterFencedError
from broker.metadata import Lease, lifetime_statistics
from broker.metadata.pipeline import DeliveryMode, MetadataPipeline, MetadataUpdate
from broker.metadata.records import FeatureLevelRecord, RecordBatch
from broker.metadata.sources import EtcdRecordLog
from broker.sim import SyntheticController, WorkloadConfig, image_fingerprint
from broker.sim import main as sim_main
from tests.etcd.conftest import EtcdServer
from tests.helpers import RecordingConsumer, replay_batches

pytestmark = pytest.mark.integration


CONFIG = WorkloadConfig(seed=21, topics=5, partitions_per_topic=2)


class Chain(RecordingConsumer):
    """An every-delta follower that checks each image continues the previous one."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gaps = 0

    async def on_metadata_update(self, update: MetadataUpdate) -> None:
        assert update.delta is not None
        if self.offsets and update.delta.image.offset != self.offsets[-1]:
            self.gaps += 1
        await super().on_metadata_update(update)


async def follow(url: str, name: str, until: int, results: dict[str, str]) -> None:
    """A follower: its own etcd client, loader, publisher and consumer."""
    consumer = Chain(name)
    async with (
        EtcdRecordLog(url) as log,
        MetadataPipeline(log, max_records_per_image=500) as pipeline,
    ):
        pipeline.add_consumer(consumer, DeliveryMode.EVERY_DELTA)
        with await consumer.holder.wait_for_offset(until) as image:
            results[name] = image_fingerprint(image)
    assert consumer.gaps == 0
    consumer.close()


@pytest.mark.slow
async def test_three_followers_and_a_writer_converge(etcd: EtcdServer) -> None:
    controller = SyntheticController(CONFIG)
    batches = list(controller.batches(5000))
    assert len(batches) >= 5000
    last = batches[-1].last_offset
    results: dict[str, str] = {}
    async with anyio.create_task_group() as tg:
        for index in range(3):
            tg.start_soon(follow, etcd.url, f"follower-{index}", last, results)
        async with EtcdRecordLog(etcd.url) as writer:
            await writer.claim()
            for batch in batches:
                await writer.append_batch(batch)
    with Lease(replay_batches(batches)) as expected:
        assert set(results.values()) == {image_fingerprint(expected)}
    assert len(results) == 3


async def test_a_stale_writer_is_fenced_and_the_log_never_forks(etcd: EtcdServer) -> None:
    async with EtcdRecordLog(etcd.url) as first, EtcdRecordLog(etcd.url) as second:
        assert await first.claim() == 1
        await first.append([FeatureLevelRecord(name="a", feature_level=1)])
        assert await second.claim() == 2
        with pytest.raises(WriterFencedError, match="writer epoch 1 was fenced"):
            await first.append([FeatureLevelRecord(name="b", feature_level=1)])
        await second.append([FeatureLevelRecord(name="c", feature_level=1)])
        batches = await first.read(0, 100)
        assert [(b.base_offset, b.epoch, b.records[0].name) for b in batches] == [  # type: ignore[attr-defined]
            (0, 1, "a"),
            (1, 2, "c"),
        ]
        assert await first.high_water_mark() == 2


async def test_followers_resume_after_etcd_restarts_mid_stream(etcd: EtcdServer) -> None:
    controller = SyntheticController(CONFIG)
    batches = list(controller.batches(600))
    last = batches[-1].last_offset
    results: dict[str, str] = {}
    outages = 0
    async with anyio.create_task_group() as tg:
        for index in range(2):
            tg.start_soon(follow, etcd.url, f"follower-{index}", last, results)
        async with EtcdRecordLog(etcd.url) as writer:
            await writer.claim()
            for index, batch in enumerate(batches):
                if index == 300:
                    await anyio.to_thread.run_sync(etcd.stop)
                    restart = anyio.Event()

                    async def restart_soon(done: anyio.Event = restart) -> None:
                        await anyio.sleep(1.0)  # etcd stays down for a second: an outage
                        await anyio.to_thread.run_sync(etcd.start)
                        done.set()

                    tg.start_soon(restart_soon)
                await writer.append_batch(batch)  # retries until etcd is back
                await checkpoint()
            outages = writer.statistics().outages
    assert outages >= 1
    with Lease(replay_batches(batches)) as expected:
        assert set(results.values()) == {image_fingerprint(expected)}


async def write_and_snapshot(log: EtcdRecordLog, batches: list[RecordBatch]) -> None:
    """Claim ``log``, append ``batches`` and snapshot the image they load into."""
    await log.claim()
    for batch in batches:
        await log.append_batch(batch)
    async with MetadataPipeline(log) as pipeline:
        with await pipeline.wait_for_offset(batches[-1].last_offset) as image:
            await log.save_snapshot(image)


async def test_a_follower_behind_a_truncated_log_loads_the_snapshot(etcd: EtcdServer) -> None:
    base = lifetime_statistics()
    controller = SyntheticController(CONFIG)
    first, second = list(controller.batches(300)), list(controller.batches(200))
    async with EtcdRecordLog(etcd.url) as writer:
        # A follower takes a snapshot of what it loaded; the log below it goes.
        await write_and_snapshot(writer, first)
        dropped = await writer.truncate_before(first[-1].next_offset)
        assert dropped == first[-1].next_offset
        await writer.compact_history()
        for batch in second:
            await writer.append_batch(batch)
    results: dict[str, str] = {}
    await follow(etcd.url, "late-follower", second[-1].last_offset, results)
    with Lease(replay_batches(first + second)) as expected:
        assert results["late-follower"] == image_fingerprint(expected)
    assert lifetime_statistics().live == base.live


async def test_cancelling_etcd_calls_is_an_ordinary_anyio_cancellation(etcd: EtcdServer) -> None:
    """grpc raises its own CancelledError for a cancelled call; the scope must catch it."""
    cancelled = 0
    async with EtcdRecordLog(etcd.url) as log:
        await log.claim()
        for attempt in range(300):
            with anyio.move_on_after(0.0002 * (attempt % 10)) as scope:
                await log.append([FeatureLevelRecord(name="a", feature_level=1)])
                await log.read(0, 1)
            cancelled += scope.cancelled_caught
    assert cancelled > 0


async def test_opening_an_unreachable_etcd_fails_at_the_deadline_naming_it() -> None:
    started = anyio.current_time()
    with pytest.raises(
        LogUnavailableError, match=r"etcd at 127\.0\.0\.1:1 did not answer within 1s"
    ):
        async with EtcdRecordLog("http://127.0.0.1:1", open_timeout=1.0):
            pass
    assert anyio.current_time() - started < 10


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "notaurl"])
def test_broker_sim_on_an_unreachable_or_malformed_etcd_exits_2_with_one_line(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert (
        sim_main(["--etcd", url, "--duration", "3", "--no-live", "--etcd-open-timeout", "2"]) == 2
    )
    assert time.monotonic() - started < 3 + 2 + 5  # duration plus the deadline, and margin
    err = capsys.readouterr().err
    assert err.startswith("broker-sim: error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


async def test_a_truncation_whose_delete_was_lost_is_completed_by_the_next_one(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = SyntheticController(CONFIG)
    batches = list(controller.batches(300))
    async with EtcdRecordLog(etcd.url) as log:
        await write_and_snapshot(log, batches)
        client = log._client
        real_delete = client.delete_range

        async def lost_delete(*args: object, **kwargs: object) -> None:
            raise OSError("connection reset while deleting")

        monkeypatch.setattr(client, "delete_range", lost_delete)
        with anyio.move_on_after(1):  # the head moved; the delete keeps failing
            await log.truncate_before(batches[-1].next_offset)
        monkeypatch.setattr(client, "delete_range", real_delete)
        await log.truncate_before(batches[-1].next_offset)  # the head is already there
        head = await log._head()
        assert head.log_start == batches[-1].next_offset
        left = await client.get_range(log._log_key(0), log._log_key(head.log_start))
        assert list(left) == []
