"""Soak: the simulated broker for a long run at scale; memory and live images stay flat.

Runs the whole simulation (default: 10 minutes at 100k partitions) and samples, every
``--every`` seconds, the process RSS, live images, the offset and images published. At
the end it compares the second half of the run with the first (after a warm-up): a leak
shows as growth there. Not part of CI.

    python3 dev bench soak [--minutes 10] [--topics 1000 --partitions-per-topic 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

import anyio
import structlog

from broker import tune_malloc
from broker.sim import Progress, Simulation, SimulationConfig, WorkloadConfig

PAGE = os.sysconf("SC_PAGE_SIZE")
STREAM_QUEUE = 64
"""The simulation's every-delta queue size (stream metadata manager)."""


def rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--partitions-per-topic", type=int, default=100)
    parser.add_argument("--brokers", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0, help="churn events/s")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args(argv)
    config = SimulationConfig(
        workload=WorkloadConfig(
            seed=1,
            brokers=args.brokers,
            topics=args.topics,
            partitions_per_topic=args.partitions_per_topic,
        ),
        duration=args.minutes * 60,
        rate=args.rate,
        clients=args.clients,
        snapshot_every=500_000,
        max_records_per_image=5000,
    )
    samples: list[tuple[float, float, int, int, int]] = []
    next_sample = 0.0

    def sample(progress: Progress) -> None:
        nonlocal next_sample
        if progress.elapsed < next_sample:
            return
        next_sample = progress.elapsed + args.every
        row = (progress.elapsed, rss_mib(), progress.live_images, progress.offset, progress.images)
        samples.append(row)
        print(
            f"{row[0]:>7.0f}s rss={row[1]:>8.1f} MiB live_images={row[2]:>3} offset={row[3]:>10,} "
            f"images={row[4]:>8,} req/s={progress.requests_per_s:>7,.0f} "
            f"refcount_errors={progress.refcount_errors} leaks={progress.leaks}",
            flush=True,
        )

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tuned = tune_malloc()  # as broker-sim does at start
    partitions = args.topics * args.partitions_per_topic
    print(
        f"soak: {args.minutes:g} min at {partitions:,} partitions, {args.rate:g} events/s, "
        f"malloc tuned as broker-sim: {'yes' if tuned else 'no (not glibc)'}"
    )
    started = time.monotonic()
    summary = anyio.run(Simulation(config, on_progress=sample).run)
    print(
        f"ran {time.monotonic() - started:.0f}s, result: {'clean' if summary.healthy else 'ERRORS'}"
    )
    warm = [s for s in samples if s[0] >= 60] or samples
    half = len(warm) // 2
    if half >= 1:
        first, second = warm[:half], warm[half:]
        rss = (statistics.mean(s[1] for s in first), statistics.mean(s[1] for s in second))
        live = (max(s[2] for s in first), max(s[2] for s in second))
        growth = (rss[1] - rss[0]) / rss[0]
        print()
        print(f"{'':<22} {'first half':>11} {'second half':>12}")
        print(f"{'mean RSS MiB':<22} {rss[0]:>11.1f} {rss[1]:>12.1f}   ({growth:+.1%})")
        # Live images are bounded by design: each every-delta queue may hold up to its
        # size in deliveries (two images each), plus the holders. Growth past that is a leak.
        bound = 2 * STREAM_QUEUE + 8
        print(f"{'max live images':<22} {live[0]:>11} {live[1]:>12}   (bound {bound})")
        flat = growth <= 0.10 and live[1] <= bound
        print("memory and live images flat:", "yes" if flat else "NO")
    print(f"records={summary.records:,} images={summary.images:,}", end=" ")
    print(
        f"requests={summary.metadata_requests:,} refcount_errors={summary.refcount_errors}", end=" "
    )
    print(f"leaks={summary.leaks} faults={summary.consumer_faults}")
    return 0 if summary.healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
