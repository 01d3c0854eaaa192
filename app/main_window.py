"""The Parallax main window: menus, toolbar, docks, the 3D view, dialogs and messages.

The document (app/document.py) owns the scene and its files; the task runner (app/task_runner.py)
runs long work off the GUI thread. The window builds the widgets and reacts to their signals.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

from PyQt6 import QtCore, QtGui, QtWidgets

from .document import PROJECT_SUFFIX, Document
from .frame_browser import FrameBrowser
from .log_dock import LogView
from .scene_tree import SceneTree
from .settings import Settings
from .task_runner import TaskRunner
from .view3d import SceneView
from .workers import SceneWatcher, Worker

log = logging.getLogger(__name__)

APP_NAME = "Parallax"
VIDEO_FILTER = "Videos (*.mp4 *.avi *.mov *.mkv *.m4v *.webm);;All files (*)"
ANY_FILTER = ("Scenes and media (*.mp4 *.avi *.mov *.mkv *.m4v *.webm *.ply *.json *.txt *.csv *.bin);;"
              "All files (*)")


def _icon(widget: QtWidgets.QWidget, name: str) -> QtGui.QIcon:
    """Our line-art icon when one is drawn for ``name``, else the Qt standard pixmap of that name."""
    from .icons import icon

    drawn = icon(name)
    if not drawn.isNull():
        return drawn
    return widget.style().standardIcon(getattr(QtWidgets.QStyle.StandardPixmap, name))


def tool_button(parent: QtWidgets.QWidget, text: str, icon: str, tip: str, slot) -> QtWidgets.QToolButton:
    """A tab's command button: icon beside the text, ``slot()`` on click."""
    b = QtWidgets.QToolButton(parent)
    b.setText(text)
    b.setIcon(_icon(parent, icon))
    b.setToolTip(tip)
    b.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    b.setAutoRaise(False)
    b.clicked.connect(lambda _checked=False: slot())
    return b


