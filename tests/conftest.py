"""Suite-wide rules: every test runs with PARANOID leak detection and must leave every
image it created released (no leak reports, no live images left behind)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from broker.metadata import LeakDetectionLevel, lifetime_statistics, set_leak_detection_level

# The autouse lifetime fixture below is function scoped on purpose: it checks each test
# as a whole (all hypothesis examples together), which is what we want.
settings.register_profile(
    "broker", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("broker")

set_leak_detection_level(LeakDetectionLevel.PARANOID)

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "leaks_images: the test leaks images on purpose (leak detection tests)"
    )


@pytest.fixture(autouse=True)
def image_lifetime_balanced(request: pytest.FixtureRequest) -> Iterator[None]:
    gc.collect()
    before = lifetime_statistics()
    yield
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
