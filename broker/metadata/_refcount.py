"""Reference counting with Netty's contract, plus leak detection and derived state.

Pure code: no event loop, only ``threading`` so counts stay exact when worker threads
retain and release. The rules (see ``automq-image-lifetime.md``):

* A new object holds one reference, owned by its creator. ``retain()`` +1,
  ``release()`` -1; at 0 its derived state is dropped exactly once and it is dead.
* Retaining a dead object or releasing below zero raises ``ReferenceCountError``
  (``refCnt: 0, increment: 1``) naming the object and, when tracked, its recent sites.
* Immortal objects (``MetadataImage.EMPTY``) ignore retain and release.
* An object garbage-collected while its count is above zero leaked: it is reported once
  (warning event ``image_leaked``, see ``broker._logging``) with the sites recorded for it.

Leak tracking is sampled like Netty's ``ResourceLeakDetector``: DISABLED, SIMPLE (about
1 in 128 objects, creation site only), ADVANCED (1 in 128, last retain/release/touch
sites), PARANOID (every object, every site). The level comes from
``BROKER_LEAK_DETECTION`` or :func:`set_leak_detection_level`.
"""

from __future__ import annotations

import enum
import itertools
import os
import random
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Final, Generic, Self, TypeVar, cast

from broker._logging import get_logger
from broker.errors import ConfigurationError, ImageReleasedError, ReferenceCountError

__all__ = [
    "DerivedKey",
    "LeakDetectionLevel",
    "Lease",
    "LifetimeStatistics",
    "RefCounted",
    "get_leak_detection_level",
    "leak_detection_level",
    "lifetime_statistics",
    "release_all",
    "retain_all",
    "set_leak_detection_level",
]

logger = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R", bound="RefCounted")

ENV_VAR: Final = "BROKER_LEAK_DETECTION"
SAMPLING_INTERVAL: Final = 128
ADVANCED_RECORDS: Final = 8
PARANOID_RECORDS: Final = 32


class LeakDetectionLevel(enum.IntEnum):
    """Netty's leak detection levels: how many images are tracked, and how closely."""

    DISABLED = 0
    SIMPLE = 1
    ADVANCED = 2
    PARANOID = 3

    @classmethod
    def parse(cls, text: str) -> LeakDetectionLevel:
        """The level named ``text`` (case-insensitive, as in ``BROKER_LEAK_DETECTION``)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(level.name.lower() for level in cls)
            raise ConfigurationError(
                f"leak detection level {text!r} is not one of: {names}"
            ) from None


def _level_from_environment() -> LeakDetectionLevel:
    text = os.environ.get(ENV_VAR)
    return LeakDetectionLevel.SIMPLE if not text else LeakDetectionLevel.parse(text)


_level: LeakDetectionLevel = _level_from_environment()
_sampler = random.Random()


def get_leak_detection_level() -> LeakDetectionLevel:
    """The level objects created from now on are tracked at."""
    return _level


def set_leak_detection_level(level: LeakDetectionLevel | str) -> LeakDetectionLevel:
    """Set the level for objects created from now on; returns the previous level."""
    global _level
    previous = _level
    _level = LeakDetectionLevel.parse(level) if isinstance(level, str) else level
    return previous


class leak_detection_level:
    """Context manager that sets the level for its block and restores the old one."""

    def __init__(self, level: LeakDetectionLevel | str) -> None:
        self._level = level
        self._previous: LeakDetectionLevel | None = None

    def __enter__(self) -> LeakDetectionLevel:
        self._previous = set_leak_detection_level(self._level)
        return get_leak_detection_level()

    def __exit__(self, *exc: object) -> None:
        assert self._previous is not None
        set_leak_detection_level(self._previous)


# --- sites ------------------------------------------------------------------------

_THIS_FILE = __file__
_SKIP_FILES = frozenset({_THIS_FILE, threading.__file__})
_SKIP_SUFFIXES = ("contextlib.py",)


def _site(skip_files: frozenset[str] = _SKIP_FILES) -> str:
    """``file:line in function`` of the first caller outside the lifetime machinery."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if (
            filename not in skip_files
            and not filename.endswith(_SKIP_SUFFIXES)
            and not (frame.f_globals.get("_LIFETIME_INTERNAL", False))
        ):
            return f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return "<unknown>"


