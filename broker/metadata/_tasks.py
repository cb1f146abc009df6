"""Small helpers for task groups at API boundaries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["single_cause"]


@contextmanager
def single_cause() -> Iterator[None]:
    """Unwrap an ExceptionGroup that holds exactly one error into that error.

    Task groups wrap what their tasks raise; a caller of ``async with publisher`` wants
    the error itself. Groups of several errors are re-raised untouched, never swallowed.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        while len(group.exceptions) == 1 and isinstance(group.exceptions[0], BaseExceptionGroup):
            group = group.exceptions[0]
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group
        raise
