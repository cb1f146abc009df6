"""Cost of the lifetime machinery per leak-detection level, against a bare attribute read.

Measured in one run, per level: a retain+release pair on an image, ``with image.lease()``,
``with holder.lease()`` (the cache's per-request pattern), and a checked sub-image read;
the baseline is reading a plain attribute of a plain object.

Targets (issue "Image lifetime"): <= 2 us per pair and <= 3 us per lease at SIMPLE.

    python3 dev bench lifetime [--number 200000]
"""

from __future__ import annotations

import argparse
import sys
import timeit
import uuid
from collections.abc import Callable

from broker.metadata import (
    LeakDetectionLevel,
    MetadataDelta,
    MetadataImage,
    Provenance,
    leak_detection_level,
)
from broker.metadata.pipeline import ImageHolder
from broker.metadata.records import TopicRecord


class Plain:
    __slots__ = ("topics",)

    def __init__(self) -> None:
        self.topics = 1


def make_image() -> MetadataImage:
    delta = MetadataDelta(MetadataImage.EMPTY)
    delta.replay(TopicRecord(name="t", topic_id=uuid.UUID(int=1)))
    return delta.apply(Provenance(0, 1, 0))


def per_call_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def measure(level: LeakDetectionLevel, number: int) -> dict[str, float]:
    with leak_detection_level(level):
        # SIMPLE and ADVANCED track 1 image in 128, so their rows show the common,
        # untracked case ("tracked: no"); PARANOID's row shows what tracking costs.
        image = make_image()
        holder = ImageHolder("bench")
        holder.set(image)

        def pair() -> None:
            image.retain()
            image.release()

        def lease() -> None:
            with image.lease():
                pass

        def holder_lease() -> None:
            with holder.lease() as leased:
                leased.topics  # noqa: B018 - the read a request does

        def checked_read() -> None:
            image.topics  # noqa: B018

        result = {
            "pair": per_call_us(pair, number),
            "lease": per_call_us(lease, number),
            "holder lease+read": per_call_us(holder_lease, number),
            "checked read": per_call_us(checked_read, number),
            "tracked": float(bool(image.sites())),
        }
        holder.close()
        image.release()
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args(argv)
    plain = Plain()
    baseline = per_call_us(lambda: plain.topics, args.number)
    print(f"baseline: bare attribute read {baseline:.3f} us (lambda call included)")
    header = (
        f"{'level':<9} {'tracked':>7} {'retain+release us':>18} {'image.lease us':>15} "
        f"{'holder.lease+read us':>21} {'checked read us':>16}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for level in LeakDetectionLevel:
        m = measure(level, args.number)
        print(
            f"{level.name:<9} {'yes' if m['tracked'] else 'no':>7} {m['pair']:>18.3f} "
            f"{m['lease']:>15.3f} {m['holder lease+read']:>21.3f} {m['checked read']:>16.3f}"
        )
        if level is LeakDetectionLevel.SIMPLE:
            ok = m["pair"] <= 2.0 and m["lease"] <= 3.0 and m["holder lease+read"] <= 3.0
    print()
    print("targets at SIMPLE: pair <= 2 us, lease <= 3 us:", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