class MainWindow(QtWidgets.QMainWindow):
    """One window over one Document. Long work runs in the TaskRunner; the window only observes the scene."""

    error_shown = QtCore.pyqtSignal(str, str)  # title, message (for tests and automation)
    task_finished = QtCore.pyqtSignal(str, bool)  # task title, succeeded

    def __init__(self, scene=None, settings: Optional[Settings] = None, confirm_discard: bool = True,
                 parent: Optional[QtWidgets.QWidget] = None):
        super().__init__(parent)
        self.settings = settings if settings is not None else Settings()
        self.confirm_discard = confirm_discard
        self.last_message_box: Optional[QtWidgets.QMessageBox] = None
        self.runner = TaskRunner(self)
        self.document = Document(self.runner, self.settings, scene, self)

        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.setDockOptions(QtWidgets.QMainWindow.DockOption.AnimatedDocks
                            | QtWidgets.QMainWindow.DockOption.AllowTabbedDocks)

        self.view = SceneView(self, point_size=self.settings.point_size())
        self.setCentralWidget(self.view)
        self.view.point_size_changed.connect(self.settings.set_point_size)

        self.tree = SceneTree(self)
        self.frames = FrameBrowser(self)
        self.log_view = LogView(self)
        self.tree_dock = self._dock("Scene", "sceneDock", self.tree, QtCore.Qt.DockWidgetArea.LeftDockWidgetArea)
        self.frames_dock = self._dock("Frames", "framesDock", self.frames,
                                      QtCore.Qt.DockWidgetArea.RightDockWidgetArea)
        self.frames_dock.visibilityChanged.connect(lambda visible: visible and self.frames.draw_if_pending())
        self.log_dock = self._dock("Log", "logDock", self.log_view, QtCore.Qt.DockWidgetArea.BottomDockWidgetArea)
        self.resizeDocks([self.tree_dock, self.frames_dock], [340, 440], QtCore.Qt.Orientation.Horizontal)
        self.resizeDocks([self.log_dock], [170], QtCore.Qt.Orientation.Vertical)
        self.log_view.attach()

        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self._connect_runner()
        self._connect_document()

        self.tree.visibility_changed.connect(self.view.set_visible)
        self.frames.current_image_changed.connect(self.view.select_image)
        self.watcher = SceneWatcher(self.scene, self)
        self.watcher.snapshot_ready.connect(self._on_snapshot)

        self._restore_window()
        self.watcher.refresh()

    # --- the document and the runner, as the window's public API --------------------------
    @property
    def scene(self):
        return self.document.scene

    @property
    def project_path(self) -> Optional[Path]:
        return self.document.project_path

    @property
    def current_path(self) -> Optional[Path]:
        return self.document.current_path

    @property
    def autosaver(self):
        return self.document.autosaver

    @property
    def worker(self) -> Optional[Worker]:
        return self.runner.worker

    @property
    def progress(self):
        return self.runner.progress

    def is_modified(self) -> bool:
        return self.document.is_modified()

    def is_busy(self) -> bool:
        return self.runner.is_busy()

    def load_scene(self, new_scene, path: Optional[Path] = None) -> None:
        """Show ``new_scene`` in this window (GUI thread). The window keeps its own Scene object."""
        self.document.load_scene(new_scene, path)

    def open_demo(self, **demo_kwargs) -> Optional[Worker]:
        """Generate the built-in demo scene if needed and open it; the view is fitted when it loads."""
        return self.document.open_demo(**demo_kwargs)

    def save_project_to(self, folder) -> Optional[Worker]:
        return self.document.save_project_to(folder)

    def export_to(self, path, fmt: str, name: Optional[str] = None) -> Optional[Worker]:
        return self.document.export_to(path, fmt, name)

    def run_task(self, title: str, fn: Callable[..., Any], *args,
                 on_success: Optional[Callable[[Any], None]] = None, **kwargs) -> Optional[Worker]:
        """Run ``fn(*args, progress=..., **kwargs)`` on a worker thread with progress in the status bar."""
        return self.runner.run(title, fn, *args, on_success=on_success, **kwargs)

    def wait_for_task(self, timeout_ms: int = 10000) -> bool:
        """Block until the running task (if any) ends, processing events. True if none is left."""
        return self.runner.wait(timeout_ms)

    # --- construction -------------------------------------------------------------------
    def _dock(self, title: str, name: str, widget: QtWidgets.QWidget, area) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, text: str, slot: Callable, shortcut=None, icon: Optional[str] = None,
                tip: str = "") -> QtGui.QAction:
        action = QtGui.QAction(text, self)
        if icon:
            action.setIcon(_icon(self, icon))
        if shortcut is not None:
            action.setShortcut(QtGui.QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        return action

    def _build_actions(self) -> None:
        SK = QtGui.QKeySequence.StandardKey
        a = self._action
        self.act_open_any = a("&Open…", self.open_any_dialog, SK.Open, "open",
                              "Open a video, image folder, project, model, PLY or trajectory")
        self.act_open_video = a("Open &Video…", self.open_video_dialog, "Ctrl+Shift+V", "video",
                                "Open a video file as a frame source")
        self.act_open_images = a("Open &Image Folder…", self.open_image_folder_dialog, "Ctrl+Shift+I",
                                 "images", "Open a folder of images (or a TUM/KITTI/EuRoC sequence)")
        self.act_open_project = a("Open &Project…", self.open_project_dialog, "Ctrl+Shift+O",
                                  "project", "Open a .parallax project folder")
        self.act_open_colmap = a("Open &COLMAP Model…", self.open_colmap_dialog, None,
                                 "model", "Open a COLMAP sparse model folder (text or binary)")
        self.act_open_transforms = a("Open &transforms.json…", self.open_transforms_dialog, None,
                                     "SP_FileDialogDetailedView", "Open a nerfstudio / instant-ngp transforms.json")
        self.act_save = a("&Save", self.save, SK.Save, "save", "Save the project")
        self.act_save_as = a("Save &As…", self.save_as_dialog, SK.SaveAs, None, "Save the project to a new folder")
        self.act_autosave = a("A&utosave Project", self._toggle_autosave, None, None,
                              "Save the project a few seconds after each change (once it has been saved)")
        self.act_autosave.setCheckable(True)
        self.act_autosave.setChecked(self.settings.autosave())
        self.act_export_ply = a("Point Cloud (&PLY)…", lambda: self.export_dialog("ply"), None, None,
                                "Export the sparse points or a point cloud as PLY")
        self.act_export_colmap = a("&COLMAP Model (text)…", lambda: self.export_dialog("colmap-text"), None, None,
                                   "Export cameras, images and points as a COLMAP text model")
        self.act_export_colmap_bin = a("COLMAP Model (&binary)…", lambda: self.export_dialog("colmap-bin"), None,
                                       None, "Export cameras, images and points as a COLMAP binary model")
        self.act_export_transforms = a("&transforms.json…", lambda: self.export_dialog("nerfstudio"), None, None,
                                       "Export registered cameras for nerfstudio")
        self.act_export_tum = a("T&UM Trajectory…", lambda: self.export_dialog("tum"), None, None,
                                "Export a trajectory in TUM format")
        self.act_export_kitti = a("&KITTI Trajectory…", lambda: self.export_dialog("kitti"), None, None,
                                  "Export a trajectory in KITTI format")
        self.act_quit = a("&Quit", self.close, SK.Quit, None, "Quit Parallax")
        self.act_fit = a("&Fit to Scene", self.view.fit_to_scene, "F", "fit",
                         "Fit the 3D view to the scene")
        self.act_reset_camera = a("&Reset Camera", self.view.reset_camera, "Home", "reset",
                                  "Reset the 3D camera to the default viewpoint")
        self.act_about = a("&About Parallax", self.about, None, None, "About Parallax")
        self.act_slam = a("&SLAM", self.show_slam_panel, "Ctrl+L", "SP_MediaPlay",
                          "Run live SLAM over the scene's frames")
        self.act_sfm = a("Structure from &Motion", self.show_sfm_panel, "Ctrl+M", "model",
                         "Reconstruct cameras and sparse points from a folder of images or the scene's frames")
        self.act_nerf = a("&NeRF", self.show_nerf_panel, "Ctrl+Shift+N", "SP_DesktopIcon",
                          "Train a NeRF on the scene's cameras, watch it learn, render and export it")
        self.act_cancel = a("Cancel", self.cancel_task, "Esc", "stop", "Cancel the running task")
        self.act_cancel.setEnabled(False)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.act_open_any)
        for act in (self.act_open_video, self.act_open_images, self.act_open_project, self.act_open_colmap,
                    self.act_open_transforms):
            file_menu.addAction(act)
        self.recent_menu = file_menu.addMenu("Recent &Files")
        self.recent_menu.aboutToShow.connect(self._rebuild_recent_menu)
        self._rebuild_recent_menu()
        file_menu.addSeparator()
        file_menu.addAction(self.act_save)
        file_menu.addAction(self.act_save_as)
        file_menu.addAction(self.act_autosave)
        self.export_menu = file_menu.addMenu("&Export")
        for act in (self.act_export_ply, self.act_export_colmap, self.act_export_colmap_bin,
                    self.act_export_transforms, self.act_export_tum, self.act_export_kitti):
            self.export_menu.addAction(act)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)

        view_menu = bar.addMenu("&View")
        for dock in (self.tree_dock, self.frames_dock, self.log_dock):
            view_menu.addAction(dock.toggleViewAction())
        self.view_menu = view_menu
        view_menu.addSeparator()
        view_menu.addAction(self.act_fit)
        view_menu.addAction(self.act_reset_camera)
        view_menu.addSeparator()
        view_menu.addAction(self.act_slam)
        view_menu.addAction(self.act_sfm)
        view_menu.addAction(self.act_nerf)

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.act_about)

    def _build_toolbar(self) -> None:
        tb = self.addToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setIconSize(QtCore.QSize(18, 18))
        tb.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tb.addAction(self.act_open_video)
        tb.addAction(self.act_open_images)
        tb.addAction(self.act_open_project)
        tb.addAction(self.act_open_colmap)
        tb.addSeparator()
        tb.addAction(self.act_save)
        export_button = QtWidgets.QToolButton(tb)
        export_button.setText("Export")
        export_button.setIcon(_icon(self, "export"))
        export_button.setToolTip("Export the scene")
        export_button.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        export_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        export_button.setMenu(self.export_menu)
        tb.addWidget(export_button)
        tb.addSeparator()
        tb.addAction(self.act_fit)
        tb.addAction(self.act_reset_camera)
        tb.addSeparator()
        tb.addAction(self.act_slam)
        tb.addAction(self.act_sfm)
        tb.addAction(self.act_nerf)
        self.main_toolbar = tb
        self.view_menu.insertAction(self.view_menu.actions()[3], tb.toggleViewAction())

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.summary_label = QtWidgets.QLabel("Empty scene", sb)
        self.stage_label = QtWidgets.QLabel("", sb)
        self.progress_bar = QtWidgets.QProgressBar(sb)
        self.progress_bar.setFixedWidth(220)
        self.progress_bar.setTextVisible(True)
        self.cancel_button = QtWidgets.QToolButton(sb)
        self.cancel_button.setDefaultAction(self.act_cancel)
        self.cancel_button.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        sb.addPermanentWidget(self.stage_label)
        sb.addPermanentWidget(self.progress_bar)
        sb.addPermanentWidget(self.cancel_button)
        sb.addPermanentWidget(self.summary_label)
        self._set_busy(False)

    def _restore_window(self) -> None:
        geometry, state = self.settings.window_geometry(), self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1600, 1000)
        if state is not None:
            self.restoreState(state)

    def _connect_runner(self) -> None:
        runner = self.runner
        runner.progress.progressed.connect(self._on_progress)
        runner.busy_changed.connect(self._set_busy)
        runner.refused.connect(lambda running: self.show_error(
            "Busy", f"“{running}” is still running. Wait for it or cancel it first.",
            icon=QtWidgets.QMessageBox.Icon.Information))
        runner.failed.connect(lambda title, message: self.show_error(f"{title} failed", message))
        runner.cancelled.connect(lambda title: self.statusBar().showMessage(f"{title}: cancelled", 5000))
        runner.finished.connect(self.task_finished)

    def _connect_document(self) -> None:
        doc = self.document
        doc.about_to_load.connect(self._on_about_to_load)
        doc.loaded.connect(self._on_loaded)
        doc.title_changed.connect(lambda _title: self._update_title())
        doc.opened.connect(self._on_opened)
        doc.saved.connect(self._on_saved)
        doc.exported.connect(lambda fmt, written: self.statusBar().showMessage(f"Exported {fmt} to {written}", 5000))

    # --- scene and document updates -----------------------------------------------------
    def _on_snapshot(self, snap) -> None:
        self.view.set_snapshot(snap)
        self.tree.update_snapshot(snap, self.view.is_visible, self.view.trajectory_colors)
        self.frames.set_snapshot(snap)
        self._update_summary(snap)
        self._update_title()  # the modified star follows scene changes

    def _update_summary(self, snap) -> None:
        n_reg = sum(1 for im in snap.images.values() if im.cam_from_world is not None)
        parts = [f"{len(snap.cameras)} camera{'s' if len(snap.cameras) != 1 else ''}",
                 f"{len(snap.images):,} images ({n_reg:,} registered)", f"{len(snap.points):,} points"]
        if snap.trajectories:
            parts.append(f"{len(snap.trajectories)} trajectories")
        self.summary_label.setText("  ·  ".join(parts))

    def _update_title(self) -> None:
        title = self.document.title()
        self.setWindowTitle(f"{title} — {APP_NAME}" if title else APP_NAME)

    def _on_about_to_load(self) -> None:
        self.view.reset_alignment()
        self.frames.reset()

    def _on_loaded(self) -> None:
        self.watcher.refresh()
        self.view.reset_camera()

    def _on_opened(self, path: Path) -> None:
        self._rebuild_recent_menu()
        self.statusBar().showMessage(f"Opened {path.name}", 5000)

    def _on_saved(self, folder: Path) -> None:
        self._rebuild_recent_menu()
        self.statusBar().showMessage(f"Saved {folder}", 5000)

    # --- task progress ------------------------------------------------------------------
    def _set_busy(self, busy: bool, title: str = "") -> None:
        self.progress_bar.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.stage_label.setVisible(busy)
        self.act_cancel.setEnabled(busy)
        self.act_cancel.setText("Cancel")
        if busy:
            self.progress_bar.setRange(0, 0)  # busy indicator until the first report
            self.stage_label.setText(title)
        else:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)

    def _on_progress(self, stage: str, done: int, total: int, message: str) -> None:
        if total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(min(max(done, 0), total))
            self.progress_bar.setFormat(f"{done:,} / {total:,}")
        else:
            self.progress_bar.setRange(0, 0)
        self.stage_label.setText(f"{stage}: {message}" if message else stage)

    def cancel_task(self) -> None:
        if not self.runner.cancel():
            return
        self.act_cancel.setEnabled(False)
        self.act_cancel.setText("Cancelling…")
        self.stage_label.setText("Cancelling…")

    def show_slam_panel(self):
        """Show the SLAM dock (created on first use, tabbed with the Frames dock) and return its panel."""
        if getattr(self, "slam_dock", None) is None:
            from .slam_panel import SlamPanel

            self.slam_panel = SlamPanel(self)
            self.slam_dock = self._dock("SLAM", "slamDock", self.slam_panel,
                                        QtCore.Qt.DockWidgetArea.RightDockWidgetArea)
            self.tabifyDockWidget(self.frames_dock, self.slam_dock)
        self.slam_dock.show()
        self.slam_dock.raise_()
        return self.slam_panel

    def show_sfm_panel(self):
        """Show the SfM dock (created on first use, tabbed with the Frames dock) and return its panel."""
        if getattr(self, "sfm_dock", None) is None:
            from .sfm_panel import SfmPanel

            self.sfm_panel = SfmPanel(self)
            self.sfm_dock = self._dock("SfM", "sfmDock", self.sfm_panel, QtCore.Qt.DockWidgetArea.RightDockWidgetArea)
            self.tabifyDockWidget(self.frames_dock, self.sfm_dock)
        self.sfm_dock.show()
        self.sfm_dock.raise_()
        return self.sfm_panel

    def show_nerf_panel(self):
        """Show the NeRF dock (created on first use, tabbed with the Frames dock) and return its panel."""
        if getattr(self, "nerf_dock", None) is None:
            from .nerf_panel import NerfPanel

            self.nerf_panel = NerfPanel(self)
            self.nerf_dock = self._dock("NeRF", "nerfDock", self.nerf_panel,
                                        QtCore.Qt.DockWidgetArea.RightDockWidgetArea)
            self.tabifyDockWidget(self.frames_dock, self.nerf_dock)
        self.nerf_dock.show()
        self.nerf_dock.raise_()
        return self.nerf_panel

    # --- messages -----------------------------------------------------------------------
    def show_error(self, title: str, message: str,
                   icon: QtWidgets.QMessageBox.Icon = QtWidgets.QMessageBox.Icon.Critical) -> QtWidgets.QMessageBox:
        """A window-modal, non-blocking message box (never a traceback)."""
        box = QtWidgets.QMessageBox(icon, title, message, QtWidgets.QMessageBox.StandardButton.Ok, self)
        box.setTextFormat(QtCore.Qt.TextFormat.PlainText)
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        self.last_message_box = box
        # `finished`, not `destroyed`: PyQt converting a half-destroyed box in a destroyed slot can segfault
        box.finished.connect(lambda _result: setattr(self, "last_message_box", None)
                             if self.last_message_box is box else None)
        box.open()
        self.error_shown.emit(title, message)
        return box

    def about(self) -> None:
        QtWidgets.QMessageBox.about(
            self, "About Parallax",
            "<h3>Parallax</h3><p>Monocular SLAM, incremental Structure-from-Motion and NeRF "
            "on one scene model.</p><p>Left drag orbits, middle drag pans, the wheel zooms. "
            "Drop videos, image folders, COLMAP models or projects onto the window to open them.</p>")

    # --- opening ------------------------------------------------------------------------
    def open_path(self, path) -> Optional[Worker]:
        """Open any supported path in a worker (after asking about unsaved changes)."""
        if not self._confirm_discard():
            return None
        return self.document.open_path(path)

    def _dialog_dir(self) -> str:
        return self.settings.last_directory()

    def open_any_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open", self._dialog_dir(), ANY_FILTER)
        if path:
            self.open_path(path)

    def open_video_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open Video", self._dialog_dir(), VIDEO_FILTER)
        if path:
            self.open_path(path)

    def open_image_folder_dialog(self) -> None:
        self._open_folder_dialog("Open Image Folder")

    def open_project_dialog(self) -> None:
        self._open_folder_dialog("Open Parallax Project (NAME.parallax folder)")

    def open_colmap_dialog(self) -> None:
        self._open_folder_dialog("Open COLMAP Model Folder")

    def _open_folder_dialog(self, title: str) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, title, self._dialog_dir())
        if path:
            self.open_path(path)

    def open_transforms_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open transforms.json", self._dialog_dir(),
                                                        "transforms (*.json);;All files (*)")
        if path:
            self.open_path(path)

    def _confirm_discard(self) -> bool:
        if not self.confirm_discard or not self.is_modified() or self.scene.version == 0:
            return True
        answer = QtWidgets.QMessageBox.question(
            self, "Unsaved changes", "The scene has unsaved changes. Save them first?",
            QtWidgets.QMessageBox.StandardButton.Save | QtWidgets.QMessageBox.StandardButton.Discard
            | QtWidgets.QMessageBox.StandardButton.Cancel, QtWidgets.QMessageBox.StandardButton.Save)
        if answer == QtWidgets.QMessageBox.StandardButton.Cancel:
            return False
        if answer == QtWidgets.QMessageBox.StandardButton.Save:
            worker = self.save()
            return worker is not None and self.wait_for_task(120000) and not self.is_modified()
        return True

    # --- recent files -------------------------------------------------------------------
    def _rebuild_recent_menu(self) -> None:
        menu = self.recent_menu
        menu.clear()
        recent = self.settings.recent_files()
        for i, path in enumerate(recent):
            p = Path(path)
            action = menu.addAction(f"&{(i + 1) % 10}  {p.name}  —  {p.parent}")
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _c=False, path=path: self.open_path(path))
        if not recent:
            empty = menu.addAction("No recent files")
            empty.setEnabled(False)
        menu.addSeparator()
        clear = menu.addAction("Clear Recent Files")
        clear.setEnabled(bool(recent))
        clear.triggered.connect(self._clear_recent)

    def _clear_recent(self) -> None:
        self.settings.clear_recent_files()
        self._rebuild_recent_menu()

    # --- saving and export --------------------------------------------------------------
    def save(self) -> Optional[Worker]:
        if self.project_path is None:
            return self.save_as_dialog()
        return self.save_project_to(self.project_path)

    def save_as_dialog(self) -> Optional[Worker]:
        start = str(Path(self._dialog_dir()) / ((self.current_path.stem if self.current_path else "scene")
                                                 + PROJECT_SUFFIX))
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save Project As", start,
                                                        f"Parallax project (*{PROJECT_SUFFIX})")
        if not path:
            return None
        return self.save_project_to(path)

    def _toggle_autosave(self) -> None:
        self.document.set_autosave(self.act_autosave.isChecked())

    def export_dialog(self, fmt: str) -> Optional[Worker]:
        snap = self.scene.snapshot()
        name = None
        if fmt in ("tum", "kitti"):
            names = list(snap.trajectories)
            if len(names) > 1:
                name, ok = QtWidgets.QInputDialog.getItem(self, "Export Trajectory", "Trajectory:", names, 0, False)
                if not ok:
                    return None
        elif fmt == "ply" and snap.clouds and not len(snap.points):
            names = list(snap.clouds)
            if len(names) > 1:
                name, ok = QtWidgets.QInputDialog.getItem(self, "Export Point Cloud", "Cloud:", names, 0, False)
                if not ok:
                    return None
        base = Path(self._dialog_dir())
        if fmt in ("colmap-text", "colmap-bin"):
            path = QtWidgets.QFileDialog.getExistingDirectory(self, "Export COLMAP Model Into Folder", str(base))
        else:
            suggestion, flt = {
                "ply": ("points.ply", "PLY point cloud (*.ply)"),
                "nerfstudio": ("transforms.json", "transforms.json (*.json)"),
                "tum": (f"{name or 'trajectory'}_tum.txt", "TUM trajectory (*.txt)"),
                "kitti": (f"{name or 'trajectory'}_kitti.txt", "KITTI poses (*.txt)"),
            }[fmt]
            path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export", str(base / suggestion), flt)
        if not path:
            return None
        return self.export_to(path, fmt, name)

    # --- drag and drop ------------------------------------------------------------------
    @staticmethod
    def _local_paths(mime: QtCore.QMimeData) -> list[str]:
        if not mime.hasUrls():
            return []
        return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        if self._local_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QtGui.QDragMoveEvent) -> None:
        if self._local_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        paths = self._local_paths(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        if len(paths) > 1:
            log.warning("%d items dropped; opening the first: %s", len(paths), paths[0])
        # Open after the drop returns so the file manager is not blocked by dialogs.
        QtCore.QTimer.singleShot(0, lambda: self.open_path(paths[0]))

    # --- closing ------------------------------------------------------------------------
    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        if not self._confirm_discard():
            event.ignore()
            return
        # A QThread destroyed while running aborts the process: never close under a live worker.
        if not self.runner.stop(30000):
            event.ignore()
            self.statusBar().showMessage("Still stopping the running task; close again in a moment", 5000)
            return
        if getattr(self, "slam_panel", None) is not None:
            self.slam_panel.shutdown()  # its worker thread must end before the window goes
        if getattr(self, "sfm_panel", None) is not None:
            self.sfm_panel.shutdown()
        if getattr(self, "nerf_panel", None) is not None:
            self.nerf_panel.shutdown()  # stops training (checkpoint kept) and the render child
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.document.close()
        self.log_view.detach()
        self.watcher.close()
        self.frames.reset()
        super().closeEvent(event)
