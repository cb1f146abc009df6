"""Logging manners for a library: structured events that go where the application looks.

Every module logs events with key/value context (``logger.warning("consumer_stalled",
consumer=name, queued=3)``). Where they go is the application's choice, never ours:

* an application that configured structlog gets structlog events, through its
  processors;
* otherwise each event becomes a stdlib ``logging`` record of the logger named after
  the module (``broker.metadata.pipeline._loader``, ...), at the event's level. Its
  message reads ``event key=value ...``; the record also carries ``event`` and
  ``context`` (the key/value dict) for handlers that want them;
* with neither configured nothing is printed: the ``broker`` logger has a NullHandler,
  so the library never writes to stdout or stderr on its own.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["Logger", "get_logger"]

logging.getLogger("broker").addHandler(logging.NullHandler())

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class Logger:
    """A module's logger: ``debug``/``info``/``warning``/``error(event, **context)``."""

    __slots__ = ("_name", "_stdlib")

    def __init__(self, name: str) -> None:
        self._name = name
        self._stdlib = logging.getLogger(name)

    def _emit(self, method: str, event: str, context: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(structlog.get_logger(self._name), method)(event, **context)
            return
        level = _LEVELS[method]
        if not self._stdlib.isEnabledFor(level):
            return
        exc_info = context.pop("exc_info", None)
        rendered = " ".join(f"{key}={value!r}" for key, value in context.items())
        self._stdlib.log(
            level,
            "%s %s" if rendered else "%s%s",
            event,
            rendered,
            exc_info=exc_info,
            extra={"event": event, "context": context},
            stacklevel=3,
        )

    def debug(self, event: str, **context: Any) -> None:
        """Log ``event`` at DEBUG with its key/value context."""
        self._emit("debug", event, context)

    def info(self, event: str, **context: Any) -> None:
        """Log ``event`` at INFO with its key/value context."""
        self._emit("info", event, context)

    def warning(self, event: str, **context: Any) -> None:
        """Log ``event`` at WARNING with its key/value context."""
        self._emit("warning", event, context)

    def error(self, event: str, **context: Any) -> None:
        """Log ``event`` at ERROR with its key/value context."""
        self._emit("error", event, context)


def get_logger(name: str) -> Logger:
    """The logger of module ``name`` (``logger = get_logger(__name__)``)."""
    return Logger(name)
