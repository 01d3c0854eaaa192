"""One background task at a time: a Worker's lifetime, its progress adapter, cancel and outcome signals.

The runner holds no widgets; the window shows what its signals say (busy state, errors, cancel).
"""
from __future__ import annotations

import logging
import traceback
from typing import Any, Callable, Optional

from PyQt6 import QtCore, QtWidgets

from .workers import QtProgress, Worker

log = logging.getLogger(__name__)


def failure_message(exc: BaseException) -> str:
    """What the user reads: a ParallaxError's own message, else a one-line summary (the traceback goes to the log)."""
    from scene.errors import ParallaxError

    if isinstance(exc, ParallaxError):
        return str(exc)
    return f"Unexpected error: {type(exc).__name__}: {exc}\n\nThe full report is in the Log panel."


class TaskRunner(QtCore.QObject):
    """Runs ``fn(*args, progress=..., **kwargs)`` on a Worker; refuses a second task while one runs."""

    busy_changed = QtCore.pyqtSignal(bool, str)  # busy, task title
    refused = QtCore.pyqtSignal(str)  # title of the task still running
    failed = QtCore.pyqtSignal(str, str)  # task title, message for the user
    cancelled = QtCore.pyqtSignal(str)  # task title
    finished = QtCore.pyqtSignal(str, bool)  # task title, succeeded

    def __init__(self, parent: Optional[QtCore.QObject] = None):
        super().__init__(parent)
        self.progress = QtProgress(self)
        self.worker: Optional[Worker] = None

    def is_busy(self) -> bool:
        return self.worker is not None

    def run(self, title: str, fn: Callable[..., Any], *args,
            on_success: Optional[Callable[[Any], None]] = None, **kwargs) -> Optional[Worker]:
        """Start ``fn`` on a worker thread; None (and ``refused``) while another task runs.

        ``on_success(result)`` runs on the GUI thread; an exception from it is reported like a task failure.
        """
        if self.worker is not None:
            self.refused.emit(self.worker.title)
            return None
        self.progress.reset()
        worker = Worker(fn, *args, progress=self.progress, title=title, parent=self, **kwargs)
        worker.succeeded.connect(lambda result: self._succeeded(worker, result, on_success))
        worker.failed.connect(lambda exc, tb: self._failed(worker, exc, tb))
        worker.cancelled.connect(lambda: self._cancelled(worker))
        worker.finished.connect(lambda: self._done(worker))
        self.worker = worker
        self.busy_changed.emit(True, title)
        log.info("%s…", title)
        worker.start()
        return worker

    def _succeeded(self, worker: Worker, result, on_success) -> None:
        if on_success is not None:
            try:
                on_success(result)
            except Exception as exc:  # noqa: BLE001 - same reporting as a failure in the worker
                self._failed(worker, exc, traceback.format_exc())
                return
        if self.progress.should_stop():
            log.info("%s: stopped by the user", worker.title)
        self.finished.emit(worker.title, True)

    def _failed(self, worker: Worker, exc: BaseException, tb: str) -> None:
        from scene.errors import ParallaxError

        if isinstance(exc, ParallaxError):
            log.error("%s failed: %s", worker.title, exc)
        else:
            log.error("%s failed with an unexpected error:\n%s", worker.title, tb.rstrip())
        self.failed.emit(worker.title, failure_message(exc))
        self.finished.emit(worker.title, False)

    def _cancelled(self, worker: Worker) -> None:
        log.warning("%s: cancelled", worker.title)
        self.cancelled.emit(worker.title)
        self.finished.emit(worker.title, False)

    def _done(self, worker: Worker) -> None:
        if self.worker is worker:
            self.worker = None
        self.progress.flush()
        self.busy_changed.emit(False, "")
        worker.deleteLater()

    def cancel(self) -> bool:
        """Ask the running task to stop at its next check; False when nothing runs."""
        if self.worker is None:
            return False
        self.progress.request_stop()
        log.info("cancel requested for %s", self.worker.title)
        return True

    def stop(self, timeout_ms: int) -> bool:
        """Request a stop and block until the worker thread has ended. True if no thread is left running."""
        if self.worker is None:
            return True
        self.progress.request_stop()
        return self.worker.wait(timeout_ms)

    def wait(self, timeout_ms: int = 10000) -> bool:
        """Block until the running task (if any) ends, processing events. True if none is left."""
        timer = QtCore.QElapsedTimer()
        timer.start()
        while self.worker is not None and timer.elapsed() < timeout_ms:
            QtWidgets.QApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            QtCore.QThread.msleep(5)
        return self.worker is None
