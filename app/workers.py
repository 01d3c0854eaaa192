"""Running plain pipeline code off the GUI thread.

``QtProgress`` implements the progress hooks of scene/progress.py. Pipelines call it from
worker threads; it keeps only the latest report and hands it to the GUI thread through a
queued signal, at most ~20 times a second. ``Worker`` runs one plain function in a QThread
and reports its result or error back through signals.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any, Callable, Optional

from PyQt6 import QtCore

log = logging.getLogger(__name__)

MIN_REPORT_INTERVAL_S = 0.05  # 20 Hz


class ThrottledDelivery(QtCore.QObject):
    """Newest-only hand-over from any thread to the GUI thread, at most once per ``min_interval_s``.

    A producer calls ``notify()`` after changing its state (any thread); on the GUI thread ``produce()`` is
    called and its value, unless None, emitted as ``delivered``. Notifications that arrive while a delivery is
    on its way are folded into it, so a fast producer never floods the event loop.
    """

    delivered = QtCore.pyqtSignal(object)
    _poke = QtCore.pyqtSignal()

    def __init__(self, produce: Callable[[], Any], parent: Optional[QtCore.QObject] = None,
                 min_interval_s: float = MIN_REPORT_INTERVAL_S):
        super().__init__(parent)
        self._produce = produce
        self._lock = threading.Lock()
        self._pending = False
        self._min_interval_s = min_interval_s
        self._last_delivery = 0.0
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._deliver)
        # Queued: notify() runs on worker threads, delivery must happen on this object's thread.
        self._poke.connect(self._schedule, QtCore.Qt.ConnectionType.QueuedConnection)

    def notify(self) -> None:
        with self._lock:
            if self._pending:
                return  # a delivery is already on its way; it will carry the newest state
            self._pending = True
        self._poke.emit()

    def _schedule(self) -> None:
        wait_s = self._min_interval_s - (time.monotonic() - self._last_delivery)
        if wait_s <= 0:
            self._deliver()
        elif not self._timer.isActive():
            self._timer.start(max(1, int(wait_s * 1000)))

    def _deliver(self) -> None:
        with self._lock:
            self._pending = False
        value = self._produce()
        if value is None:
            return
        self._last_delivery = time.monotonic()
        self.delivered.emit(value)

    def flush(self) -> None:
        """Deliver the newest state now (used when a task ends)."""
        self._timer.stop()
        self._deliver()


class QtProgress(QtCore.QObject):
    """Thread-safe progress adapter: ``report``/``should_stop`` from any thread, signals on the GUI thread."""

    progressed = QtCore.pyqtSignal(str, int, int, str)  # stage, done, total, message (throttled, GUI thread)

    def __init__(self, parent: Optional[QtCore.QObject] = None, min_interval_s: float = MIN_REPORT_INTERVAL_S):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._latest: Optional[tuple[str, int, int, str]] = None
        self._stop = threading.Event()
        self._delivery = ThrottledDelivery(self.latest, self, min_interval_s)
        self._delivery.delivered.connect(lambda latest: self.progressed.emit(*latest))

    # --- the progress protocol (any thread) ---------------------------------------------
    def report(self, stage: str, done: int, total: int, message: str = "") -> None:
        with self._lock:
            self._latest = (str(stage), int(done), int(total), str(message or ""))
        self._delivery.notify()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    def reset(self) -> None:
        self._stop.clear()
        with self._lock:
            self._latest = None

    def latest(self) -> Optional[tuple[str, int, int, str]]:
        with self._lock:
            return self._latest

    def flush(self) -> None:
        """Deliver the newest report now (used when a task ends)."""
        self._delivery.flush()


class Worker(QtCore.QThread):
    """Runs ``fn(*args, progress=progress, **kwargs)`` on its own thread.

    Exactly one of ``succeeded(result)``, ``failed(exception, traceback_text)`` or
    ``cancelled()`` (the function raised scene.progress.Cancelled) is emitted, then
    QThread's ``finished``.
    """

    succeeded = QtCore.pyqtSignal(object)
    failed = QtCore.pyqtSignal(object, str)
    cancelled = QtCore.pyqtSignal()

    def __init__(self, fn: Callable[..., Any], *args, progress: Optional[QtProgress] = None,
                 title: str = "", parent: Optional[QtCore.QObject] = None, **kwargs):
        super().__init__(parent)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.progress = progress
        self.title = title or getattr(fn, "__name__", "task")
        self.result: Any = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:  # worker thread
        from scene.progress import Cancelled

        try:
            kwargs = dict(self.kwargs)
            if self.progress is not None:
                kwargs["progress"] = self.progress
            self.result = self.fn(*self.args, **kwargs)
        except Cancelled:
            self.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the GUI, never lost
            self.error = exc
            self.failed.emit(exc, traceback.format_exc())
        else:
            # A pipeline that stopped early at a step boundary returns a consistent partial result.
            self.succeeded.emit(self.result)


class SceneWatcher(QtCore.QObject):
    """Turns scene events (fired on any thread) into throttled snapshots on the GUI thread.

    Only the latest state matters: many events within one interval produce one snapshot.
    """

    snapshot_ready = QtCore.pyqtSignal(object)  # SceneSnapshot
    _poke = QtCore.pyqtSignal()

    def __init__(self, scene, parent: Optional[QtCore.QObject] = None, min_interval_s: float = MIN_REPORT_INTERVAL_S):
        super().__init__(parent)
        self.scene = scene
        self.reset_pending = False  # a SCENE_RESET arrived since the last snapshot
        self._lock = threading.Lock()
        self._min_interval_s = min_interval_s
        self._last = 0.0
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._refresh_if_changed)
        self._version: Optional[int] = None  # scene version of the last snapshot
        self._poke.connect(self._schedule, QtCore.Qt.ConnectionType.QueuedConnection)
        self._disconnect = scene.events.connect(self._on_event)

    def _on_event(self, event) -> None:  # any thread
        from scene.events import SCENE_RESET

        if event.kind == SCENE_RESET:
            with self._lock:
                self.reset_pending = True
        try:
            self._poke.emit()
        except RuntimeError:  # the watcher was deleted with its window
            pass

    def _schedule(self) -> None:
        if self._timer.isActive():
            return
        wait_s = self._min_interval_s - (time.monotonic() - self._last)
        self._timer.start(max(0, int(wait_s * 1000)))

    def _refresh_if_changed(self) -> None:
        # Events queued behind a snapshot that already holds their change (a batch delivers several at once)
        # would publish the same state again: every view would redo its work for nothing.
        with self._lock:
            reset_pending = self.reset_pending
        if reset_pending or self.scene.version != self._version:
            self.refresh()

    def refresh(self) -> None:
        """Take a snapshot now and publish it."""
        self._timer.stop()
        self._last = time.monotonic()
        snapshot = self.scene.snapshot()
        self._version = snapshot.version
        self.snapshot_ready.emit(snapshot)
        with self._lock:
            self.reset_pending = False

    def close(self) -> None:
        self._timer.stop()
        self._disconnect()
