"""Local mapping on its own thread (ORB-SLAM's LocalMapping thread) for Play mode.

``BackgroundMapper(process)`` runs ``process(item)`` for every submitted item, in order, on one daemon
thread. The tracker asks ``idle`` before it inserts a keyframe (monocular ORB-SLAM inserts none while
mapping is busy) and ``wait_idle`` before it reads or exports results. An exception in ``process`` is
raised in the caller's thread at its next ``submit``, ``wait_idle`` or ``raise_failure``, and again at every
later one: the item was left half done, so nothing built on it may go on until ``discard_failure``. It is
never lost: ``close`` raises it if no other call has.
"""
from __future__ import annotations

import threading
from collections import deque


class BackgroundMapper:
    def __init__(self, process, name: str = "slam-local-mapping"):
        self._process = process
        self._cond = threading.Condition()
        self._queue: deque = deque()
        self._busy = False
        self._closing = False
        self._error: BaseException | None = None
        self._error_raised = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._busy and not self._queue

    def submit(self, item) -> None:
        with self._cond:
            self._raise_pending()
            if self._closing:
                raise RuntimeError("local mapping thread is closed")
            self._queue.append(item)
            self._cond.notify_all()

    def wait_idle(self) -> None:
        with self._cond:
            while self._busy or self._queue:
                self._cond.wait()
            self._raise_pending()

    def raise_failure(self) -> None:
        """Raise the failure of an item, if one failed (without waiting for the queue)."""
        with self._cond:
            self._raise_pending()

    def discard_failure(self) -> None:
        """Wait for the thread to go idle and forget a failure: what it left half done has been thrown away."""
        with self._cond:
            while self._busy or self._queue:
                self._cond.wait()
            self._error, self._error_raised = None, False

    def close(self) -> None:
        """Finish the queued items, end the thread, raise what an item raised unless a call already has."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            if not self._error_raised:
                self._raise_pending()

    def _raise_pending(self) -> None:
        if self._error is not None:
            self._error_raised = True
            raise RuntimeError(f"local mapping failed: {self._error}") from self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._process(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                with self._cond:
                    self._error, self._error_raised = exc, False
                    self._queue.clear()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
