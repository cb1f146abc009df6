"""Small helpers for task groups at API boundaries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

__all__ = ["Notifier", "single_cause"]


class Notifier:
    """Wakes every task waiting for "something changed".

    Safe to create outside an event loop (the event is made by the first waiter).
    Waiters re-check their condition after waking: ``while not ready: await n.wait()``.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


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
