"""The reference-count contract of images, leases, derived state and the holder."""

from __future__ import annotations

import gc
import itertools
import os
import random
import subprocess
import sys
import threading
import uuid

import anyio
import pytest
from structlog.testing import capture_logs

from broker.errors import (
    ConfigurationError,
    HolderClosedError,
    ImageReleasedError,
    LifetimeError,
    ReferenceCountError,
)
from broker.metadata import (
    SUB_IMAGES,
    DerivedKey,
    LeakDetectionLevel,
    Lease,
    MetadataDelta,
    MetadataImage,
    Provenance,
    _refcount,
    leak_detection_level,
    lifetime_statistics,
    retain_all,
)
from broker.metadata.pipeline import ImageHolder
from broker.metadata.records import TopicRecord


def new_image(offset: int = 7, epoch: int = 3) -> MetadataImage:
    delta = MetadataDelta(MetadataImage.EMPTY)
    delta.replay(TopicRecord(name=f"t{offset}", topic_id=uuid.UUID(int=offset + 1)))
    return delta.apply(Provenance(offset, epoch, 0))


class Closeable:
    """A derived value that counts how often it was dropped."""

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


# --- counting ---------------------------------------------------------------------------


def test_a_new_image_holds_one_reference_owned_by_its_creator() -> None:
    image = new_image()
    assert image.ref_count == 1
    assert image.retain() is image
    assert image.ref_count == 2
    assert image.release() is False
    assert image.release() is True
    assert not image.is_live


def test_retaining_a_dead_image_raises_nettys_message_with_provenance_and_sites() -> None:
    image = new_image(offset=41, epoch=5)
    image.release()
    with pytest.raises(ReferenceCountError) as caught:
        image.retain()
    message = str(caught.value)
    assert "refCnt: 0, increment: 1" in message
    assert "offset=41, epoch=5" in message
    assert isinstance(caught.value, LifetimeError)
    # The suite runs at PARANOID: creation and the last release are recorded.
    assert "Created at:" in message
    assert "#release (refCnt -> 0)" in message
    assert "test_lifetime.py" in message


def test_releasing_below_zero_raises_decrement() -> None:
    image = new_image()
    image.release()
    with pytest.raises(ReferenceCountError, match=r"refCnt: 0, decrement: 1"):
        image.release()
    assert lifetime_statistics().reference_count_errors >= 1


@pytest.mark.parametrize("name", SUB_IMAGES)
def test_every_sub_image_accessor_refuses_a_dead_image(name: str) -> None:
    image = new_image(offset=9)
    image.release()
    with pytest.raises(
        ImageReleasedError, match=rf"MetadataImage#\d+\(offset=9, epoch=3\).*\({name}\)"
    ):
        getattr(image, name)


def test_whole_image_reads_refuse_a_dead_image() -> None:
    image = new_image()
    with Lease(new_image()) as other:
        image.release()
        for read in (
            lambda: list(image.write()),
            image.sub_images,
            lambda: image == other,
            lambda: MetadataDelta(image),
            lambda: image.is_empty,
        ):
            with pytest.raises(ImageReleasedError):
                read()
    # Identity stays readable so errors can name the image.
    assert image.offset == 7
    assert image.provenance == Provenance(7, 3, 0)


def test_empty_is_immortal() -> None:
    empty = MetadataImage.EMPTY
    for _ in range(3):
        empty.release()
    assert empty.retain() is empty
    assert empty.ref_count == 1
    assert empty.is_live
    with empty.lease() as image:
        assert image is empty


def test_with_scopes_the_creators_reference() -> None:
    with Lease(new_image()) as image:
        assert image.is_live
    assert not image.is_live


# --- leases -------------------------------------------------------------------------


def test_a_lease_releases_exactly_once_even_when_released_twice() -> None:
    with Lease(new_image()) as image:
        lease = image.lease()
        assert image.ref_count == 2
        lease.release()
        lease.release()
        assert image.ref_count == 1
        assert lease.released
        with pytest.raises(ImageReleasedError, match="already released"):
            _ = lease.value


