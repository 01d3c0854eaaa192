"""The NeRF tab: cameras, preset, budget and device; Start / Stop / Resume; live loss and PSNR; a preview render;
render paths with their preview in the 3D view; stills, video and point-cloud export; the list of runs.

The panel never trains or renders. Training runs in a child process watched by ``app.nerf_worker.TrainingWorker``
(a QThread that posts ``TrainSnapshot`` objects); previews and exports run in the ``app.nerf_worker`` child
driven by ``OutputProcess`` (QProcess). torch is loaded by those children only, never by the GUI process.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from PyQt6 import QtCore, QtGui, QtWidgets

from . import style
from . import view_geometry as vg
from .image_plot import image_plot, show_pixels
from .live_overlay import overlay_gl_options
from .snapshot_signature import drawable_signature
from .nerf_worker import (OutputProcess, TrainingWorker, TrainJob, TrainSnapshot, camera_fields, camera_sets,
                          load_import, path_poses, pose_fields, read_run_record, run_dir_of, training_scene)

log = logging.getLogger(__name__)

PLOT_UPDATE_INTERVAL_S = 0.5  # axis painting is the GUI thread's main cost (see the SLAM tab)
LABEL_UPDATE_INTERVAL_S = 0.25
PLOT_STAGGER_MS = 70
PREVIEW_MAX_SIZE = 96  # preview renders are small: a CPU renders ~1k rays/s per core
PATH_RGBA = (1.0, 0.55, 0.1, 1.0)  # orange: no trajectory in the palette uses it
LOSS_COLOR = "#6cb2f0"
PSNR_COLOR = "#40d660"
EVAL_COLOR = "#f0b429"
STATE_COLORS = {"idle": "#8a8f98", "preparing": "#6cb2f0", "starting": "#6cb2f0", "training": "#40d660",
                "stopping": "#f0b429", "stopped": "#f0b429", "finished": "#40d660", "failed": "#ff6b6b",
                "created": "#8a8f98"}
CAMERA_SOURCES = (("sfm", "Scene cameras (SfM / imported)"), ("slam", "SLAM keyframes"),
                  ("file", "transforms.json / COLMAP model…"))
PATH_KINDS = (("orbit", "Orbit around the scene centre"), ("slam", "Along the SLAM trajectory"),
              ("sfm", "Along the SfM cameras"), ("between", "Between chosen cameras"))


def _fmt_duration(seconds: Optional[float]) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _fmt_rate(rays: Optional[float]) -> str:
    if rays is None:
        return "–"
    return f"{rays / 1000:,.1f} k rays/s" if rays >= 1000 else f"{rays:,.0f} rays/s"


class PathOverlay:
    """The render path drawn in the main 3D view: a polyline through the camera centres and a few frusta."""

    def __init__(self, view):
        self.view = view
        self._items: dict[str, gl.GLLinePlotItem] = {}
        self._world = None  # (world_from_cam rotations (N,3,3), centres (N,3), camera)

    def set_path(self, cams_from_world, camera) -> None:
        if not cams_from_world:
            self.clear()
            return
        rot = np.array([p.rotation.T for p in cams_from_world])
        centres = np.array([p.center() for p in cams_from_world])
        self._world = (rot, centres, camera)
        self.redraw()

    def redraw(self) -> None:
        if self._world is None:
            return
        rot, centres, camera = self._world
        view_rot = getattr(self.view, "_view_from_world", None)
        view_rot = np.eye(3) if view_rot is None else view_rot
        pos = centres @ view_rot.T
        diag = float(np.linalg.norm(np.ptp(pos, axis=0))) if len(pos) > 1 else 1.0
        size = max(diag * 0.04, 1e-3)
        step = max(1, len(rot) // 12)
        idx = np.arange(0, len(rot), step)
        shape = (vg.frustum_corners_cam(*camera.focal_xy, *camera.principal_point, camera.width, camera.height, size)
                 if camera is not None else vg.frustum_corners_cam(1.0, 1.0, 0.6667, 0.5, 4, 3, size))
        frusta = vg.frustum_segments(np.einsum("ij,njk->nik", view_rot, rot[idx]), pos[idx], shape)
        self._set("line", pos.astype(np.float32), 3.0, "line_strip")
        self._set("frusta", frusta.astype(np.float32), 1.5, "lines")
        self.view.gl.update()

    def _set(self, name: str, pos, width: float, mode: str) -> None:
        item = self._items.get(name)
        if item is None:
            item = gl.GLLinePlotItem(pos=pos, color=PATH_RGBA, width=width, mode=mode, antialias=True)
            item.setGLOptions(overlay_gl_options())
            item.setDepthValue(10)
            self.view.gl.addItem(item)
            self._items[name] = item
        else:
            item.setData(pos=pos, color=PATH_RGBA, width=width, mode=mode)

    def clear(self) -> None:
        for item in self._items.values():
            self.view.gl.removeItem(item)
        self._items.clear()
        self._world = None
        self.view.gl.update()

    def item_names(self) -> list[str]:
        return list(self._items)


class NerfPanel(QtWidgets.QWidget):
    """The NeRF dock's widget. ``window`` is the MainWindow (its document, scene, task runner and 3D view)."""

    snapshot_applied = QtCore.pyqtSignal(object)  # TrainSnapshot, after the widgets show it (tests)
    run_recorded = QtCore.pyqtSignal(object)  # the scene's NerfRun after a run ended
    preview_shown = QtCore.pyqtSignal(str)  # PNG path of the preview now shown
    output_finished = QtCore.pyqtSignal(str, dict)  # op, result

    def __init__(self, window, parent: Optional[QtWidgets.QWidget] = None):
        super().__init__(parent)
        self.window = window
        self.worker: Optional[TrainingWorker] = None
        self.snapshot: Optional[TrainSnapshot] = None
        self.devices: Optional[dict] = None  # {"cuda": bool, "mps": bool, "cpu": True} once the probe answered
        self.runs_root: Optional[Path] = None  # where new runs go; None: the project's nerf/ folder or the cache
        self.train_options: dict = {}  # extra start_training keywords for every run (tests: smaller batches)
        self.import_path: Optional[Path] = None
        self.selected_run: Optional[Path] = None
        self.overlay = PathOverlay(window.view)
        self.outputs = OutputProcess(self)
        self.outputs.progressed.connect(self._on_output_progress)
        self.outputs.answered.connect(self._on_output_answer)
        self._requests: dict[int, str] = {}  # output request id -> op
        self._last_plot_update = 0.0
        self._last_label_update = 0.0
        self._last_preview_step = -1
        self._sets = {"sfm": [], "slam": []}
        self._runs_signature = None
        self._camera_signature = None
        self._device_probe: Optional[QtCore.QProcess] = None
        self._build()
        window.watcher.snapshot_ready.connect(self._on_scene_snapshot)
        window.document.about_to_load.connect(self._on_about_to_load)
        if window.view.snapshot is not None:
            self._on_scene_snapshot(window.view.snapshot)
        self._refresh_presets()
        self._probe_devices()
        self._apply_state(None)

    # --- construction ---------------------------------------------------------------------
    def _button(self, text: str, icon: str, tip: str, slot) -> QtWidgets.QToolButton:
        from .main_window import tool_button  # main_window creates this panel: import it lazily

        return tool_button(self, text, icon, tip, slot)

    @staticmethod
    def _dim(text: str, parent) -> QtWidgets.QLabel:
        label = QtWidgets.QLabel(text, parent)
        label.setStyleSheet("color:#8a8f98")
        return label

    def _plot(self, left: str, color: str) -> pg.PlotWidget:
        plot = pg.PlotWidget(self)
        plot.setBackground(style.qcolor(style.VIEW_BACKGROUND))
        p = plot.getPlotItem()
        p.setMenuEnabled(False)
        p.hideButtons()
        p.showGrid(x=True, y=True, alpha=0.15)
        p.setLabel("left", left, color=color)
        p.setMouseEnabled(False, False)
        plot.setMinimumHeight(110)
        return plot

    def _build(self) -> None:
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 6)
        outer.setSpacing(6)
        self.tabs = QtWidgets.QTabWidget(self)
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self._build_train_tab(), "Train")
        self.tabs.addTab(self._build_render_tab(), "Render && export")
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical, self)
        split.addWidget(self.tabs)
        split.addWidget(self._build_runs())
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        outer.addWidget(split, 1)

    def _build_train_tab(self) -> QtWidgets.QWidget:
        page = QtWidgets.QWidget(self)
        layout = QtWidgets.QVBoxLayout(page)
        layout.setContentsMargins(2, 6, 2, 2)
        layout.setSpacing(6)

        form = QtWidgets.QFormLayout()
        form.setLabelAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        form.setHorizontalSpacing(8)
        form.setVerticalSpacing(4)
        cams = QtWidgets.QHBoxLayout()
        self.camera_box = QtWidgets.QComboBox(page)
        for key, text in CAMERA_SOURCES:
            self.camera_box.addItem(text, key)
        self.camera_box.setToolTip("Which posed cameras (and their images) the NeRF is trained on")
        self.camera_box.activated.connect(self._camera_source_chosen)
        self.camera_box.currentIndexChanged.connect(lambda _i: self._update_camera_info())
        cams.addWidget(self.camera_box, 1)
        form.addRow("Cameras", cams)
        self.camera_info = self._dim("", page)
        self.camera_info.setWordWrap(True)
        form.addRow("", self.camera_info)

        self.preset_box = QtWidgets.QComboBox(page)
        self.preset_box.currentIndexChanged.connect(lambda _i: self._update_preset_info())
        form.addRow("Preset", self.preset_box)
        self.preset_info = self._dim("", page)
        form.addRow("", self.preset_info)

        budget = QtWidgets.QHBoxLayout()
        self.budget_box = QtWidgets.QSpinBox(page)
        self.budget_box.setRange(1, 1_000_000)
        self.budget_box.setValue(2000)
        self.budget_box.setGroupSeparatorShown(True)
        self.budget_unit = QtWidgets.QComboBox(page)
        self.budget_unit.addItems(["iterations", "minutes"])
        self.budget_unit.currentIndexChanged.connect(self._budget_unit_changed)
        self.budget_box.setToolTip("Training budget: a number of iterations, or minutes of training")
        budget.addWidget(self.budget_box, 1)
        budget.addWidget(self.budget_unit)
        form.addRow("Budget", budget)

        device = QtWidgets.QHBoxLayout()
        self.device_box = QtWidgets.QComboBox(page)
        for name in ("auto", "cpu", "cuda"):
            self.device_box.addItem(name, name)
        self.device_box.setToolTip("auto picks CUDA, then Apple MPS, then the CPU")
        self.device_box.currentIndexChanged.connect(lambda _i: self._refresh_presets())
        self.device_info = self._dim("detecting…", page)
        device.addWidget(self.device_box)
        device.addWidget(self.device_info, 1)
        form.addRow("Device", device)
        layout.addLayout(form)

        controls = QtWidgets.QHBoxLayout()
        controls.setSpacing(4)
        self.start_button = self._button("Start", "SP_MediaPlay", "Train a new NeRF run on the chosen cameras",
                                         self.start)
        self.stop_button = self._button("Stop", "SP_MediaStop", "Stop after the current step; the checkpoint is kept",
                                        self.stop)
        self.resume_button = self._button("Resume", "SP_MediaSeekForward",
                                          "Continue the selected run from its last checkpoint", self.resume)
        for b in (self.start_button, self.stop_button, self.resume_button):
            controls.addWidget(b)
        controls.addStretch(1)
        self.state_label = QtWidgets.QLabel(self)
        self.state_label.setStyleSheet("font-weight:600")
        controls.addWidget(self.state_label)
        layout.addLayout(controls)

        self.progress = QtWidgets.QProgressBar(page)
        self.progress.setTextVisible(True)
        self.progress.setMaximumHeight(16)
        layout.addWidget(self.progress)

        grid = QtWidgets.QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(2)
        self.values: dict[str, QtWidgets.QLabel] = {}
        fields = [("loss", "Loss"), ("psnr", "PSNR (train / eval)"), ("rays", "Speed"), ("eta", "ETA"),
                  ("elapsed", "Elapsed"), ("checkpoint", "Checkpoint")]
        for i, (key, title) in enumerate(fields):
            value = QtWidgets.QLabel("–", page)
            value.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setStyleSheet("font-weight:600")
            self.values[key] = value
            grid.addWidget(self._dim(title, page), i // 2, (i % 2) * 2)
            grid.addWidget(value, i // 2, (i % 2) * 2 + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        layout.addLayout(grid)
        self.message_label = QtWidgets.QLabel("", page)
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.message_label)

        plots = QtWidgets.QHBoxLayout()
        plots.setSpacing(4)
        self.loss_plot = self._plot("loss", LOSS_COLOR)
        self.loss_plot.getPlotItem().setLogMode(y=True)
        self.loss_plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)
        self.loss_curve = self.loss_plot.getPlotItem().plot(pen=pg.mkPen(LOSS_COLOR, width=1.5))
        self.psnr_plot = self._plot("PSNR (dB)", PSNR_COLOR)
        self.psnr_curve = self.psnr_plot.getPlotItem().plot(pen=pg.mkPen(PSNR_COLOR, width=1.5), name="train")
        self.eval_curve = self.psnr_plot.getPlotItem().plot(pen=None, symbol="o", symbolSize=5,
                                                             symbolBrush=EVAL_COLOR, symbolPen=None, name="eval")
        for plot in (self.loss_plot, self.psnr_plot):
            plot.getPlotItem().setLabel("bottom", "step")
        plots.addWidget(self.loss_plot, 1)
        plots.addWidget(self.psnr_plot, 1)
        layout.addLayout(plots, 2)

        prev = QtWidgets.QHBoxLayout()
        prev.setSpacing(4)
        prev.addWidget(self._dim("Preview from", page))
        self.preview_camera_box = QtWidgets.QComboBox(page)
        self.preview_camera_box.setToolTip("The scene camera the preview is rendered from")
        self.preview_camera_box.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preview_camera_box.setMinimumContentsLength(10)
        prev.addWidget(self.preview_camera_box, 1)
        prev.addWidget(self._dim("every", page))
        self.preview_every_box = QtWidgets.QSpinBox(page)
        self.preview_every_box.setRange(0, 100000)
        self.preview_every_box.setValue(200)
        self.preview_every_box.setSuffix(" steps")
        self.preview_every_box.setSpecialValueText("never")
        self.preview_every_box.setToolTip("Refresh the preview when a checkpoint this many steps after the last "
                                          "preview is written (0: only on request)")
        prev.addWidget(self.preview_every_box)
        self.preview_button = self._button("Render", "SP_BrowserReload", "Render the preview now (last checkpoint)",
                                           self.request_preview)
        prev.addWidget(self.preview_button)
        layout.addLayout(prev)

        self.preview_view, self.preview_item = image_plot(page)
        p = self.preview_view.getPlotItem()
        self.preview_text = pg.TextItem("No preview yet: it needs a checkpoint", color="#8a8f98", anchor=(0.5, 0.5))
        p.addItem(self.preview_text)
        self.preview_view.setMinimumHeight(140)
        layout.addWidget(self.preview_view, 3)
        self.preview_label = self._dim("", page)
        layout.addWidget(self.preview_label)
        return page

    def _build_render_tab(self) -> QtWidgets.QWidget:
        page = QtWidgets.QWidget(self)
        layout = QtWidgets.QVBoxLayout(page)
        layout.setContentsMargins(2, 6, 2, 2)
        layout.setSpacing(6)
        self.render_run_label = self._dim("", page)
        self.render_run_label.setWordWrap(True)
        layout.addWidget(self.render_run_label)

        path_group = QtWidgets.QGroupBox("Camera path", page)
        form = QtWidgets.QFormLayout(path_group)
        form.setVerticalSpacing(4)
        self.path_box = QtWidgets.QComboBox(path_group)
        for key, text in PATH_KINDS:
            self.path_box.addItem(text, key)
        self.path_box.currentIndexChanged.connect(lambda _i: self.update_path_preview())
        form.addRow("Path", self.path_box)
        frames = QtWidgets.QHBoxLayout()
        self.frames_box = QtWidgets.QSpinBox(path_group)
        self.frames_box.setRange(2, 10000)
        self.frames_box.setValue(60)
        self.frames_box.valueChanged.connect(lambda _v: self.update_path_preview())
        self.fps_box = QtWidgets.QSpinBox(path_group)
        self.fps_box.setRange(1, 120)
        self.fps_box.setValue(24)
        self.fps_box.setSuffix(" fps")
        frames.addWidget(self.frames_box, 1)
        frames.addWidget(self.fps_box)
        form.addRow("Frames", frames)
        self.path_cameras = QtWidgets.QListWidget(path_group)
        self.path_cameras.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.path_cameras.setToolTip("Cameras a \"between\" path passes through, in order, and the cameras "
                                     "Render stills renders (Ctrl+click to choose several)")
        self.path_cameras.itemSelectionChanged.connect(self.update_path_preview)
        self.path_cameras.setMaximumHeight(120)
        form.addRow("Cameras", self.path_cameras)
        self.show_path_box = QtWidgets.QCheckBox("Show the path in the 3D view", path_group)
        self.show_path_box.setChecked(True)
        self.show_path_box.toggled.connect(lambda _on: self.update_path_preview())
        form.addRow("", self.show_path_box)
        self.path_info = self._dim("", path_group)
        self.path_info.setWordWrap(True)
        form.addRow("", self.path_info)
        layout.addWidget(path_group)

        out_group = QtWidgets.QGroupBox("Export", page)
        grid = QtWidgets.QGridLayout(out_group)
        grid.setVerticalSpacing(4)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        self.video_button = self._button("Render video", "video", "Render the camera path as an MP4 video",
                                         self.export_video)
        self.stills_button = self._button("Render stills", "images",
                                          "Render PNG stills at the chosen cameras (or the preview camera)",
                                          self.export_stills)
        self.cloud_button = self._button("Point cloud", "model",
                                         "Sample a point cloud from the NeRF and add it to the scene as \"nerf\"",
                                         self.export_point_cloud)
        self.points_box = QtWidgets.QSpinBox(out_group)
        self.points_box.setRange(1000, 10_000_000)
        self.points_box.setSingleStep(10000)
        self.points_box.setValue(100000)
        self.points_box.setGroupSeparatorShown(True)
        self.points_box.setSuffix(" points")
        for b in (self.video_button, self.stills_button, self.cloud_button):
            b.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)
        grid.addWidget(self.video_button, 0, 0)
        grid.addWidget(self.stills_button, 0, 1)
        grid.addWidget(self.cloud_button, 1, 0)
        grid.addWidget(self.points_box, 1, 1)
        self.output_progress = QtWidgets.QProgressBar(out_group)
        self.output_progress.setMaximumHeight(16)
        self.output_cancel = self._button("Cancel", "stop", "Stop the render", self.cancel_output)
        grid.addWidget(self.output_progress, 2, 0)
        grid.addWidget(self.output_cancel, 2, 1)
        self.output_label = QtWidgets.QLabel("", out_group)
        self.output_label.setWordWrap(True)
        self.output_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        grid.addWidget(self.output_label, 3, 0, 1, 2)
        layout.addWidget(out_group)
        layout.addStretch(1)
        self._set_output_busy(None)
        return page

    def _build_runs(self) -> QtWidgets.QWidget:
        box = QtWidgets.QGroupBox("Runs", self)
        layout = QtWidgets.QVBoxLayout(box)
        layout.setContentsMargins(4, 4, 4, 4)
        self.runs = QtWidgets.QTreeWidget(box)
        self.runs.setHeaderLabels(["Run", "Preset", "Status", "Steps", "PSNR"])
        self.runs.setRootIsDecorated(False)
        self.runs.setAlternatingRowColors(True)
        self.runs.setUniformRowHeights(True)
        self.runs.setMinimumHeight(70)
        header = self.runs.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        for col in range(1, 5):
            header.setSectionResizeMode(col, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.runs.itemSelectionChanged.connect(self._run_selected)
        layout.addWidget(self.runs)
        return box

    # --- the scene ------------------------------------------------------------------------
    def _on_about_to_load(self) -> None:
        self.shutdown()
        self.selected_run = None
        self._runs_signature = None
        self._camera_signature = None

    def _on_scene_snapshot(self, snap) -> None:
        self._update_runs(snap)
        signature = drawable_signature(snap)
        if signature == self._camera_signature:
            return  # a run recorded, a render added: cameras, paths and their preview are as they were
        self._camera_signature = signature
        self._sets = camera_sets(snap)
        for index in range(self.camera_box.count()):
            key = self.camera_box.itemData(index)
            if key in self._sets:
                n = len(self._sets[key])
                text = dict(CAMERA_SOURCES)[key]
                self.camera_box.setItemText(index, f"{text} — {n}")
        self._update_camera_info()
        self._update_camera_lists(snap)
        self.overlay.redraw()  # the view may have re-aligned
        self.update_path_preview()

    def _registered(self, snap=None):
        snap = snap or self.window.view.snapshot or self.window.scene.snapshot()
        return snap, sorted((im for im in snap.images.values() if im.cam_from_world is not None),
                            key=lambda im: (im.name, im.image_id))

    def _update_camera_lists(self, snap) -> None:
        _, registered = self._registered(snap)
        ids = [im.image_id for im in registered]
        current = self.preview_camera_box.currentData()
        if [self.preview_camera_box.itemData(i) for i in range(self.preview_camera_box.count())] != ids:
            with QtCore.QSignalBlocker(self.preview_camera_box):
                self.preview_camera_box.clear()
                for im in registered:
                    self.preview_camera_box.addItem(im.name, im.image_id)
                if current in ids:
                    self.preview_camera_box.setCurrentIndex(ids.index(current))
        chosen = {item.data(QtCore.Qt.ItemDataRole.UserRole) for item in self.path_cameras.selectedItems()}
        listed = [self.path_cameras.item(i).data(QtCore.Qt.ItemDataRole.UserRole)
                  for i in range(self.path_cameras.count())]
        if listed != ids:
            with QtCore.QSignalBlocker(self.path_cameras):
                self.path_cameras.clear()
                for im in registered:
                    item = QtWidgets.QListWidgetItem(im.name)
                    item.setData(QtCore.Qt.ItemDataRole.UserRole, im.image_id)
                    self.path_cameras.addItem(item)
                    item.setSelected(im.image_id in chosen)

    def _update_camera_info(self) -> None:
        key = self.camera_box.currentData()
        if key == "file":
            self.camera_info.setText(f"{self.import_path}" if self.import_path else "Choose a file…")
        else:
            n = len(self._sets.get(key, []))
            what = "SLAM keyframes" if key == "slam" else "registered images"
            self.camera_info.setText(f"{n} {what}" + ("" if n >= 3 else " — at least 3 are needed; "
                                                      + ("run SLAM first" if key == "slam" else
                                                         "run SfM or open a model with poses")))
        self._apply_state(self.snapshot)

    def _camera_source_chosen(self, index: int) -> None:
        if self.camera_box.itemData(index) != "file":
            return
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Cameras for NeRF training", self.window.settings.last_directory(),
            "transforms.json or COLMAP cameras (*.json cameras.bin cameras.txt);;All files (*)")
        if path:
            self.set_import_path(path)

    def set_import_path(self, path) -> None:
        self.import_path = Path(path)
        self.camera_box.setCurrentIndex(self.camera_box.findData("file"))
        self._update_camera_info()

    # --- devices and presets --------------------------------------------------------------
    def _probe_devices(self) -> None:
        """torch says which devices exist; it loads in a child so the GUI does not pay its import."""
        import sys

        probe = QtCore.QProcess(self)
        probe.setWorkingDirectory(str(Path(__file__).resolve().parents[1]))
        probe.finished.connect(lambda code, _s, p=probe: self._devices_probed(p, code))
        probe.start(sys.executable, ["-c", "import json; from nerf.device import detect_devices; "
                                           "print(json.dumps(detect_devices()))"])
        self._device_probe = probe

    def _devices_probed(self, probe: QtCore.QProcess, code: int) -> None:
        import json

        text = bytes(probe.readAllStandardOutput()).decode(errors="replace").strip().splitlines()
        try:
            devices = json.loads(text[-1]) if code == 0 and text else None
        except ValueError:
            devices = None
        if devices is None:
            log.warning("NeRF: torch's device probe failed; assuming the CPU only")
            devices = {"cuda": False, "mps": False, "cpu": True}
        self.set_devices(devices)
        probe.deleteLater()
        self._device_probe = None

    def set_devices(self, devices: dict) -> None:
        self.devices = dict(devices)
        found = [d.upper() for d in ("cuda", "mps") if devices.get(d)]
        self.device_info.setText(("found: " + ", ".join(found)) if found else "no GPU found: the CPU trains")
        model = self.device_box.model()
        for index in range(self.device_box.count()):
            name = self.device_box.itemData(index)
            item = model.item(index)
            ok = name in ("auto", "cpu") or bool(devices.get(name))
            item.setEnabled(ok)
            item.setToolTip("" if ok else f"torch finds no {name.upper()} device on this machine")
        self._refresh_presets()

    def resolved_device(self) -> str:
        requested = self.device_box.currentData()
        if requested != "auto":
            return requested
        devices = self.devices or {}
        return next(d for d in ("cuda", "mps", "cpu") if d == "cpu" or devices.get(d))

    def _refresh_presets(self) -> None:
        from nerf.presets import available_presets  # plain data: no torch

        presets = available_presets(self.resolved_device())
        current = self.preset_box.currentData()
        model = QtGui.QStandardItemModel(self.preset_box)
        self._preset_reasons = {}
        for name, enabled, reason in presets:
            item = QtGui.QStandardItem(name if enabled else f"{name} (unavailable)")
            item.setData(name, QtCore.Qt.ItemDataRole.UserRole)
            item.setEnabled(enabled)
            item.setToolTip(reason)
            self._preset_reasons[name] = (enabled, reason)
            model.appendRow(item)
        with QtCore.QSignalBlocker(self.preset_box):
            self.preset_box.setModel(model)
            names = [p[0] for p in presets]
            keep = current if current in names and self._preset_reasons[current][0] else names[0]
            self.preset_box.setCurrentIndex(names.index(keep))
        self._update_preset_info()

    def preset_state(self, name: str) -> tuple[bool, str]:
        """(enabled, reason) as the preset list shows it."""
        return self._preset_reasons[name]

    def _update_preset_info(self) -> None:
        name = self.preset_box.currentData()
        if name is None:
            return
        self.preset_box.setToolTip(self._preset_reasons[name][1])
        unavailable = [(other, reason) for other, (enabled, reason) in self._preset_reasons.items() if not enabled]
        # One short line each (a wrapped label in a form row gets clipped); the full reason is the tooltip.
        self.preset_info.setText("<span style='color:#f0b429'>" + "<br>".join(
            f"{other} {reason.split(' (')[0]}" for other, reason in unavailable) + "</span>" if unavailable else "")
        self.preset_info.setToolTip("\n".join(f"{other}: {reason}" for other, reason in unavailable))
        self.preset_info.setVisible(bool(unavailable))
        if self.budget_unit.currentIndex() == 0 and self.worker is None:
            from nerf.presets import get_preset

            self.budget_box.setValue(get_preset(name).iterations)

    def _budget_unit_changed(self, index: int) -> None:
        self.budget_box.setValue(10 if index == 1 else 2000)

    # --- runs ------------------------------------------------------------------------------
    def _new_run_dir(self) -> Path:
        root = self.runs_root
        if root is None:
            project = self.window.project_path
            if project is not None:
                root = Path(project) / "nerf"
            else:
                from assets.demo_scene import default_cache_root

                root = default_cache_root() / "nerf-runs"
        existing = set(self.window.scene.nerf_runs)
        n = 1
        while f"nerf-{n}" in existing or (Path(root) / f"nerf-{n}").exists():
            n += 1
        return Path(root) / f"nerf-{n}"

    def _update_runs(self, snap, force: bool = False) -> None:
        signature = tuple(sorted((k, r.status, r.metrics.get("steps")) for k, r in snap.nerf_runs.items()))
        if signature == self._runs_signature and not force:
            return
        self._runs_signature = signature
        selected = self.selected_run
        with QtCore.QSignalBlocker(self.runs):
            self.runs.clear()
            for name, run in sorted(snap.nerf_runs.items()):
                run_dir = run_dir_of(run, self.window.project_path)
                record = read_run_record(run_dir) if run_dir is not None else {}
                metrics = record.get("metrics") or run.metrics
                psnr = metrics.get("eval_psnr") or metrics.get("psnr")
                steps = record.get("steps", run.metrics.get("steps", 0))
                target = record.get("target_iterations", run.metrics.get("target_iterations"))
                status = record.get("status", run.status)
                item = QtWidgets.QTreeWidgetItem([
                    name, run.preset, status,
                    f"{steps:,}" + (f" / {target:,}" if target and target < 10 ** 7 else ""),
                    f"{psnr:.2f}" if isinstance(psnr, (int, float)) else "–"])
                item.setForeground(2, QtGui.QBrush(QtGui.QColor(STATE_COLORS.get(status, "#dcdfe4"))))
                item.setToolTip(0, str(run_dir) if run_dir else "run folder unknown")
                item.setToolTip(2, record.get("message", ""))
                item.setData(0, QtCore.Qt.ItemDataRole.UserRole, str(run_dir) if run_dir else "")
                self.runs.addTopLevelItem(item)
                if run_dir is not None and selected is not None and Path(run_dir) == selected:
                    item.setSelected(True)
        if self.selected_run is None and self.runs.topLevelItemCount():
            self.runs.topLevelItem(self.runs.topLevelItemCount() - 1).setSelected(True)
        self._apply_state(self.snapshot)

    def run_names(self) -> list[str]:
        return [self.runs.topLevelItem(i).text(0) for i in range(self.runs.topLevelItemCount())]

    def _run_selected(self) -> None:
        items = self.runs.selectedItems()
        path = items[0].data(0, QtCore.Qt.ItemDataRole.UserRole) if items else ""
        self.selected_run = Path(path) if path else None
        self._last_preview_step = -1
        self._apply_state(self.snapshot)

    def current_run_dir(self) -> Optional[Path]:
        """The run that previews and exports use: the one training, else the one selected in the list."""
        if self.snapshot is not None and self.snapshot.run_dir is not None and self.worker is not None:
            return self.snapshot.run_dir
        return self.selected_run

    # --- commands --------------------------------------------------------------------------
    def _training_source(self):
        key = self.camera_box.currentData()
        if key == "file":
            if self.import_path is None:
                raise ValueError("choose a transforms.json or a COLMAP model first")
            path = self.import_path
            return lambda: load_import(path)
        ids = self._sets.get(key, [])
        if len(ids) < 3:
            raise ValueError(f"the scene has {len(ids)} "
                             f"{'SLAM keyframes' if key == 'slam' else 'registered cameras'}; NeRF training needs "
                             "at least 3 posed images")
        snap = self.window.scene.snapshot()
        return training_scene(snap, ids)

    def _budget(self) -> tuple[Optional[int], Optional[float]]:
        value = self.budget_box.value()
        return (value, None) if self.budget_unit.currentIndex() == 0 else (None, float(value))

    def start(self, run_dir=None, start_fn=None) -> Optional[TrainingWorker]:
        """Train a new run. ``start_fn`` replaces nerf.runner.start_training (tests)."""
        if self.worker is not None:
            return None
        name = self.preset_box.currentData()
        enabled, reason = self._preset_reasons.get(name, (False, "no preset"))
        if not enabled:
            self.window.show_error("NeRF", f"The {name} preset cannot run here: {reason}.")
            return None
        try:
            source = self._training_source()
        except ValueError as exc:
            self.window.show_error("NeRF", str(exc)[0].upper() + str(exc)[1:] + ".")
            return None
        iterations, minutes = self._budget()
        job = TrainJob(Path(run_dir) if run_dir is not None else self._new_run_dir(), source, name, iterations,
                       minutes, self.device_box.currentData(), False, self.window.project_path,
                       dict(self.train_options))
        return self._launch(job, start_fn)

    def resume(self, start_fn=None) -> Optional[TrainingWorker]:
        """Continue the selected run from its last checkpoint: to its own target, or for the minutes given."""
        if self.worker is not None or self.selected_run is None:
            return None
        record = read_run_record(self.selected_run)
        iterations, minutes = self._budget()
        steps, target = int(record.get("steps", 0) or 0), int(record.get("target_iterations", 0) or 0)
        if minutes is None:
            iterations = None if steps < target else steps + iterations  # done: train the budget further
        job = TrainJob(self.selected_run, None, record.get("preset", ""), iterations, minutes,
                       self.device_box.currentData(), True, self.window.project_path, dict(self.train_options))
        return self._launch(job, start_fn)

    def _launch(self, job: TrainJob, start_fn) -> TrainingWorker:
        self._clear_plots()
        self._last_preview_step = -1
        worker = TrainingWorker(job, self.window.scene, start=start_fn, parent=self)
        worker.snapshot_ready.connect(self._on_snapshot)
        worker.recorded.connect(self._on_recorded)
        worker.finished.connect(lambda w=worker: self._worker_finished(w))
        self.worker = worker
        self.selected_run = job.run_dir
        log.info("NeRF: %s %s (%s, %s)", "resuming" if job.resume else "training", job.run_dir, job.preset or "?",
                 f"{job.minutes:g} min" if job.minutes else f"{job.iterations} iterations"
                 if job.iterations else "the run's target")
        worker.start()
        self._apply_state(worker.latest())
        return worker

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.request_stop()
            self.state_label.setText("<span style='color:#f0b429'>stopping…</span>")

    def _worker_finished(self, worker: TrainingWorker) -> None:
        if self.worker is not worker:
            return
        snap = worker.latest()
        self.worker = None
        worker.deleteLater()
        if snap is not None:
            self._on_snapshot(snap)  # the final state, whatever the throttle dropped
            if snap.state == "failed":
                self.window.show_error("NeRF training failed", snap.message or "the training process failed")
            if snap.checkpoint is not None:
                self._maybe_preview(snap, force=True)
        self._apply_state(self.snapshot)

    def shutdown(self) -> None:
        """Stop training (the child keeps its checkpoint) and end the helper processes (scene change, close)."""
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.snapshot_ready.disconnect()
            worker.recorded.disconnect()
            worker.request_stop()
            if not worker.wait(15000) and worker.handle is not None:
                kill = getattr(worker.handle, "kill", None)
                if kill is not None:
                    kill()
                worker.wait(5000)
        probe, self._device_probe = self._device_probe, None
        if probe is not None:
            probe.finished.disconnect()
            probe.kill()
            probe.waitForFinished(1000)
        self.outputs.shutdown()
        self.overlay.clear()
        self._apply_state(self.snapshot)

    # --- training snapshots ----------------------------------------------------------------
    def _clear_plots(self) -> None:
        for curve in (self.loss_curve, self.psnr_curve, self.eval_curve):
            curve.setData([], [])

    def _apply_state(self, snap: Optional[TrainSnapshot]) -> None:
        running = self.worker is not None
        key = self.camera_box.currentData()
        source_ok = (self.import_path is not None) if key == "file" else len(self._sets.get(key, [])) >= 3
        self.start_button.setEnabled(not running and source_ok)
        self.stop_button.setEnabled(running and (snap is None or snap.state != "stopping"))
        record = read_run_record(self.selected_run) if self.selected_run is not None and not running else {}
        self.resume_button.setEnabled(not running and record.get("status") in ("stopped", "finished", "failed")
                                      and bool(record.get("steps")))
        for widget in (self.camera_box, self.preset_box, self.budget_box, self.budget_unit, self.device_box):
            widget.setEnabled(not running)
        run_dir = self.current_run_dir()
        has_ckpt = run_dir is not None and any((Path(run_dir) / "ns").glob("*/run/nerfstudio_models/step-*.ckpt"))
        idle_outputs = not self.outputs.busy() or self._busy_op() == "preview"
        for b in (self.video_button, self.stills_button, self.cloud_button):
            b.setEnabled(has_ckpt and idle_outputs)
        self.preview_button.setEnabled(has_ckpt)
        self.render_run_label.setText(f"Run: <b>{Path(run_dir).name}</b> — {run_dir}" if run_dir is not None
                                      else "No run selected: train one, or pick one in the list below.")
        state = snap.state if snap is not None else ("idle" if not record else record.get("status", "idle"))
        self.state_label.setText(f"<span style='color:{STATE_COLORS.get(state, '#dcdfe4')}'>{state}</span>")

    def _on_snapshot(self, snap: TrainSnapshot) -> None:
        previous, self.snapshot = self.snapshot, snap
        now = time.monotonic()
        # QProgressBar.setValue repaints synchronously (~15 ms under Xvfb) and every label change relayouts the
        # dock: while the state holds, the numbers follow the run a few times a second.
        if previous is not None and previous.state == snap.state and snap.running \
                and now - self._last_label_update < LABEL_UPDATE_INTERVAL_S:
            self._maybe_preview(snap)
            self.snapshot_applied.emit(snap)
            return
        self._last_label_update = now
        v = self.values
        if snap.running and previous is not None and previous.state == snap.state:
            QtCore.QTimer.singleShot(3 * PLOT_STAGGER_MS, self._draw_progress)  # setValue repaints at once
        else:
            self._draw_progress()
        v["loss"].setText(f"{snap.loss[-1]:.4g}" if len(snap.loss) else "–")
        train = f"{snap.psnr[-1]:.2f}" if len(snap.psnr) else "–"
        evald = f"{snap.eval_psnr[-1]:.2f}" if len(snap.eval_psnr) else "–"
        v["psnr"].setText(f"<span style='color:{PSNR_COLOR}'>{train}</span> / <span style='color:{EVAL_COLOR}'>"
                          f"{evald}</span> dB" if len(snap.psnr) or len(snap.eval_psnr) else "–")
        v["rays"].setText(_fmt_rate(snap.rays_per_s) if snap.running else "–")
        eta = snap.eta_s
        if snap.minutes:
            eta = max(snap.minutes * 60.0 - snap.elapsed_s, 0.0) if eta is None else min(
                eta, max(snap.minutes * 60.0 - snap.elapsed_s, 0.0))
        v["eta"].setText(_fmt_duration(eta) if snap.running else "–")
        v["elapsed"].setText(_fmt_duration(snap.elapsed_s))
        v["checkpoint"].setText(f"step {snap.checkpoint_step:,}" if snap.checkpoint_step is not None else "–")
        failed = snap.state == "failed"
        self.message_label.setStyleSheet(f"color:{'#ff6b6b' if failed else '#aeb3bb'}")
        self.message_label.setText(snap.message)
        self.message_label.setVisible(bool(snap.message))
        if not snap.running or now - self._last_plot_update >= PLOT_UPDATE_INTERVAL_S:
            # Plot painting (axes) is the costly part: the labels, the loss plot and the PSNR plot are painted in
            # separate turns of the event loop, not in one long one (the last update of a run too).
            self._last_plot_update = now
            QtCore.QTimer.singleShot(PLOT_STAGGER_MS, self._draw_loss)
            QtCore.QTimer.singleShot(2 * PLOT_STAGGER_MS, self._draw_psnr)
        self._apply_state(snap)
        self._maybe_preview(snap)
        self.snapshot_applied.emit(snap)

    def _draw_progress(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        if snap.state == "preparing":
            done, total = snap.prepare
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(done)
            self.progress.setFormat(f"preparing the dataset: {done} / {total} images" if total else
                                    "preparing the dataset…")
        elif snap.minutes and snap.target and snap.target >= 10 ** 7:
            budget = snap.minutes * 60.0
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(min(snap.elapsed_s / budget, 1.0) * 1000) if snap.running else 1000)
            self.progress.setFormat(f"step {snap.step:,} · {snap.minutes:g} min budget")
        elif snap.target:
            self.progress.setRange(0, int(snap.target))
            self.progress.setValue(min(int(snap.step), int(snap.target)))
            self.progress.setFormat(f"step {snap.step:,} / {snap.target:,}")
        else:
            self.progress.setRange(0, 0 if snap.running else 1)

    def _draw_loss(self) -> None:
        snap = self.snapshot
        if snap is not None:
            positive = snap.loss > 0  # log axis
            self.loss_curve.setData(snap.loss_steps[positive], snap.loss[positive])

    def _draw_psnr(self) -> None:
        snap = self.snapshot
        if snap is not None:
            self.psnr_curve.setData(snap.psnr_steps, snap.psnr)
            self.eval_curve.setData(snap.eval_steps, snap.eval_psnr)

    def _on_recorded(self, run) -> None:
        from types import SimpleNamespace

        # The list follows at once, not at the next (throttled) scene snapshot.
        self._update_runs(SimpleNamespace(nerf_runs=dict(self.window.scene.nerf_runs)), force=True)
        self.window.statusBar().showMessage(f"NeRF run {run.name}: {run.status}", 8000)
        self.run_recorded.emit(run)

    # --- preview ---------------------------------------------------------------------------
    def _preview_view(self):
        snap, registered = self._registered()
        image_id = self.preview_camera_box.currentData()
        image = snap.images.get(image_id) if image_id is not None else None
        if image is None or image.cam_from_world is None:
            if not registered:
                return None
            image = registered[0]
        camera = snap.cameras[image.camera_id]
        w, h = camera.width, camera.height
        scale = min(1.0, PREVIEW_MAX_SIZE / max(w, h))
        camera = camera.scaled(max(1, round(w * scale)), max(1, round(h * scale)))
        return image, camera

    def _maybe_preview(self, snap: TrainSnapshot, force: bool = False) -> None:
        every = self.preview_every_box.value()
        if snap.checkpoint_step is None or (every == 0 and not force):
            return
        if force or snap.checkpoint_step - max(self._last_preview_step, 0) >= every:
            self._last_preview_step = snap.checkpoint_step
            self.request_preview()

    def request_preview(self) -> Optional[int]:
        run_dir = self.current_run_dir()
        view = self._preview_view()
        if run_dir is None or view is None:
            return None
        image, camera = view
        self.outputs.drop_queued("preview")  # only the newest matters
        out = Path(run_dir) / "renders" / "preview.png"
        request_id = self.outputs.request("preview", run_dir=str(run_dir), device="cpu", out=str(out),
                                          camera=camera_fields(camera),
                                          cam_from_world=pose_fields(image.cam_from_world))
        self._requests[request_id] = "preview"
        self.preview_label.setText(f"rendering the preview from {image.name}…")
        return request_id

    def _show_preview(self, path: str, step) -> None:
        import cv2

        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            return
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        h, w = rgb.shape[:2]
        show_pixels(self.preview_item, rgb)
        self.preview_item.setRect(QtCore.QRectF(0, 0, w, h))
        self.preview_text.setVisible(False)
        self.preview_view.getPlotItem().vb.setRange(xRange=(0, w), yRange=(0, h), padding=0)
        name = self.preview_camera_box.currentText()
        self.preview_label.setText(f"{name} at step {int(step) + 1:,} · {w}×{h}" if step is not None else name)
        self.preview_shown.emit(path)

    # --- camera paths ----------------------------------------------------------------------
    def path_poses(self):
        """(cams_from_world, camera) of the chosen render path in the scene's world, or ([], None) with a reason."""
        snap, _ = self._registered()
        kind = self.path_box.currentData()
        chosen = [item.data(QtCore.Qt.ItemDataRole.UserRole) for item in self.path_cameras.selectedItems()]
        return path_poses(kind, snap, self._sets, chosen, self.frames_box.value())

    def update_path_preview(self) -> None:
        try:
            poses, camera, note = self.path_poses()
        except Exception as exc:  # noqa: BLE001 - shown next to the path choice, never raised into Qt
            poses, camera, note = [], None, str(exc)
        self.path_info.setText(note)
        if poses and self.show_path_box.isChecked():
            self.overlay.set_path(poses, camera)
        else:
            self.overlay.clear()

    # --- exports ---------------------------------------------------------------------------
    def _busy_op(self) -> Optional[str]:
        current = self.outputs._current
        return self._requests.get(current[0]) if current is not None else None

    def _set_output_busy(self, op: Optional[str]) -> None:
        self.output_progress.setVisible(op is not None)
        self.output_cancel.setVisible(op is not None)
        if op is not None:
            self.output_progress.setRange(0, 0)
            self.output_progress.setFormat(op)
        self._apply_state(self.snapshot)

    def _export(self, op: str, **fields) -> Optional[int]:
        run_dir = self.current_run_dir()
        if run_dir is None:
            self.window.show_error("NeRF", "Train a run, or select one in the list, first.")
            return None
        request_id = self.outputs.request(op, run_dir=str(run_dir), device="cpu", **fields)
        self._requests[request_id] = op
        self._set_output_busy(op)
        self.output_label.setText(f"{op}: starting (the renderer loads torch and the run first)…")
        return request_id

    def export_video(self) -> Optional[int]:
        poses, camera, note = self.path_poses()
        if not poses:
            self.window.show_error("NeRF", f"No camera path: {note}")
            return None
        run_dir = self.current_run_dir()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(run_dir) / "renders" / f"{self.path_box.currentData()}-{stamp}.mp4" if run_dir else None
        return self._export("video", out=str(out), camera=camera_fields(camera),
                            cams_from_world=[pose_fields(p) for p in poses], fps=self.fps_box.value())

    def export_stills(self) -> Optional[int]:
        snap, registered = self._registered()
        ids = [item.data(QtCore.Qt.ItemDataRole.UserRole) for item in self.path_cameras.selectedItems()]
        if not ids and self.preview_camera_box.currentData() is not None:
            ids = [self.preview_camera_box.currentData()]
        images = [snap.images[i] for i in ids if i in snap.images and snap.images[i].cam_from_world is not None]
        if not images:
            self.window.show_error("NeRF", "Choose the cameras to render in the camera list first.")
            return None
        run_dir = self.current_run_dir()
        out_dir = Path(run_dir) / "renders" / f"stills-{time.strftime('%Y%m%d-%H%M%S')}" if run_dir else None
        views = [{"name": im.name, "camera": camera_fields(snap.cameras[im.camera_id]),
                  "cam_from_world": pose_fields(im.cam_from_world)} for im in images]
        return self._export("stills", out_dir=str(out_dir), views=views)

    def export_point_cloud(self) -> Optional[int]:
        from nerf.pointcloud import scene_bounds  # no torch at import

        run_dir = self.current_run_dir()
        box = scene_bounds(self.window.scene)
        box = None if box is None else [np.asarray(b, dtype=np.float64).tolist() for b in box]
        out = Path(run_dir) / "renders" / "nerf_cloud.ply" if run_dir else None
        return self._export("pointcloud", out=str(out), num_points=self.points_box.value(), bounding_box=box)

    def cancel_output(self) -> None:
        self.outputs.cancel_current()

    def _on_output_progress(self, request_id: int, done: int, total: int, message: str) -> None:
        op = self._requests.get(request_id)
        if op == "preview":
            return
        if total > 0:
            self.output_progress.setRange(0, total)
            self.output_progress.setValue(min(done, total))
            self.output_progress.setFormat(f"{op}: {done:,} / {total:,}")
        self.output_label.setText(message)

    def _on_output_answer(self, request_id: int, result: dict) -> None:
        op = self._requests.pop(request_id, None)
        if op is None:
            return
        if op == "preview":
            if result.get("ok"):
                self._show_preview(result["path"], result.get("step"))
            elif not result.get("cancelled"):
                self.preview_label.setText(f"preview failed: {result.get('message', '')}")
            self._apply_state(self.snapshot)
            return
        self._set_output_busy(None)
        if result.get("cancelled"):
            self.output_label.setText(f"{op}: cancelled")
        elif not result.get("ok"):
            self.output_label.setText(f"<span style='color:#ff6b6b'>{op} failed: {result.get('message', '')}</span>")
            self.window.show_error(f"NeRF {op} failed", result.get("message", ""))
        else:
            if op == "pointcloud":
                self._add_cloud(result)
            self.output_label.setText(f"{op}: written to {result.get('path')}")
            self.window.statusBar().showMessage(f"NeRF {op} written to {result.get('path')}", 8000)
            self._add_render_to_run(result.get("path"))
        self.output_finished.emit(op, result)

    def _add_cloud(self, result: dict) -> None:
        from scene.model import PointCloud

        with np.load(result["arrays"], allow_pickle=False) as data:
            cloud = PointCloud(data["xyz"], data["rgb"])
        self.window.scene.set_cloud("nerf", cloud)

    def _add_render_to_run(self, path) -> None:
        """The run's record in the scene lists what was rendered from it."""
        from dataclasses import replace

        run_dir = self.current_run_dir()
        run = self.window.scene.nerf_runs.get(Path(run_dir).name) if run_dir is not None else None
        if run is None or not path or not run.checkpoint_dir:
            return  # renders are kept relative to a project's nerf/ folder; outside a project the run folder has them
        try:
            rel = Path(path).resolve().relative_to(Path(run_dir).resolve().parent).as_posix()
        except ValueError:
            return
        if rel not in run.renders:
            self.window.scene.set_nerf_run(replace(run, renders=list(run.renders) + [rel]))