class _Tracker:
    """What leak detection remembers about one sampled object."""

    __slots__ = ("created_at", "records")

    def __init__(self, created_at: str, keep: int) -> None:
        self.created_at = created_at
        self.records: deque[str] | None = deque(maxlen=keep) if keep else None

    def record(self, action: str, count: int) -> None:
        if self.records is not None:
            self.records.append(f"#{action} (refCnt -> {count}) at {_site()}")

    def sites(self) -> list[str]:
        sites = list(self.records) if self.records is not None else []
        sites.append(f"Created at: {self.created_at}")
        return sites


def _new_tracker() -> _Tracker | None:
    level = _level
    if level is LeakDetectionLevel.DISABLED:
        return None
    if level is LeakDetectionLevel.PARANOID:
        return _Tracker(_site(), PARANOID_RECORDS)
    # one in SAMPLING_INTERVAL, like randrange(SAMPLING_INTERVAL) == 0 at a sixth of
    # the cost (one per image)
    if _sampler.random() * SAMPLING_INTERVAL >= 1:
        return None
    return _Tracker(_site(), ADVANCED_RECORDS if level is LeakDetectionLevel.ADVANCED else 0)


# --- statistics ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LifetimeStatistics:
    """Counters for every reference-counted object in this process."""

    live: int
    """Objects created and not yet released to zero (immortal ones excluded)."""
    oldest_live_age: float
    """Seconds since the oldest live object was created (0 when none)."""
    oldest_live: str | None
    created: int
    deallocated: int
    leaks: int
    """Objects garbage-collected while still referenced."""
    reference_count_errors: int
    released_reads: int
    """Reads of dead objects that were refused with ImageReleasedError."""


_serials = itertools.count(1)
_live: dict[int, tuple[float, weakref.ref[RefCounted]]] = {}
_counters = {"created": 0, "deallocated": 0, "leaks": 0, "refcount_errors": 0, "released_reads": 0}
_counter_lock = threading.Lock()


def _bump(name: str) -> None:
    with _counter_lock:
        _counters[name] += 1


def lifetime_statistics() -> LifetimeStatistics:
    """Counters of every reference-counted object in this process."""
    now = time.monotonic()
    entries = list(_live.values())
    oldest_created, oldest_ref = min(entries, key=lambda e: e[0], default=(now, None))
    oldest = oldest_ref() if oldest_ref is not None else None
    return LifetimeStatistics(
        live=len(entries),
        oldest_live_age=now - oldest_created,
        oldest_live=oldest.describe() if oldest is not None else None,
        created=_counters["created"],
        deallocated=_counters["deallocated"],
        leaks=_counters["leaks"],
        reference_count_errors=_counters["refcount_errors"],
        released_reads=_counters["released_reads"],
    )


# --- derived state ------------------------------------------------------------------


class DerivedKey(Generic[T]):
    """Names one kind of per-object derived value and how to build it.

    ``obj.derived(key)`` builds the value once per object, on first use, and keeps it
    until the object's count reaches zero; then it is dropped (and ``close()``d if it
    has one). Keys compare by identity: create each key once, at module level.

    A key with ``follow`` derives a new object's value from its predecessor's instead
    of building it cold: when an object is made from a predecessor that holds a value
    for the key (an image applied from a delta), the new object gets
    ``follow(previous_value, change, new_object)`` at once, while the predecessor is
    still live. A follow costs what the change touched; it must not mutate the
    previous value, nor keep the predecessor itself alive through the new value.
    """

    __slots__ = ("build", "follow", "name")

    def __init__(
        self,
        name: str,
        build: Callable[[Any], T],
        follow: Callable[[T, Any, Any], T] | None = None,
    ) -> None:
        self.name = name
        self.build = build
        self.follow = follow

    def __repr__(self) -> str:
        return f"DerivedKey({self.name!r})"


