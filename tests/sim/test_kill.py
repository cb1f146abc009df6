"""kill -9 at seeded random moments of `broker-sim --log-dir --fsync always`, the
bootstrap included: every restart exits 0, replays without error, and resumes at or
after every offset the killed run had acknowledged (published from durable records)."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KILL_POINTS = 20
_OFFSET = re.compile(r" offset=(\d+) ")


def sim(log_dir: Path, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "broker.sim",
        "--log-dir",
        str(log_dir),
        "--fsync",
        "always",
        "--no-live",
        "--clients",
        "4",
        *options,
    ]


async def kill_and_restart(seed: int, directory: Path) -> tuple[int, int, dict[str, object]]:
    """(the highest offset the killed run acknowledged, the restart's exit status, its
    summary)."""
    rng = random.Random(seed)
    log_dir = directory / f"log-{seed}"
    in_bootstrap = seed % 2 == 0
    # Even seeds: a large bootstrap (its frames take a while to write), killed within
    # 0.3 s of the first one reaching the disk. Odd seeds: killed at a random moment of
    # the churn, after some progress lines (each names an offset the run published).
    partitions = "20000" if in_bootstrap else rng.choice(["2000", "20000"])
    victim = await anyio.open_process(
        sim(log_dir, "--duration", "60", "--partitions", partitions), stderr=subprocess.DEVNULL
    )
    acknowledged = -1
    if in_bootstrap:
        segments = log_dir / "segments"
        while not (segments.is_dir() and any(segments.iterdir())):  # noqa: ASYNC110
            await anyio.sleep(0.005)  # another process's files: there is no event to wait on
        await anyio.sleep(rng.uniform(0.0, 0.3))
    else:
        with anyio.move_on_after(rng.uniform(2.5, 8.0)):
            assert victim.stdout is not None
            async for chunk in victim.stdout:
                for found in _OFFSET.finditer(chunk.decode()):
                    acknowledged = max(acknowledged, int(found.group(1)))
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    out = directory / f"summary-{seed}.json"
    restart = await anyio.run_process(
        sim(log_dir, "--events", "5", "--partitions", partitions, "--json", str(out)),
        check=False,
    )
    summary = json.loads(out.read_text()) if out.exists() else {}
    return acknowledged, restart.returncode, summary


async def test_every_kill_point_resumes_cleanly_at_the_durable_offset(tmp_path: Path) -> None:
    results: dict[int, tuple[int, int, dict[str, object]]] = {}
    workers = anyio.CapacityLimiter(2)

    async def one(seed: int) -> None:
        async with workers:
            results[seed] = await kill_and_restart(seed, tmp_path)

    with anyio.fail_after(600):
        async with anyio.create_task_group() as tg:
            for seed in range(KILL_POINTS):
                tg.start_soon(one, seed)
    for seed, (acknowledged, returncode, summary) in sorted(results.items()):
        assert returncode == 0, (seed, summary.get("errors"))
        assert summary["replay_errors"] == 0, seed
        resumed = summary["resumed_from_offset"]
        assert isinstance(resumed, int)
        assert resumed >= acknowledged, (seed, resumed, acknowledged)
        assert summary["final_offset"] == summary["log_end_offset"], seed
