"""Plain-Python change events. Observers (the GUI) subscribe; nothing here knows about Qt."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

# Event kinds the scene emits.
CAMERAS_CHANGED = "cameras_changed"
IMAGES_ADDED = "images_added"
IMAGES_REMOVED = "images_removed"
POSES_UPDATED = "poses_updated"
POINTS_CHANGED = "points_changed"
TRAJECTORY_CHANGED = "trajectory_changed"
TRAJECTORY_REMOVED = "trajectory_removed"
CLOUD_CHANGED = "cloud_changed"
CLOUD_REMOVED = "cloud_removed"
NERF_RUN_CHANGED = "nerf_run_changed"
SOURCE_CHANGED = "source_changed"
SCENE_RESET = "scene_reset"


@dataclass(frozen=True)
class SceneEvent:
    kind: str
    names: tuple = ()
    payload: dict = field(default_factory=dict)


class EventEmitter:
    """Synchronous callbacks, called on the thread that changed the scene.

    A failing observer is logged and does not stop the others or the change itself.
    """

    def __init__(self) -> None:
        self._callbacks: list[Callable[[SceneEvent], Any]] = []
        self._blocked = 0
        self._pending: list[SceneEvent] = []

    def connect(self, callback: Callable[[SceneEvent], Any]) -> Callable[[], None]:
        self._callbacks.append(callback)
        return lambda: self.disconnect(callback)

    def disconnect(self, callback) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, event: SceneEvent) -> None:
        if self._blocked:
            self._pending.append(event)
            return
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:  # an observer bug must not corrupt the model
                log.exception("scene event observer failed on %s", event.kind)

    def batch(self):
        """Context manager: hold events and deliver each distinct one once at the end."""
        emitter = self

        class _Batch:
            def __enter__(self_inner):
                emitter._blocked += 1

            def __exit__(self_inner, *exc):
                emitter._blocked -= 1
                if emitter._blocked == 0:
                    pending, emitter._pending = emitter._pending, []
                    seen = set()
                    for event in pending:
                        key = (event.kind, event.names)
                        if key not in seen:
                            seen.add(key)
                            emitter.emit(event)
                return False

        return _Batch()
