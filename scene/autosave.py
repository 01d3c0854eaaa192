"""Autosave: save a scene to its project folder a few seconds after it last changed, off the caller's thread."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from .errors import ParallaxError
from .model import Scene

log = logging.getLogger(__name__)


class Autosaver:
    """Debounced saves: each change restarts the timer; a save runs on a timer thread.

    ``close()`` cancels a pending save and disconnects; ``flush()`` saves now if something changed.
    """

    def __init__(self, scene: Scene, folder, delay_s: float = 5.0):
        self._scene = scene
        self._folder = Path(folder)
        self._delay_s = delay_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._saving = threading.Lock()  # held while a save runs; close() waits on it
        self._closed = False
        self._dirty = False
        self.saves = 0
        self.last_error: str | None = None
        self._disconnect = scene.events.connect(self._on_change)

    @property
    def folder(self) -> Path:
        return self._folder

    def _on_change(self, _event) -> None:
        with self._lock:
            self._dirty = True
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self._delay_s, self.flush)
            self._timer.daemon = True
            self._timer.start()

    def flush(self) -> None:
        from .project import save_project

        with self._saving:
            with self._lock:
                if not self._dirty or self._closed:
                    return
                self._dirty = False
                timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            try:
                save_project(self._scene, self._folder)
                self.saves += 1
                self.last_error = None
            except ParallaxError as exc:  # keep the scene in memory; tell the user through the log
                self.last_error = str(exc)
                log.error("autosave failed: %s", exc)

    def close(self) -> None:
        """Stop autosaving; returns after any save already running has finished."""
        self._disconnect()
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        with self._saving:
            pass