def test_a_lease_releases_when_its_block_raises() -> None:
    with Lease(new_image()) as image:
        with pytest.raises(RuntimeError), image.lease():
            raise RuntimeError("boom")
        assert image.ref_count == 1


def test_retain_all_is_all_or_nothing() -> None:
    first, second, dead = new_image(1), new_image(2), new_image(3)
    dead.release()
    with pytest.raises(ReferenceCountError):
        retain_all([first, second, dead])
    assert (first.ref_count, second.ref_count) == (1, 1)
    leases = retain_all([first, second])
    assert (first.ref_count, second.ref_count) == (2, 2)
    for lease in leases:
        lease.release()
    first.release()
    second.release()


# --- derived state --------------------------------------------------------------------


def test_derived_state_is_built_once_and_dropped_exactly_once() -> None:
    built: list[Closeable] = []

    def build(image: MetadataImage) -> Closeable:
        built.append(Closeable())
        return built[-1]

    key = DerivedKey("test-index", build)
    image = new_image()
    image.retain()
    assert image.derived(key) is image.derived(key)
    assert len(built) == 1
    assert image.has_derived(key)
    image.release()
    assert built[0].closed == 0  # still one reference
    image.release()
    assert built[0].closed == 1
    assert not image.has_derived(key)
    with pytest.raises(ImageReleasedError, match="derived test-index"):
        image.derived(key)
    assert built[0].closed == 1


