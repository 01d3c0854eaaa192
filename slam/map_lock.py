"""The lock around the SLAM map while local mapping runs on its own thread (Play mode).

Tracking must not wait for a whole keyframe's mapping (tens of milliseconds), so it takes the lock with
priority: local mapping holds the lock only between hand-over points, where ``yield_to_tracking`` gives the
map to a waiting tracker first, and it drops the lock entirely (``released``) while it computes on copies
(bundle adjustment's solve). ``NO_LOCK`` is the same interface doing nothing: the synchronous, deterministic
Step mode passes it through the same code.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

_HANDOVER_POLL_S = 0.0002


class MapLock:
    """A non-reentrant lock where ``priority()`` holders (tracking) go before ordinary holders (mapping)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._waiting = 0     # priority holders waiting for or holding the lock

    @contextmanager
    def priority(self):
        """Hold the map for one tracking step; a mapper at its next hand-over point lets this in first."""
        with self._count_lock:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count_lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self._lock.release()

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()

    def yield_to_tracking(self) -> None:
        """Called with the lock held: if tracking waits, let it run its step, then take the lock back."""
        if not self._waiting:
            return
        self._lock.release()
        try:
            while self._waiting:   # the tracker takes the lock and leaves the count in one go
                time.sleep(_HANDOVER_POLL_S)
        finally:
            self._lock.acquire()

    @contextmanager
    def released(self):
        """Called with the lock held: drop it for work on private copies, then take it back."""
        self._lock.release()
        try:
            yield
        finally:
            self._lock.acquire()


class _NoLock:
    """``MapLock``'s interface for a single thread: every call is a no-op."""

    @contextmanager
    def priority(self):
        yield

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def yield_to_tracking(self) -> None:
        return None

    @contextmanager
    def released(self):
        yield


NO_LOCK = _NoLock()