_MISSING: Final = object()
# Builds are rare (once per object and key) and may call each other, so one re-entrant
# lock is enough and keeps objects small; lookups of built values take no lock.
_derived_lock = threading.RLock()


# --- the counted object ---------------------------------------------------------------


class RefCounted:
    """Base for objects whose lifetime is managed by explicit references.

    Subclasses override :meth:`describe` to name themselves in errors and reports.
    """

    __slots__ = (
        "__weakref__",
        "_derived",
        "_immortal",
        "_lock",
        "_pending",
        "_refcnt",
        "_serial",
        "_tracker",
    )

    _refcnt: int

    def __init__(self, *, immortal: bool = False) -> None:
        self._refcnt = 1
        self._immortal = immortal
        self._derived: dict[DerivedKey[Any], Any] | None = None
        self._pending: tuple[dict[DerivedKey[Any], Any], object] | None = None
        if immortal:
            self._lock = None
            self._tracker = None
            self._serial = 0
            return
        self._lock = threading.Lock()
        self._tracker = _new_tracker()
        self._serial = next(_serials)
        _live[self._serial] = (time.monotonic(), weakref.ref(self))
        _bump("created")

    # identity -----------------------------------------------------------------------

    def describe(self) -> str:
        """A short name for messages: type and serial."""
        return f"{type(self).__name__}#{self._serial}"

    @property
    def ref_count(self) -> int:
        """References held now (0: released, dead)."""
        return self._refcnt

    @property
    def is_live(self) -> bool:
        """Whether references are held (a count above zero): only then may it be read."""
        return self._refcnt > 0

    @property
    def is_immortal(self) -> bool:
        """Whether the object is never released (shared constants such as EMPTY)."""
        return self._immortal

    def sites(self) -> list[str]:
        """Recorded retain/release/touch sites (empty unless leak tracking sampled it)."""
        return self._tracker.sites() if self._tracker is not None else []

    # counting -----------------------------------------------------------------------

    def _add(self, change: int) -> int:
        """Add ``change`` (+1 or -1) to a live count under the lock; returns the new count."""
        assert self._lock is not None
        with self._lock:
            count = self._refcnt
            if count <= 0:
                _bump("refcount_errors")
                raise ReferenceCountError(
                    image=self.describe(), ref_count=count, change=change, sites=self.sites()
                )
            self._refcnt = count = count + change
        if self._tracker is not None:
            self._tracker.record("retain" if change > 0 else "release", count)
        return count

    def retain(self) -> Self:
        """Take one more reference; raises ReferenceCountError on a dead object."""
        if not self._immortal:
            self._add(1)
        return self

    def release(self) -> bool:
        """Drop one reference; returns True when this was the last one."""
        if self._immortal:
            return False
        if self._add(-1) == 0:
            self._deallocate()
            return True
        return False

    def touch(self, hint: str | None = None) -> Self:
        """Record an access site for leak reports (ADVANCED and PARANOID levels)."""
        if self._tracker is not None:
            self._tracker.record(f"touch {hint}" if hint else "touch", self._refcnt)
        return self

    def lease(self) -> Lease[Self]:
        """Retain and wrap in a :class:`Lease` that releases exactly once:
        ``with image.lease() as leased:``."""
        return Lease(self.retain())

    def _deallocate(self) -> None:
        with _derived_lock:
            derived, self._derived = self._derived, None
        _live.pop(self._serial, None)
        _bump("deallocated")
        for value in (derived or {}).values():
            close = getattr(value, "close", None)
            if callable(close):
                close()

    # reads ---------------------------------------------------------------------------

    def check_live(self, what: str) -> None:
        """Raise ImageReleasedError if this object is dead; ``what`` names the read."""
        if self._refcnt <= 0:
            _bump("released_reads")
            raise ImageReleasedError(image=self.describe(), what=what, sites=self.sites())

    def derived(self, key: DerivedKey[T]) -> T:
        """The value ``key`` derives from this object, built on first use."""
        derived = self._derived
        value = derived.get(key, _MISSING) if derived is not None else _MISSING
        if value is _MISSING:
            with _derived_lock:
                self.check_live(f"derived {key.name}")
                if self._derived is None:
                    self._derived = {}
                value = self._derived.get(key, _MISSING)
                if value is _MISSING:
                    value = self._make(key)
                    self._derived[key] = value
        elif self._refcnt <= 0:
            self.check_live(f"derived {key.name}")
        return cast(T, value)

    def _make(self, key: DerivedKey[T]) -> T:
        pending = self._pending
        if pending is not None and key.follow is not None:
            values, change = pending
            previous = values.pop(key, _MISSING)
            if previous is not _MISSING:
                try:
                    return key.follow(previous, change, self)
                except Exception as error:
                    if _level is LeakDetectionLevel.PARANOID:
                        raise  # the test suite's level: a broken follow must fail loudly
                    logger.warning(
                        "derived_follow_failed",
                        key=key.name,
                        image=self.describe(),
                        error=f"{type(error).__name__}: {error}",
                        exc_info=error,
                    )
        return key.build(self)

    def inherit_derived(self, predecessor: RefCounted, change: object) -> None:
        """Follow every derived value of ``predecessor`` whose key knows how to.

        Called by the creator of this object (``MetadataDelta.apply``) while both objects
        are live and before this one is shared. A follow that needs another key's value
        asks ``derived()`` for it and gets it followed first, whatever the order.
        """
        with _derived_lock:
            source = predecessor._derived
            if not source:
                return
            values = {key: value for key, value in source.items() if key.follow is not None}
        if not values:
            return
        self._pending = (values, change)
        try:
            for key in list(values):
                self.derived(key)
        finally:
            self._pending = None

    def has_derived(self, key: DerivedKey[Any]) -> bool:
        """Whether derived state for ``key`` was computed for this object."""
        derived = self._derived
        return derived is not None and key in derived

    # leaks ---------------------------------------------------------------------------

    def __del__(self) -> None:
        if self._immortal or self._refcnt <= 0:
            return
        try:
            _live.pop(self._serial, None)
            tracker = self._tracker
            if tracker is None:
                return
            _bump("leaks")
            logger.warning(
                "image_leaked",
                image=self.describe(),
                ref_count=self._refcnt,
                message="LEAK: release() was not called before it was garbage-collected",
                sites=tracker.sites(),
            )
        except Exception:  # a finalizer must never raise, e.g. while the interpreter exits
            return


