"""The open document: one Scene, where it came from, whether it is saved, and its autosave.

Opening, saving and exporting are plain functions run through the TaskRunner; results come back
on the GUI thread and are announced through signals. No widgets here: dialogs and messages
belong to the window.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from PyQt6 import QtCore

from .settings import Settings
from .task_runner import TaskRunner
from .workers import Worker

log = logging.getLogger(__name__)

PROJECT_SUFFIX = ".parallax"
AUTOSAVE_DELAY_S = 5.0  # read when an Autosaver starts, so tests can shorten it


class Document(QtCore.QObject):
    """Owns the Scene object for the window's lifetime; loading replaces its content, never the object."""

    about_to_load = QtCore.pyqtSignal()  # before the scene content is replaced
    loaded = QtCore.pyqtSignal()  # after load_scene: the scene, paths and clean state are new
    opened = QtCore.pyqtSignal(object)  # Path, after open_path loaded it
    saved = QtCore.pyqtSignal(object)  # project folder (Path)
    exported = QtCore.pyqtSignal(str, object)  # format, written path
    title_changed = QtCore.pyqtSignal(str)  # title(): "name *", "name" or "" without a path

    def __init__(self, runner: TaskRunner, settings: Settings, scene=None,
                 parent: Optional[QtCore.QObject] = None):
        super().__init__(parent)
        from scene.model import Scene

        self.runner = runner
        self.settings = settings
        self.scene = scene if scene is not None else Scene()
        self.project_path: Optional[Path] = None
        self.current_path: Optional[Path] = None
        self.autosaver = None  # scene.autosave.Autosaver while autosave is on and the scene has a project
        self.autosave_enabled = settings.autosave()
        self._clean_version = self.scene.version

    # --- state --------------------------------------------------------------------------
    def is_modified(self) -> bool:
        return self.scene.version != self._clean_version

    def title(self) -> str:
        """The document part of the window title; empty when the scene has no path."""
        if self.current_path is None:
            return ""
        return f"{self.current_path.name}{' *' if self.is_modified() else ''}"

    def _mark_clean(self, version: int) -> None:
        self._clean_version = version
        self.title_changed.emit(self.title())

    def load_scene(self, new_scene, path: Optional[Path] = None) -> None:
        """Replace the scene's content with ``new_scene`` (GUI thread)."""
        from scene.project import is_project

        self._stop_autosave()  # the new content must not be autosaved into the old project
        self.about_to_load.emit()
        self.scene.replace_with(new_scene)
        self.current_path = Path(path) if path is not None else None
        self.project_path = self.current_path if path is not None and is_project(path) else None
        self.loaded.emit()
        self._mark_clean(self.scene.version)
        self._update_autosave()

    # --- autosave -----------------------------------------------------------------------
    def set_autosave(self, enabled: bool) -> None:
        self.autosave_enabled = bool(enabled)
        self.settings.set_autosave(self.autosave_enabled)
        self._update_autosave()

    def _stop_autosave(self) -> None:
        if self.autosaver is not None:
            self.autosaver.close()
            self.autosaver = None

    def _update_autosave(self) -> None:
        """Autosave runs only when switched on and the scene has a project folder to save into."""
        from scene.autosave import Autosaver

        if self.autosaver is not None and (not self.autosave_enabled or self.autosaver.folder != self.project_path):
            self._stop_autosave()
        if self.autosave_enabled and self.project_path is not None and self.autosaver is None:
            self.autosaver = Autosaver(self.scene, self.project_path, delay_s=AUTOSAVE_DELAY_S)
            log.info("autosave on: %s", self.project_path)

    def close(self) -> None:
        """Write any pending autosave and stop autosaving."""
        if self.autosaver is not None:
            self.autosaver.flush()
            self._stop_autosave()

    # --- opening ------------------------------------------------------------------------
    def open_path(self, path) -> Optional[Worker]:
        """Open any supported path in a worker; the scene is replaced when it has loaded."""
        path = Path(path).expanduser()
        self.settings.set_last_directory(str(path))

        def load(progress):
            from scene.io import open_path

            return open_path(path, progress=progress)

        def done(new_scene):
            self.load_scene(new_scene, path)
            self.settings.add_recent_file(str(path))
            summary = new_scene.summary()
            log.info("opened %s: %d cameras, %d images (%d registered), %d points, trajectories %s", path,
                     summary["cameras"], summary["images"], summary["registered"], summary["points3D"],
                     ", ".join(summary["trajectories"]) or "none")
            self.opened.emit(path)

        return self.runner.run(f"Opening {path.name}", load, on_success=done)

    def open_demo(self, **demo_kwargs) -> Optional[Worker]:
        """Generate the built-in demo scene if needed and open it."""

        def load(progress):
            import inspect

            from assets.demo_scene import ensure_demo
            from scene.io import open_path

            if "progress" in inspect.signature(ensure_demo).parameters:
                demo_kwargs.setdefault("progress", progress)
            folder = ensure_demo(**demo_kwargs)
            return folder, open_path(folder, progress=progress)

        def done(result):
            folder, new_scene = result
            self.load_scene(new_scene, Path(folder))
            log.info("demo scene opened from %s", folder)

        return self.runner.run("Opening the demo scene", load, on_success=done)

    # --- saving and export --------------------------------------------------------------
    def save_project_to(self, folder) -> Optional[Worker]:
        """Save into ``folder`` (``.parallax`` appended when missing); it becomes the project."""
        folder = Path(folder)
        if folder.suffix != PROJECT_SUFFIX:
            folder = folder.with_name(folder.name + PROJECT_SUFFIX)
        scene = self.scene
        version = scene.version  # changes made while saving stay unsaved

        def save(progress):
            from scene.project import save_project

            progress.report("save", 0, 1, folder.name)
            result = save_project(scene, folder)
            progress.report("save", 1, 1, folder.name)
            return result

        def done(_result):
            self.project_path = self.current_path = folder
            self._mark_clean(version)
            self._update_autosave()
            self.settings.set_last_directory(str(folder.parent))
            self.settings.add_recent_file(str(folder))
            log.info("project saved to %s", folder)
            self.saved.emit(folder)

        return self.runner.run(f"Saving {folder.name}", save, on_success=done)

    def export_to(self, path, fmt: str, name: Optional[str] = None) -> Optional[Worker]:
        """Export the scene as ``fmt`` (see scene.io.export_scene); ``name`` picks a trajectory or cloud."""
        path = Path(path)
        scene = self.scene

        def export(progress):
            from scene.io import export_scene

            progress.report("export", 0, 1, path.name)
            written = export_scene(scene, path, fmt, name=name)
            progress.report("export", 1, 1, path.name)
            return written

        def done(written):
            self.settings.set_last_directory(str(path))
            log.info("exported %s to %s", fmt, written)
            self.exported.emit(fmt, written)

        return self.runner.run(f"Exporting {fmt}", export, on_success=done)
