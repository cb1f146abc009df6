from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    """The CLI configures structlog for its process; give the next test the defaults."""
    yield
    structlog.reset_defaults()
