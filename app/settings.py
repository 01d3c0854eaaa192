"""Persistent GUI settings (QSettings, organisation and application "Parallax").

``PARALLAX_SETTINGS_DIR`` redirects them to ``$PARALLAX_SETTINGS_DIR/Parallax.ini``; tests
set it so that they never touch the user's settings.
"""
from __future__ import annotations

import os
from pathlib import Path

from PyQt6 import QtCore

SETTINGS_DIR_ENV = "PARALLAX_SETTINGS_DIR"
MAX_RECENT = 10
DEFAULT_POINT_SIZE = 3.0


def make_qsettings() -> QtCore.QSettings:
    folder = os.environ.get(SETTINGS_DIR_ENV)
    if folder:
        return QtCore.QSettings(str(Path(folder) / "Parallax.ini"), QtCore.QSettings.Format.IniFormat)
    return QtCore.QSettings(QtCore.QSettings.Format.IniFormat, QtCore.QSettings.Scope.UserScope,
                            "Parallax", "Parallax")


def _as_list(value) -> list[str]:
    # QSettings returns a str for a one-element list and None for an empty one.
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


class Settings:
    """Typed accessors over QSettings; every setter writes through immediately."""

    def __init__(self, qsettings: QtCore.QSettings | None = None):
        self.q = qsettings if qsettings is not None else make_qsettings()

    # --- recent files ---------------------------------------------------------------
    def recent_files(self) -> list[str]:
        return _as_list(self.q.value("recent_files", []))[:MAX_RECENT]

    def add_recent_file(self, path: str) -> list[str]:
        path = str(Path(path).expanduser().resolve())
        recent = [p for p in self.recent_files() if p != path]
        recent.insert(0, path)
        recent = recent[:MAX_RECENT]
        self.q.setValue("recent_files", recent)
        self.q.sync()
        return recent

    def clear_recent_files(self) -> None:
        self.q.setValue("recent_files", [])
        self.q.sync()

    # --- view -------------------------------------------------------------------------
    def point_size(self) -> float:
        try:
            value = float(self.q.value("view/point_size", DEFAULT_POINT_SIZE))
        except (TypeError, ValueError):
            return DEFAULT_POINT_SIZE
        return value if 0.5 <= value <= 30.0 else DEFAULT_POINT_SIZE

    def set_point_size(self, value: float) -> None:
        self.q.setValue("view/point_size", float(value))

    # --- project ----------------------------------------------------------------------
    def autosave(self) -> bool:
        return str(self.q.value("project/autosave", "false")).lower() == "true"

    def set_autosave(self, enabled: bool) -> None:
        self.q.setValue("project/autosave", "true" if enabled else "false")

    # --- SLAM -------------------------------------------------------------------------
    def slam_realtime(self) -> bool:
        """Play paces frames by their timestamps (the default, as ORB-SLAM's examples play a sequence), or
        feeds them as fast as tracking takes them."""
        return str(self.q.value("slam/realtime", "true")).lower() != "false"

    def set_slam_realtime(self, enabled: bool) -> None:
        self.q.setValue("slam/realtime", "true" if enabled else "false")

    # --- paths ------------------------------------------------------------------------
    def last_directory(self) -> str:
        folder = str(self.q.value("last_directory", "") or "")
        return folder if folder and Path(folder).is_dir() else str(Path.home())

    def set_last_directory(self, path: str) -> None:
        p = Path(path)
        self.q.setValue("last_directory", str(p if p.is_dir() else p.parent))

    # --- window -----------------------------------------------------------------------
    def window_geometry(self) -> QtCore.QByteArray | None:
        value = self.q.value("window/geometry")
        return value if isinstance(value, QtCore.QByteArray) else None

    def window_state(self) -> QtCore.QByteArray | None:
        value = self.q.value("window/state")
        return value if isinstance(value, QtCore.QByteArray) else None

    def save_window(self, geometry: QtCore.QByteArray, state: QtCore.QByteArray) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)
        self.q.sync()

    def sync(self) -> None:
        self.q.sync()