def test_derived_state_is_built_once_across_threads() -> None:
    calls = itertools.count()
    barrier = threading.Barrier(8)

    def build(image: MetadataImage) -> int:
        return next(calls)

    key = DerivedKey("racy", build)
    results: list[int] = []
    with Lease(new_image()) as image:

        def read() -> None:
            barrier.wait()
            results.append(image.derived(key))

        threads = [threading.Thread(target=read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [0] * 8


# --- leak detection ------------------------------------------------------------------


@pytest.mark.leaks_images
def test_a_leaked_image_is_reported_once_with_its_provenance_and_sites() -> None:
    before = lifetime_statistics().leaks
    with capture_logs() as logs:
        image = new_image(offset=77, epoch=2)
        image.retain()
        image.touch("metadata request")
        del image
        gc.collect()
        gc.collect()
    leaks = [e for e in logs if e["event"] == "image_leaked"]
    assert len(leaks) == 1
    report = leaks[0]
    assert report["log_level"] == "warning"
    assert "offset=77, epoch=2" in report["image"]
    assert report["ref_count"] == 2
    assert any("#touch metadata request" in site for site in report["sites"])
    assert any(site.startswith("Created at:") for site in report["sites"])
    assert lifetime_statistics().leaks == before + 1


@pytest.mark.leaks_images
def test_disabled_leak_detection_reports_nothing() -> None:
    with leak_detection_level("disabled"), capture_logs() as logs:
        image = new_image()
        image.retain()
        assert image.sites() == []
        del image
        gc.collect()
    assert [e for e in logs if e["event"] == "image_leaked"] == []


def test_simple_level_samples_about_one_image_in_128(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_refcount, "_sampler", random.Random(1))
    with leak_detection_level(LeakDetectionLevel.SIMPLE):
        images = [new_image() for _ in range(128 * 40)]
    tracked = [i for i in images if i.sites()]
    assert 20 <= len(tracked) <= 70
    # SIMPLE keeps only the creation site; ADVANCED and PARANOID keep recent accesses.
    assert all(len(i.sites()) == 1 for i in tracked)
    for image in images:
        image.release()


def test_advanced_level_records_recent_sites_of_sampled_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_refcount, "SAMPLING_INTERVAL", 1)
    with leak_detection_level("advanced"), Lease(new_image()) as image:
        for _ in range(20):
            image.retain().release()
        sites = image.sites()
    assert len(sites) == _refcount.ADVANCED_RECORDS + 1


@pytest.mark.integration
def test_level_comes_from_the_environment() -> None:
    code = "from broker.metadata import get_leak_detection_level as g; print(g().name)"
    env = {**os.environ, "BROKER_LEAK_DETECTION": "Advanced"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "ADVANCED"
    env["BROKER_LEAK_DETECTION"] = "loud"
    bad = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert bad.returncode != 0
    assert (
        "leak detection level 'loud' is not one of: disabled, simple, advanced, paranoid"
        in bad.stderr
    )


def test_unknown_level_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'verbose'"):
        LeakDetectionLevel.parse("verbose")


def test_live_images_and_the_oldest_age_are_observable() -> None:
    base = lifetime_statistics()
    held = [new_image(i) for i in range(5)]
    stats = lifetime_statistics()
    assert stats.live == base.live + 5
    assert stats.oldest_live is not None
    assert stats.oldest_live_age >= 0
    for image in held:
        image.release()
    assert lifetime_statistics().live == base.live


# --- the holder -----------------------------------------------------------------------


def test_holder_set_retains_the_new_image_and_releases_the_old_one() -> None:
    first, second = new_image(1), new_image(2)
    with ImageHolder("cache") as holder:
        assert holder.offset == -1
        holder.set(first)
        assert first.ref_count == 2
        holder.set(second)
        assert (first.ref_count, second.ref_count) == (1, 2)
        with holder.lease() as image:
            assert image is second
            assert second.ref_count == 3
        assert holder.offset == 2
    assert second.ref_count == 1
    first.release()
    second.release()


def test_a_closed_holder_refuses_use() -> None:
    holder = ImageHolder("closed")
    holder.close()
    holder.close()
    with pytest.raises(HolderClosedError):
        holder.lease()
    with Lease(new_image()) as image, pytest.raises(HolderClosedError):
        holder.set(image)


def test_holder_refuses_a_dead_image_and_keeps_the_old_one() -> None:
    good, dead = new_image(1), new_image(2)
    dead.release()
    with ImageHolder() as holder:
        holder.set(good)
        with pytest.raises(ReferenceCountError):
            holder.set(dead)
        assert holder.offset == 1
    good.release()


async def test_wait_lease_waits_for_the_offset_and_holds_nothing_meanwhile() -> None:
    holder = ImageHolder("waiter")
    images = [new_image(offset) for offset in (1, 5)]
    got: list[int] = []

    async def reader() -> None:
        with await holder.wait_for_offset(min_offset=5) as image:
            got.append(image.offset)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        holder.set(images[0])
        await anyio.wait_all_tasks_blocked()
        assert got == []
        assert images[0].ref_count == 2  # only the holder's reference
        holder.set(images[1])
    assert got == [5]
    holder.close()
    for image in images:
        assert image.ref_count == 1
        image.release()


async def test_wait_lease_times_out_and_cancels_cleanly() -> None:
    holder = ImageHolder("slow")
    with pytest.raises(TimeoutError), anyio.fail_after(0.01):
        await holder.wait_for_offset(min_offset=3)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await holder.wait_for_offset(min_offset=3)
    assert scope.cancelled_caught
    assert holder._waiters == []
    holder.close()


async def test_wait_lease_is_woken_by_a_set_from_a_worker_thread() -> None:
    holder = ImageHolder("threads")
    image = new_image(4)
    offsets: list[int] = []

    async def reader() -> None:
        with await holder.wait_for_offset(min_offset=4) as leased:
            offsets.append(leased.offset)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        await anyio.to_thread.run_sync(holder.set, image)
    assert offsets == [4]
    holder.close()
    image.release()


async def test_closing_wakes_waiters_with_an_error() -> None:
    holder = ImageHolder("closing")
    errors: list[BaseException] = []

    async def reader() -> None:
        try:
            await holder.wait_for_offset(min_offset=1)
        except HolderClosedError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        holder.close()
    assert len(errors) == 1


def test_holder_repr_names_the_image() -> None:
    with ImageHolder("cache") as holder, Lease(new_image(3)) as image:
        holder.set(image)
        assert "offset=3" in repr(holder)
