"""Suite-wide rules: every test runs with PARANOID leak detection and must leave every
image it created released (no leak reports, no live images left behind)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import HealthCheck, settings

from broker.metadata import LeakDetectionLevel, lifetime_statistics, set_leak_detection_level
from broker.metadata.pipeline import gc_statistics

# The autouse lifetime fixture below is function scoped on purpose: it checks each test
# as a whole (all hypothesis examples together), which is what we want.
settings.register_profile(
    "broker", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("broker")

set_leak_detection_level(LeakDetectionLevel.PARANOID)

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def image_lifetime_balanced(request: pytest.FixtureRequest) -> Iterator[None]:
    # Collect, then freeze what survived: the collection after the test then walks only
    # what the test itself allocated, not the whole interpreter (about 3x faster here).
    # A leak is still found: the test's images are created after the freeze.
    gc.collect()
    gc.freeze()
    before = lifetime_statistics()
    freezes = gc_statistics().freezes
    yield
    if gc_statistics().freezes != freezes:
        # A loader froze the test's own objects: a leaked image among them would never
        # be collected, so unfreeze and walk everything.
        gc.unfreeze()
    gc.collect()
    after = lifetime_statistics()
    if request.node.get_closest_marker("leaks_images") is not None:
        return
    assert after.leaks == before.leaks, (
        f"{after.leaks - before.leaks} image(s) leaked: garbage-collected without release()"
    )
    assert after.live <= before.live, (
        f"{after.live - before.live} image(s) still hold references after the test; "
        f"oldest: {after.oldest_live}"
    )


@pytest.fixture(autouse=True)
def structlog_defaults() -> Iterator[None]:
    """Leave structlog unconfigured for the next test: the CLI configures it for its
    process, and capture_logs() leaves it "configured" with the defaults."""
    yield
    structlog.reset_defaults()
