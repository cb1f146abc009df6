"""Random interleavings of retain / release / lease / set across tasks and threads.

A model counts the references it handed out (its own, open leases, holders); after
every step each image's count must equal the model's, never go negative, a dead image
must refuse reads, and derived state must have been dropped exactly once per death.
"""

from __future__ import annotations

import random
import threading
import uuid

import anyio
import pytest
from anyio.lowlevel import checkpoint
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from broker.errors import ImageReleasedError, ReferenceCountError
from broker.metadata import DerivedKey, Lease, MetadataDelta, MetadataImage, Provenance
from broker.metadata.pipeline import ImageHolder
from broker.metadata.records import TopicRecord


class Dropped:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


KEY = DerivedKey("stateful", lambda image: Dropped())


class LifetimeMachine(RuleBasedStateMachine):
    images = Bundle("images")

    def __init__(self) -> None:
        super().__init__()
        self.created: list[MetadataImage] = []
        self.owned: dict[int, int] = {}
        self.leases: list[Lease[MetadataImage]] = []
        self.holders = [ImageHolder(f"holder-{i}") for i in range(2)]
        self.derived: dict[int, Dropped] = {}

    def expected(self, image: MetadataImage) -> int:
        count = self.owned[id(image)]
        count += sum(1 for lease in self.leases if not lease.released and lease._obj is image)
        count += sum(1 for holder in self.holders if holder._image is image)
        return count

    @initialize(target=images)
    def first(self) -> MetadataImage:
        return self._new_image()

    @rule(target=images)
    def create(self) -> MetadataImage:
        return self._new_image()

    def _new_image(self) -> MetadataImage:
        delta = MetadataDelta(MetadataImage.EMPTY)
        delta.replay(TopicRecord(name=f"t{len(self.created)}", topic_id=uuid.uuid4()))
        image = delta.apply(Provenance(len(self.created), 1, 0))
        self.created.append(image)
        self.owned[id(image)] = 1
        return image

    @rule(image=images)
    def retain(self, image: MetadataImage) -> None:
        if self.expected(image) > 0:
            image.retain()
            self.owned[id(image)] += 1
        else:
            with pytest.raises(ReferenceCountError, match="increment: 1"):
                image.retain()

    @rule(image=images)
    def release(self, image: MetadataImage) -> None:
        if self.owned[id(image)] > 0:
            image.release()
            self.owned[id(image)] -= 1
        elif self.expected(image) == 0:
            with pytest.raises(ReferenceCountError, match="decrement: 1"):
                image.release()

    @rule(image=images)
    def lease(self, image: MetadataImage) -> None:
        if self.expected(image) > 0:
            self.leases.append(image.lease())
        else:
            with pytest.raises(ReferenceCountError):
                image.lease()

    @precondition(lambda self: any(not lease.released for lease in self.leases))
    @rule(data=st.data())
    def end_lease(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from([lease for lease in self.leases if not lease.released]))
        lease.release()
        lease.release()  # idempotent per lease

    @rule(index=st.integers(0, 1), image=images)
    def holder_set(self, index: int, image: MetadataImage) -> None:
        holder = self.holders[index]
        if self.expected(image) > 0:
            holder.set(image)
        else:
            before = holder._image
            with pytest.raises(ReferenceCountError):
                holder.set(image)
            assert holder._image is before

    @rule(index=st.integers(0, 1))
    def holder_lease(self, index: int) -> None:
        self.leases.append(self.holders[index].lease())

    @rule(image=images)
    def read(self, image: MetadataImage) -> None:
        if self.expected(image) > 0:
            assert image.topics.by_name
            value = image.derived(KEY)
            assert self.derived.setdefault(id(image), value) is value
        else:
            with pytest.raises(ImageReleasedError):
                _ = image.topics

    def _live_owned(self) -> list[MetadataImage]:
        return [i for i in self.created if self.owned[id(i)] > 0]

    @precondition(lambda self: any(self.owned[id(i)] > 0 for i in self.created))
    @rule(seed=st.integers(0, 2**16), use_threads=st.booleans())
    def burst(self, seed: int, use_threads: bool) -> None:
        """Concurrent readers and setters; every reference they take they give back.

        They share holders of their own, closed at the end: which image a holder keeps
        depends on thread timing, and the machine's state after a step must be a function
        of its draws (or hypothesis cannot replay it)."""
        candidates = self._live_owned()  # the machine's own references keep these alive
        holders = [ImageHolder(f"burst-{i}") for i in range(2)]
        for holder in holders:
            holder.set(candidates[0])
        errors: list[BaseException] = []

        def work(rng: random.Random) -> None:
            for _ in range(40):
                holder = rng.choice(holders)
                if rng.random() < 0.3:
                    holder.set(rng.choice(candidates))
                else:
                    with holder.lease() as image:
                        _ = image.topics

        if use_threads:

            def thread_main(index: int) -> None:
                try:
                    work(random.Random(seed + index))
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:

            async def task(index: int) -> None:
                rng = random.Random(seed + index)
                for _ in range(40):
                    holder = rng.choice(holders)
                    if rng.random() < 0.3:
                        await anyio.to_thread.run_sync(holder.set, rng.choice(candidates))
                    else:
                        with holder.lease() as image:
                            await checkpoint()
                            _ = image.topics

            async def main() -> None:
                async with anyio.create_task_group() as tg:
                    for index in range(4):
                        tg.start_soon(task, index)

            anyio.run(main)
        for holder in holders:
            holder.close()
        assert errors == []

    @invariant()
    def counts_match_the_model(self) -> None:
        for image in self.created:
            expected = self.expected(image)
            assert image.ref_count >= 0
            assert image.ref_count == expected, image
            assert image.is_live == (expected > 0)
            dropped = self.derived.get(id(image))
            if dropped is not None:
                assert dropped.closed == (0 if expected > 0 else 1)

    def teardown(self) -> None:
        for lease in self.leases:
            lease.release()
        for holder in self.holders:
            holder.close()
        for image in self.created:
            for _ in range(self.owned[id(image)]):
                image.release()
            assert image.ref_count == 0
        for dropped in self.derived.values():
            assert dropped.closed == 1


LifetimeMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_lifetime_state_machine = LifetimeMachine.TestCase
