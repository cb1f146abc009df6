"""Logging manners: the library never prints on its own; an app's stdlib logging gets
records with the key/value context, an app's structlog gets structlog events."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from structlog.testing import capture_logs

from broker.metadata.pipeline import MetadataPipeline
from broker.metadata.sources import InMemoryRecordSource
from broker.sim import SyntheticController, WorkloadConfig

_CATCH_UP = """
import anyio, logging, sys
{setup}
from broker.metadata.pipeline import MetadataPipeline
from broker.metadata.sources import InMemoryRecordSource
from broker.sim import SyntheticController, WorkloadConfig

async def main():
    source = InMemoryRecordSource()
    source.extend(SyntheticController(WorkloadConfig(topics=2)).batches(5))
    async with MetadataPipeline(source) as pipeline:
        with await pipeline.wait_for_offset(source.next_offset - 1):
            pass

anyio.run(main)
"""


def _run(setup: str) -> subprocess.CompletedProcess[str]:
    code = _CATCH_UP.format(setup=setup)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


@pytest.mark.integration
def test_an_app_that_configured_nothing_sees_nothing_printed() -> None:
    done = _run("")
    assert (done.stdout, done.stderr) == ("", "")


@pytest.mark.integration
def test_an_app_with_stdlib_logging_gets_records_at_the_levels_it_set() -> None:
    quiet = _run("logging.basicConfig(level=logging.WARNING)")
    assert (quiet.stdout, quiet.stderr) == ("", "")  # loader_caught_up is INFO
    chatty = _run("logging.basicConfig(level=logging.INFO, format='%(name)s|%(message)s')")
    assert chatty.stdout == ""
    assert "broker.metadata.pipeline._loader|loader_caught_up " in chatty.stderr
    assert "offset=" in chatty.stderr


async def load_a_little() -> None:
    source = InMemoryRecordSource()
    source.extend(SyntheticController(WorkloadConfig(topics=2)).batches(5))
    async with MetadataPipeline(source) as pipeline:
        with await pipeline.wait_for_offset(source.next_offset - 1):
            pass


async def test_stdlib_records_carry_the_event_and_its_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="broker"):
        await load_a_little()
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "loader_caught_up"]
    assert record.levelno == logging.INFO
    assert record.name == "broker.metadata.pipeline._loader"
    context = record.context  # type: ignore[attr-defined]
    assert context["offset"] >= 0
    assert record.getMessage().startswith("loader_caught_up ")


async def test_an_app_with_structlog_gets_structlog_events() -> None:
    with capture_logs() as events:
        await load_a_little()
    caught_up = [e for e in events if e["event"] == "loader_caught_up"]
    assert caught_up
    assert caught_up[0]["log_level"] == "info"
    assert caught_up[0]["offset"] >= 0


def test_the_library_logger_has_a_null_handler() -> None:
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("broker").handlers)