class Lease(Generic[R]):
    """One owned reference to a counted object, released exactly once.

    ``with lease as obj:`` yields the object and releases on exit, also on errors and
    cancellation. ``release()`` is idempotent for the lease; the object's own count
    stays strict. Every holder of images hands out leases (``x.lease()``); a creator
    wraps the reference it was born with: ``with Lease(delta.apply(p)) as image:``.
    """

    __slots__ = ("_obj", "_released")

    def __init__(self, obj: R) -> None:
        """Take ownership of one reference the caller already holds on ``obj``."""
        self._obj = obj
        self._released = False

    @property
    def value(self) -> R:
        """The leased object (ImageReleasedError once the lease was released)."""
        if self._released:
            raise ImageReleasedError(
                image=self._obj.describe(), what="a lease that was already released"
            )
        return self._obj

    @property
    def released(self) -> bool:
        """Whether this lease gave its reference back."""
        return self._released

    def release(self) -> None:
        """Give the reference back; idempotent (a second call does nothing)."""
        if not self._released:
            self._released = True
            self._obj.release()

    def __enter__(self) -> R:
        return self.value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"Lease({self._obj.describe()}, {state})"


def retain_all(objects: Iterable[R]) -> list[Lease[R]]:
    """Retain every object or none: on a failure the ones already retained are released.

    AutoMQ's composite image retain could half-succeed and leak; this cannot.
    """
    leases: list[Lease[R]] = []
    try:
        for obj in objects:
            leases.append(obj.lease())
    except BaseException:
        release_all(leases)
        raise
    return leases


def release_all(leases: Sequence[Lease[Any]]) -> None:
    """Release every lease, even if one of them raises; re-raises the first error."""
    first: BaseException | None = None
    for lease in leases:
        try:
            lease.release()
        except BaseException as exc:
            first = first or exc
    if first is not None:
        raise first
