"""How soon a run ends: after its ``--duration``, and after Ctrl-C.

Runs ``broker-sim --partitions N --duration D`` (its own process, otherwise on its
defaults: churn, METADATA clients, failover checkers, fetchers, snapshots) at 10k and
100k partitions, and once more with a long duration, interrupted by SIGINT at D/2. The
baseline is the duration itself: it prints, per size, how far past D the process exited
(its start-up included: the duration counts from the simulation's start, after the
imports), how far past D the summary's ``seconds`` were, and how long the interrupted
run took from the signal to its exit. Medians of ``--repeat`` runs.

Target (issue "Serving at scale"): a run ends within 5 s of its ``--duration``.

    python3 dev bench run_end [--sizes 10000,100000] [--duration 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 5.0


def simulation(partitions: int, duration: float, summary: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "broker.sim",
        "--partitions",
        str(partitions),
        "--duration",
        str(duration),
        "--no-live",
        "--json",
        str(summary),
    ]


def timed_run(partitions: int, duration: float, directory: Path) -> tuple[float, float]:
    """Seconds past ``duration`` until the process exited, and the summary's."""
    summary = directory / "timed.json"
    started = time.monotonic()
    subprocess.run(
        simulation(partitions, duration, summary),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        check=True,
    )
    wall = time.monotonic() - started
    return wall - duration, json.loads(summary.read_text())["seconds"] - duration


def interrupted_run(partitions: int, duration: float, directory: Path) -> float:
    """Seconds from SIGINT, sent at ``duration / 2``, until the process exited."""
    summary = directory / "interrupted.json"
    sim = subprocess.Popen(
        simulation(partitions, duration * 10, summary),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        time.sleep(duration / 2)  # an external process: nothing to wait on but the clock
        sim.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        sim.wait(timeout=120)
        exited = time.monotonic() - interrupted
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
    if sim.returncode != 0 or not json.loads(summary.read_text())["interrupted"]:
        raise RuntimeError(f"the interrupted run exited with {sim.returncode}")
    return exited


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"broker-sim --duration {args.duration:g} (median of {args.repeat})")
    header = (
        f"{'partitions':>10} {'exit past duration s':>21} {'summary past duration s':>24} "
        f"{'exit after SIGINT s':>20}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        for size in (int(s) for s in args.sizes.split(",")):
            walls, summaries, interrupts = [], [], []
            for _ in range(args.repeat):
                wall, seconds = timed_run(size, args.duration, directory)
                walls.append(wall)
                summaries.append(seconds)
                interrupts.append(interrupted_run(size, args.duration, directory))
            wall, seconds = statistics.median(walls), statistics.median(summaries)
            interrupt = statistics.median(interrupts)
            print(f"{size:>10,} {wall:>21.2f} {seconds:>24.2f} {interrupt:>20.2f}")
            ok &= max(walls) <= TARGET_SECONDS
    print()
    print("exit past duration: the process's wall time (start-up included) minus --duration")
    print(
        f"target: every timed run exits within {TARGET_SECONDS:g} s of its duration:",
        "met" if ok else "NOT met",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
