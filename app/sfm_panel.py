"""The SfM tab: input choices, Run / Cancel, per-stage progress, the per-image table, the error histogram,
point colouring, and the chosen image with its observations.

The panel draws ``SfmProgress`` and ``SfmSummary`` objects from ``app/sfm_worker.SfmWorker``; it never runs a
pipeline stage. The model itself is drawn by the main 3D view from the scene (the worker merges it there), so
the view shows it once the run has finished: ``sfm.pipeline.run`` writes its model only at the end, and the
mapper reports registrations as counts (progress "map" done/total), which the progress rows show live.
Clicking a camera in the 3D view, or a table row, shows that image with its keypoints: green where a keypoint
observes a 3D point, orange where it does not.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui, QtWidgets

from . import style
from .frame_browser import KP_TRIANGULATED, KP_UNMATCHED, FrameLoader
from .image_plot import show_pixels
from .live_overlay import LiveMapOverlay
from .sfm_worker import PIPELINE_STAGES, PRESETS, SfmProgress, SfmRequest, SfmSummary, SfmWorker, supports

log = logging.getLogger(__name__)

SOURCES = (("scene", "Frames of the open scene"), ("folder", "Image folder…"))
INTRINSICS = (("scene", "As opened (calibration file › EXIF › guess)"), ("calib", "Calibration file…"),
              ("exif", "EXIF of the first image"), ("guess", "Guess (focal = 1.2 × longest side)"))
MATCHERS = (("exhaustive", "Exhaustive"), ("sequential", "Sequential"))
COLOR_MODES = (("rgb", "RGB"), ("error", "Reprojection error"), ("track_length", "Track length"))
STAGE_TITLES = {"extract": "Features", "match": "Matching", "verify": "Verification", "map": "Mapping"}
TABLE_COLUMNS = ("Image", "Status", "Obs.", "Err. px")  # short: the dock is narrow (keypoints in the tooltip)
DISPLAY_MAX_SIDE = 1600  # larger frames are shown with a pixel stride (keypoints stay in source pixels)
HISTOGRAM_BINS = 40
REGISTERED_COLOR = "#40d660"
FAILED_COLOR = "#f0b429"


class _NumberItem(QtWidgets.QTableWidgetItem):
    """A table cell that sorts by its number, not its text."""

    def __init__(self, value: float, text: str):
        super().__init__(text)
        self.value = value
        self.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other) -> bool:
        if isinstance(other, _NumberItem):
            a = -math.inf if math.isnan(self.value) else self.value
            b = -math.inf if math.isnan(other.value) else other.value
            return a < b
        return super().__lt__(other)


def _combo(parent, entries, tip: str) -> QtWidgets.QComboBox:
    box = QtWidgets.QComboBox(parent)
    for key, text in entries:
        box.addItem(text, key)
    box.setToolTip(tip)
    return box


class SfmPanel(QtWidgets.QWidget):
    """The SfM dock's widget. ``window`` is the MainWindow (its document, scene and 3D view)."""

    progress_applied = QtCore.pyqtSignal(object)  # SfmProgress, after the widgets show it (tests)
    summary_applied = QtCore.pyqtSignal(object)  # SfmSummary, after the table and histogram show it
    run_ended = QtCore.pyqtSignal(str)  # "succeeded" | "cancelled" | "failed"
    image_shown = QtCore.pyqtSignal(int)  # image id whose pixels and observations are now drawn

    def __init__(self, window, parent: Optional[QtWidgets.QWidget] = None):
        super().__init__(parent)
        self.window = window
        self.worker: Optional[SfmWorker] = None
        self.progress: Optional[SfmProgress] = None
        self.summary: Optional[SfmSummary] = None
        self.shown_image_id: Optional[int] = None
        self._loading_result = False
        self._hidden_cloud = False
        self._waiting_for: Optional[int] = None
        self._waiting_image: Optional[int] = None
        self.loader = FrameLoader(self)
        self.loader.loaded.connect(self._on_pixels)
        self.live = LiveMapOverlay(window.view)  # the model as it grows, until the result lands in the scene
        self._drawn_model: Optional[dict] = None
        self._build()
        window.document.about_to_load.connect(self._on_about_to_load)
        window.document.loaded.connect(self._update_source)
        window.view.image_picked.connect(self.show_image)
        self._update_source()

    # --- construction ---------------------------------------------------------------------
    def _build(self) -> None:
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)

        form = QtWidgets.QFormLayout()
        form.setHorizontalSpacing(8)
        form.setVerticalSpacing(4)
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.source_box = _combo(self, SOURCES, "Reconstruct the frames of the open scene (a video or image folder "
                                                "opened with File ▸ Open), or another folder of images")
        self.source_box.currentIndexChanged.connect(lambda _i: self._update_source())
        form.addRow("Images", self.source_box)
        self.folder_edit, folder_row = self._path_row("Folder of images to reconstruct; the result opens as the "
                                                      "scene", self._browse_folder)
        self.folder_label = QtWidgets.QLabel("Folder", self)
        form.addRow(self.folder_label, folder_row)
        step_row = QtWidgets.QHBoxLayout()
        self.step_box = QtWidgets.QSpinBox(self)
        self.step_box.setRange(1, 1000)
        self.step_box.setPrefix("every ")
        self.step_box.setSuffix(" frame(s)")
        self.step_box.setToolTip("Use every Nth frame (1 = all). Video frames are close together: a step of "
                                 "5-10 gives SfM enough parallax and saves time")
        self.step_box.valueChanged.connect(lambda _v: self._update_source())
        self.frames_label = QtWidgets.QLabel("", self)
        self.frames_label.setStyleSheet("color:#8a8f98")
        step_row.addWidget(self.step_box)
        step_row.addWidget(self.frames_label, 1)
        form.addRow("Frames", step_row)

        self.intrinsics_box = _combo(self, INTRINSICS, "Where the camera intrinsics come from. EXIF and guessed "
                                                       "focal lengths are refined by bundle adjustment")
        self.intrinsics_box.currentIndexChanged.connect(lambda _i: self._update_source())
        form.addRow("Intrinsics", self.intrinsics_box)
        self.calib_edit, calib_row = self._path_row("Calibration file (YAML/JSON, KITTI calib.txt, COLMAP "
                                                    "cameras.txt, K.txt)", self._browse_calib)
        self.calib_label = QtWidgets.QLabel("Calibration", self)
        form.addRow(self.calib_label, calib_row)
        self.intrinsics_label = QtWidgets.QLabel("", self)
        self.intrinsics_label.setStyleSheet("color:#aeb3bb")
        self.intrinsics_label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored,  # never widens the dock
                                            QtWidgets.QSizePolicy.Policy.Preferred)
        self.intrinsics_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("", self.intrinsics_label)

        matcher_row = QtWidgets.QHBoxLayout()
        self.matcher_box = _combo(self, MATCHERS, "Exhaustive matches every pair (small sets); sequential "
                                                  "matches each frame with the next ones (videos)")
        self.matcher_box.currentIndexChanged.connect(lambda _i: self._update_window_box())
        self.window_box = QtWidgets.QSpinBox(self)
        self.window_box.setRange(1, 200)
        self.window_box.setValue(10)
        self.window_box.setPrefix("window ")
        self.window_box.setToolTip("Sequential matching: each frame is matched with this many following frames")
        self.preset_box = _combo(self, [(p, p.capitalize()) for p in PRESETS],
                                 "Preset. Fast: 1000 px, 2k features, short bundle adjustments. Default: 1600 px, "
                                 "8k features. Accurate: 2400 px, 16k features, longer bundle adjustments")
        self.preset_box.setCurrentIndex(PRESETS.index("default"))
        self.detector_box = _combo(self, (("sift", "SIFT"), ("orb", "ORB"), ("akaze", "AKAZE")),
                                   "Features: SIFT (RootSIFT, most accurate), ORB or AKAZE (faster)")
        matcher_row.addWidget(self.detector_box)
        matcher_row.addWidget(self.matcher_box, 1)
        matcher_row.addWidget(self.window_box)
        matcher_row.addWidget(QtWidgets.QLabel("Preset", self))
        matcher_row.addWidget(self.preset_box)
        form.addRow("Matching", matcher_row)
        self.outlier_box = QtWidgets.QCheckBox("Remove outliers from the point clouds (statistical)", self)
        self.outlier_box.setToolTip("Drop points far from their neighbours in the exported clouds; the sparse "
                                    "points keep every point")
        form.addRow("", self.outlier_box)
        self.seed_box = QtWidgets.QCheckBox("Start from the scene's camera poses (e.g. SLAM keyframes)", self)
        self.seed_box.setToolTip("Posed frames seed the model instead of an initial pair; the result keeps their "
                                 "frame and scale, so it lines up with the SLAM map and trajectory")
        self.seed_box.toggled.connect(self._update_source)
        form.addRow("", self.seed_box)
        self._offer_sfm_options()
        layout.addLayout(form)

        buttons = QtWidgets.QHBoxLayout()
        from .main_window import _icon

        self.run_button = QtWidgets.QPushButton(_icon(self, "SP_MediaPlay"), "Run", self)
        self.run_button.setToolTip("Extract features, match, verify and map (Ctrl+Return)")
        self.run_button.clicked.connect(lambda _c=False: self.run())
        self.cancel_button = QtWidgets.QPushButton(_icon(self, "stop"), "Cancel", self)
        self.cancel_button.setToolTip("Stop at the next step; the scene is left as it was")
        self.cancel_button.clicked.connect(lambda _c=False: self.cancel())
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        self.elapsed_label = QtWidgets.QLabel("", self)
        self.elapsed_label.setStyleSheet("color:#8a8f98")
        buttons.addWidget(self.elapsed_label)
        layout.addLayout(buttons)
        QtGui.QShortcut(QtGui.QKeySequence("Ctrl+Return"), self, self.run,
                        context=QtCore.Qt.ShortcutContext.WidgetWithChildrenShortcut)

        grid = QtWidgets.QGridLayout()
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(3)
        self.stage_bars: dict[str, QtWidgets.QProgressBar] = {}
        self.stage_times: dict[str, QtWidgets.QLabel] = {}
        for row, stage in enumerate(PIPELINE_STAGES):
            name = QtWidgets.QLabel(STAGE_TITLES[stage], self)
            name.setStyleSheet("color:#aeb3bb")
            bar = QtWidgets.QProgressBar(self)
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setFormat("–")
            bar.setFixedHeight(16)
            seconds = QtWidgets.QLabel("", self)
            seconds.setMinimumWidth(40)
            seconds.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
            seconds.setStyleSheet("color:#8a8f98")
            r, c = divmod(row, 2)  # two stages a row
            grid.addWidget(name, r, 3 * c)
            grid.addWidget(bar, r, 3 * c + 1)
            grid.addWidget(seconds, r, 3 * c + 2)
            self.stage_bars[stage], self.stage_times[stage] = bar, seconds
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(4, 1)
        layout.addLayout(grid)
        self.message_label = QtWidgets.QLabel("", self)
        self.message_label.setWordWrap(True)
        self.message_label.setStyleSheet("color:#aeb3bb")
        layout.addWidget(self.message_label)
        self.message_label.hide()
        self.summary_label = QtWidgets.QLabel("", self)
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.summary_label)

        show_row = QtWidgets.QHBoxLayout()
        show_row.addWidget(QtWidgets.QLabel("Model", self))
        self.model_box = QtWidgets.QComboBox(self)
        self.model_box.setToolTip("Models of the last run (several when the images form disconnected groups)")
        self.model_box.currentIndexChanged.connect(self._model_changed)
        show_row.addWidget(self.model_box, 1)
        show_row.addWidget(QtWidgets.QLabel("Colour", self))
        self.color_box = _combo(self, COLOR_MODES, "Colour the sparse points by their colour, their mean "
                                                   "reprojection error or their track length (viridis)")
        self.color_box.currentIndexChanged.connect(lambda _i: self._apply_color_mode())
        show_row.addWidget(self.color_box, 1)
        layout.addLayout(show_row)
        self.color_legend = QtWidgets.QLabel("", self)
        self.color_legend.setStyleSheet("color:#8a8f98")
        layout.addWidget(self.color_legend)

        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical, self)
        splitter.setChildrenCollapsible(False)
        self.table = QtWidgets.QTableWidget(0, len(TABLE_COLUMNS), self)
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setSortingEnabled(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        header.setSortIndicator(0, QtCore.Qt.SortOrder.AscendingOrder)  # input order until the user sorts
        self.table.itemSelectionChanged.connect(self._row_selected)
        self.table.setMinimumHeight(90)
        splitter.addWidget(self.table)

        self.histogram = pg.PlotWidget(self)
        self.histogram.setBackground(style.qcolor(style.VIEW_BACKGROUND))
        plot = self.histogram.getPlotItem()
        plot.setMenuEnabled(False)
        plot.setMouseEnabled(False, False)
        plot.hideButtons()
        plot.showGrid(x=True, y=True, alpha=0.15)
        plot.setLabel("bottom", "reprojection error (px)")
        plot.setLabel("left", "observations")
        self.histogram_curve = pg.PlotDataItem(stepMode="center", fillLevel=0, pen=pg.mkPen("#6cb2f0", width=1.2),
                                               brush=pg.mkBrush(108, 178, 240, 90))
        plot.addItem(self.histogram_curve)
        dash = QtCore.Qt.PenStyle.DashLine
        self.mean_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#f0b429", width=1.2, style=dash))  # the mean
        self.mean_line.setVisible(False)
        plot.addItem(self.mean_line)
        self.histogram.setMinimumHeight(120)
        self.bottom_tabs = QtWidgets.QTabWidget(self)
        self.bottom_tabs.setDocumentMode(True)
        self.bottom_tabs.addTab(self.histogram, "Reprojection errors")

        image_box = QtWidgets.QWidget(self)
        image_layout = QtWidgets.QVBoxLayout(image_box)
        image_layout.setContentsMargins(0, 0, 0, 0)
        image_layout.setSpacing(2)
        self.canvas = pg.GraphicsLayoutWidget(image_box)
        self.canvas.setBackground((22, 23, 26))
        self.canvas.ci.setContentsMargins(0, 0, 0, 0)
        self.image_box = self.canvas.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image_box.setDefaultPadding(0.0)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.image_box.addItem(self.image_item)
        self.unmatched_item = pg.ScatterPlotItem(size=3, pen=None, brush=pg.mkBrush(*KP_UNMATCHED), pxMode=True)
        self.observed_item = pg.ScatterPlotItem(size=5, pen=None, brush=pg.mkBrush(*KP_TRIANGULATED), pxMode=True)
        self.image_box.addItem(self.unmatched_item)
        self.image_box.addItem(self.observed_item)
        self.canvas.setMinimumHeight(100)
        self.image_info = QtWidgets.QLabel("Click a camera in the 3D view or a row of the table.", image_box)
        self.image_info.setStyleSheet("color:#8a8f98")
        self.image_info.setWordWrap(True)
        image_layout.addWidget(self.image_info)
        image_layout.addWidget(self.canvas, 1)
        self.bottom_tabs.addTab(image_box, "Image")
        splitter.addWidget(self.bottom_tabs)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        layout.addWidget(splitter, 1)
        self.splitter = splitter

        self._update_window_box()
        self._set_running(False)

    def _offer_sfm_options(self) -> None:
        """Show the detector and outlier-removal choices only when sfm/ offers them."""
        from sfm.features import FeatureOptions
        from sfm.pipeline import SfmOptions

        self.detector_box.setVisible(supports(FeatureOptions, "detector"))
        self.outlier_box.setVisible(supports(SfmOptions, "outlier_removal"))

    def _path_row(self, tip: str, browse) -> tuple[QtWidgets.QLineEdit, QtWidgets.QHBoxLayout]:
        edit = QtWidgets.QLineEdit(self)
        edit.setToolTip(tip)
        edit.setClearButtonEnabled(True)
        edit.textChanged.connect(lambda _t: self._update_source())
        button = QtWidgets.QToolButton(self)
        button.setText("Browse…")
        button.clicked.connect(lambda _c=False: browse())
        row = QtWidgets.QHBoxLayout()
        row.setSpacing(4)
        row.addWidget(edit, 1)
        row.addWidget(button)
        edit._browse_button = button  # shown and hidden with its row
        return edit, row

    # --- inputs -----------------------------------------------------------------------------
    def request(self) -> SfmRequest:
        """The run the controls describe."""
        return SfmRequest(source=self.source_box.currentData(), folder=self.folder_edit.text().strip() or None,
                          frame_step=self.step_box.value(), intrinsics=self.intrinsics_box.currentData(),
                          calib_path=self.calib_edit.text().strip() or None, matcher=self.matcher_box.currentData(),
                          window=self.window_box.value(), preset=self.preset_box.currentData(),
                          detector=self.detector_box.currentData(), remove_outliers=self.outlier_box.isChecked(),
                          seed_from_poses=self.seed_box.isChecked() and self.seed_box.isEnabled())

    def set_request(self, request: SfmRequest) -> None:
        """Set every control from ``request`` (scripts and tests)."""
        for box, value in ((self.source_box, request.source), (self.intrinsics_box, request.intrinsics),
                           (self.matcher_box, request.matcher), (self.preset_box, request.preset),
                           (self.detector_box, request.detector)):
            box.setCurrentIndex(box.findData(value))
        self.folder_edit.setText(request.folder or "")
        self.calib_edit.setText(request.calib_path or "")
        self.step_box.setValue(request.frame_step)
        self.window_box.setValue(request.window)
        self.outlier_box.setChecked(request.remove_outliers)
        self.seed_box.setChecked(request.seed_from_poses)

    def _browse_folder(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Images to Reconstruct", self.window._dialog_dir())
        if path:
            self.folder_edit.setText(path)

    def _browse_calib(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Calibration File", self.window._dialog_dir(),
                                                        "Calibration (*.yaml *.yml *.json *.txt);;All files (*)")
        if path:
            self.calib_edit.setText(path)

    def _update_window_box(self) -> None:
        self.window_box.setVisible(self.matcher_box.currentData() == "sequential")

    def _update_source(self) -> None:
        """Show the controls the choices need, and what the run would use."""
        folder = self.source_box.currentData() == "folder"
        for w in (self.folder_label, self.folder_edit, self.folder_edit._browse_button):
            w.setVisible(folder)
        calib = self.intrinsics_box.currentData() == "calib"
        for w in (self.calib_label, self.calib_edit, self.calib_edit._browse_button):
            w.setVisible(calib)
        step = self.step_box.value()
        self.seed_box.setVisible(not folder)
        self.seed_box.setEnabled(not folder and any(im.source is not None and im.cam_from_world is not None
                                                    for im in self.window.scene.images.values()))
        if folder:
            self.frames_label.setText("")
            scene_text = "resolved when the folder opens (its calibration file, else EXIF, else a marked guess)"
        else:
            scene = self.window.scene
            pool = sum(1 for im in scene.images.values() if im.source is not None)
            chosen = len(range(0, pool, step))
            self.frames_label.setText(f"{chosen} of {pool} frames" if pool else "no frames: open a video or images")
            camera = next((scene.cameras.get(im.camera_id) for im in scene.images.values() if im.source is not None),
                          None)
            scene_text = self._describe_camera(camera) if camera is not None else "no camera yet"
            posed = sum(1 for im in scene.images.values() if im.source is not None and im.cam_from_world is not None)
            self.seed_box.setText(f"Start from the scene's camera poses ({posed} posed frames, e.g. SLAM keyframes)")
        mode = self.intrinsics_box.currentData()
        text = {"scene": scene_text,
                "calib": "from the calibration file (kept fixed by bundle adjustment)",
                "exif": "focal length from the first image's EXIF, refined by bundle adjustment",
                "guess": f"<span style='color:{style.GUESS_COLOR}'>GUESS</span>: focal = 1.2 × longest side, "
                         "refined by bundle adjustment"}[mode]
        self.intrinsics_label.setText(text)
        if not self.is_running():
            self.run_button.setEnabled(self._can_run())

    @staticmethod
    def _describe_camera(camera) -> str:
        fx, fy = camera.focal_xy
        source = camera.intrinsics_source
        color = style.GUESS_COLOR if camera.is_guess else "#8a8f98"
        return (f"{camera.model} {camera.width}×{camera.height}, f = {fx:.1f}"
                + (f"/{fy:.1f}" if abs(fx - fy) > 1e-6 else "")
                + f" <span style='color:{color}'>[{'GUESS' if camera.is_guess else 'from ' + source}]</span>")

    def _can_run(self) -> bool:
        r = self.request()
        if r.source == "folder":
            ok = bool(r.folder)
        else:
            ok = sum(1 for im in self.window.scene.images.values() if im.source is not None) >= 2
        return ok and (r.intrinsics != "calib" or bool(r.calib_path))

    # --- run / cancel -----------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.worker is not None

    def run(self) -> Optional[SfmWorker]:
        """Start a run with the current choices; None when one is running or the choices are incomplete."""
        if self.worker is not None:
            return None
        request = self.request()
        if request.source == "folder" and not self.window._confirm_discard():  # the result replaces the scene
            return None
        worker = SfmWorker(request, self.window.scene, parent=self)
        worker.progress_ready.connect(self._on_progress)
        worker.succeeded.connect(lambda summary, w=worker: self._on_succeeded(w, summary))
        worker.failed.connect(lambda message, w=worker: self._on_failed(w, message))
        worker.cancelled.connect(lambda w=worker: self._on_cancelled(w))
        self.worker = worker
        self._reset_progress()
        self._message("Starting…")
        self._set_running(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.request_stop()
            self._message("Cancelling at the next step…")
            self.cancel_button.setEnabled(False)

    def shutdown(self) -> None:
        """Stop a run and wait for its thread (the scene is about to change, or the window closes)."""
        worker, self.worker = self.worker, None
        if worker is not None:
            for signal in (worker.progress_ready, worker.succeeded, worker.failed, worker.cancelled):
                signal.disconnect()
            worker.request_stop()
            worker.wait()
            worker.deleteLater()
            self._message("Cancelled: the scene changed")
        self.loader.cancel()
        self._clear_live()
        self._set_running(False)

    def _on_about_to_load(self) -> None:
        if not self._loading_result:  # another scene is coming: this run and this table no longer apply
            self.shutdown()
            self._clear_results()

    def _finish(self, worker: SfmWorker) -> bool:
        if worker is not self.worker:
            return False
        self.worker = None
        worker.wait()
        worker.deleteLater()
        self._clear_live()
        self._set_running(False)
        return True

    def _on_succeeded(self, worker: SfmWorker, summary: SfmSummary) -> None:
        if not self._finish(worker):
            return
        if summary.new_scene is not None:  # a folder run: its scene becomes the document
            self._loading_result = True
            try:
                self.window.load_scene(summary.new_scene, Path(summary.request.folder))
            finally:
                self._loading_result = False
        self.window.watcher.refresh()  # draw the model now, then frame it
        self.window.view.fit_to_scene()
        self.apply_summary(summary)
        self.window.statusBar().showMessage(
            f"SfM: {summary.registered} of {summary.num_images} images registered, {summary.num_points:,} points", 8000)
        self.run_ended.emit("succeeded")

    def _on_failed(self, worker: SfmWorker, message: str) -> None:
        if not self._finish(worker):
            return
        self._message(f"<span style='color:#ff6b6b'>Failed:</span> {message}")
        self.window.show_error("SfM failed", message)
        self.run_ended.emit("failed")

    def _on_cancelled(self, worker: SfmWorker) -> None:
        if not self._finish(worker):
            return
        self._message("Cancelled; the scene was not changed.")
        self.run_ended.emit("cancelled")

    def _message(self, text: str) -> None:
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))

    # --- drawing: progress --------------------------------------------------------------------
    def _set_running(self, running: bool) -> None:
        for w in (self.source_box, self.folder_edit, self.step_box, self.intrinsics_box, self.calib_edit,
                  self.matcher_box, self.window_box, self.preset_box, self.detector_box, self.outlier_box,
                  self.seed_box):
            w.setEnabled(not running)
        self.run_button.setEnabled(not running and self._can_run())
        self.cancel_button.setEnabled(running)
        if not running:
            self._update_source()  # what the scene offers now (e.g. posed frames to seed from)

    def _reset_progress(self) -> None:
        for stage in PIPELINE_STAGES:
            bar = self.stage_bars[stage]
            bar.setRange(0, 1)
            bar.setValue(0)
            bar.setFormat("–")
            self.stage_times[stage].setText("")
        self.elapsed_label.setText("")

    def _on_progress(self, progress: SfmProgress) -> None:
        self.progress = progress
        for stage in PIPELINE_STAGES:
            state = progress.stages.get(stage)
            if state is None:
                continue
            bar = self.stage_bars[stage]
            bar.setRange(0, max(state.total, 1))
            bar.setValue(min(state.done, max(state.total, 1)))
            bar.setFormat(f"{state.done:,} / {state.total:,}")
            self.stage_times[stage].setText(f"{state.seconds:.1f} s")
        current = progress.stages.get(progress.current)
        if progress.running and current is not None:
            title = STAGE_TITLES.get(progress.current, progress.current)
            self._message(f"{title}: {current.message}" if current.message else title)
        self.elapsed_label.setText(f"{progress.elapsed_s:.1f} s")
        if progress.live_model is not None and progress.live_model is not self._drawn_model:
            self._draw_live(progress.live_model)
        self.progress_applied.emit(progress)

    def _draw_live(self, model: dict) -> None:
        """The model as registered so far: its points in their colours and its cameras as frusta."""
        from types import SimpleNamespace

        self._drawn_model = model
        world_from_cam = np.asarray(model["world_from_cam"], dtype=np.float64).reshape(-1, 4, 4)
        rgb = np.asarray(model["points_rgb"], dtype=np.float32).reshape(-1, 3) / 255.0
        self.live.update(SimpleNamespace(
            points_xyz=np.asarray(model["points_xyz"], dtype=np.float64).reshape(-1, 3),
            points_rgba=np.hstack([rgb, np.ones((len(rgb), 1), np.float32)]),
            trajectory=np.zeros((0, 3)), keyframe_centers=world_from_cam[:, :3, 3],
            keyframe_rot=world_from_cam[:, :3, :3], current_rot=None, current_center=None, aligned_to_gt=False))

    def _clear_live(self) -> None:
        self._drawn_model = None
        self.live.clear()

    def live_item_names(self) -> list[str]:
        return self.live.item_names()

    # --- drawing: results ----------------------------------------------------------------------
    def _clear_results(self) -> None:
        self.summary = None
        self.table.setRowCount(0)
        self.histogram_curve.setData([], [])
        self.mean_line.setVisible(False)
        self.model_box.clear()
        self.summary_label.setText("")
        self._clear_image()

    def apply_summary(self, summary: SfmSummary) -> None:
        """Show a finished run: numbers, table, histogram, models."""
        self.summary = summary
        s = summary
        total = s.seconds.get("total", sum(v for k, v in s.seconds.items() if k in PIPELINE_STAGES))
        color = REGISTERED_COLOR if s.registered == s.num_images else FAILED_COLOR
        self.summary_label.setText(
            f"<span style='color:{color}; font-weight:600'>{s.registered} / {s.num_images}</span> images registered"
            f" · <b>{s.num_points:,}</b> points · track length <b>{s.mean_track_length:.2f}</b>"
            f" · error <b>{s.mean_reprojection_error_px:.3f} px</b> · {total:.1f} s"
            f"<br><span style='color:#8a8f98'>{s.num_verified_pairs} verified pairs · initial pair "
            f"{s.initial_pair[0]}–{s.initial_pair[1]} · intrinsics: "
            + "; ".join(self._describe_camera(c) for c in s.cameras) + "</span>")
        self._message("")
        for stage in PIPELINE_STAGES:
            if stage in s.seconds:
                self.stage_times[stage].setText(f"{s.seconds[stage]:.1f} s")

        with QtCore.QSignalBlocker(self.model_box):
            self.model_box.clear()
            for model in s.models:
                self.model_box.addItem(f"{model.name}: {len(model.image_ids)} images, {model.num_points:,} points")
        self._fill_table(s)
        self._fill_histogram(s.observation_errors)
        self.bottom_tabs.setCurrentIndex(0)
        self._apply_color_mode()
        self.summary_applied.emit(s)

    def _fill_table(self, s: SfmSummary) -> None:
        with_inliers = any(r.inliers >= 0 for r in s.rows)
        columns = TABLE_COLUMNS + (("Inliers",) if with_inliers else ())
        self.table.setSortingEnabled(False)
        self.table.clearContents()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(s.rows))
        for row, r in enumerate(s.rows):
            name = QtWidgets.QTableWidgetItem(r.name)
            name.setData(QtCore.Qt.ItemDataRole.UserRole, r.image_id)
            name.setToolTip(f"image {r.image_id}: {r.name}")
            status = QtWidgets.QTableWidgetItem("registered" if r.registered else r.reason or "not registered")
            status.setForeground(QtGui.QColor(REGISTERED_COLOR if r.registered else FAILED_COLOR))
            status.setToolTip(status.text())
            observations = _NumberItem(r.observations, f"{r.observations:,}")
            observations.setToolTip(f"{r.observations:,} of {r.keypoints:,} keypoints observe a 3D point")
            cells = [name, status, observations,
                     _NumberItem(r.mean_error_px, "–" if math.isnan(r.mean_error_px) else f"{r.mean_error_px:.3f}")]
            if with_inliers:
                cells.append(_NumberItem(r.inliers, f"{r.inliers:,}" if r.inliers >= 0 else "–"))
            for col, item in enumerate(cells):
                self.table.setItem(row, col, item)
        self.table.setSortingEnabled(True)
        self._model_changed(self.model_box.currentIndex())

    def _fill_histogram(self, errors: np.ndarray) -> None:
        errors = np.asarray(errors, dtype=np.float64)
        errors = errors[np.isfinite(errors)]
        plot = self.histogram.getPlotItem()
        if not len(errors):
            self.histogram_curve.setData([], [])
            self.mean_line.setVisible(False)
            plot.setTitle("")
            return
        hi = max(float(np.percentile(errors, 99.5)), 1e-3)
        counts, edges = np.histogram(np.minimum(errors, hi), bins=HISTOGRAM_BINS, range=(0.0, hi))
        self.histogram_curve.setData(edges, counts)
        self.mean_line.setValue(float(errors.mean()))
        self.mean_line.setVisible(True)
        plot.setTitle(f"<span style='color:#aeb3bb; font-size:9pt'>{len(errors):,} observations · mean "
                      f"{errors.mean():.3f} px · median {np.median(errors):.3f} px</span>")
        plot.setXRange(0.0, hi, padding=0.02)
        plot.setYRange(0.0, float(counts.max()) * 1.05, padding=0)

    def histogram_data(self) -> tuple[np.ndarray, np.ndarray]:
        """(bin edges, counts) drawn in the histogram."""
        x, y = self.histogram_curve.getData()
        return (np.zeros(0), np.zeros(0)) if x is None else (np.asarray(x), np.asarray(y))

    def _model_changed(self, index: int) -> None:
        """Show the rows of the chosen model's images (and the unregistered ones)."""
        if self.summary is None or not (0 <= index < len(self.summary.models)):
            return
        ids = set(self.summary.models[index].image_ids)
        registered = {r.image_id for r in self.summary.rows if r.registered}
        for row in range(self.table.rowCount()):
            image_id = self.table.item(row, 0).data(QtCore.Qt.ItemDataRole.UserRole)
            self.table.setRowHidden(row, image_id in registered and image_id not in ids)

    def _apply_color_mode(self) -> None:
        """Colour the 3D view's sparse points; the identical "sfm_sparse" cloud is hidden while they are not RGB."""
        from .view3d import point_color_range

        mode = self.color_box.currentData()
        view = self.window.view
        view.set_point_color_mode(mode)
        cloud = "sfm_sparse"
        if mode != "rgb" and view.is_visible("cloud", cloud):
            view.set_visible("cloud", cloud, False)
            self._hidden_cloud = True
        elif mode == "rgb" and self._hidden_cloud:
            view.set_visible("cloud", cloud, True)
            self._hidden_cloud = False
        snap = view.snapshot
        if mode == "rgb" or snap is None or not len(snap.points):
            self.color_legend.setText("")
            return
        lo, hi = point_color_range(snap.points, mode)
        unit = " px" if mode == "error" else " views"
        self.color_legend.setText(
            f"<span style='color:#414487'>■</span><span style='color:#2a788e'>■</span>"
            f"<span style='color:#43bf71'>■</span><span style='color:#fde725'>■</span> "
            f"{lo:.2f}{unit} → {hi:.2f}{unit} and above")

    # --- the chosen image ---------------------------------------------------------------------
    def _row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            image_id = self.table.item(rows[0].row(), 0).data(QtCore.Qt.ItemDataRole.UserRole)
            self.show_image(int(image_id))

    def select_row(self, image_id: int) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(QtCore.Qt.ItemDataRole.UserRole) == image_id:
                if self.table.currentRow() != row:
                    self.table.selectRow(row)
                self.table.scrollToItem(self.table.item(row, 0))
                return

    def show_image(self, image_id: int) -> None:
        """Draw image ``image_id`` of the scene with its keypoints (pixels decode off the GUI thread)."""
        image = self._image(image_id)
        if image is None:
            return
        self.select_row(image_id)
        self.window.view.select_image(image_id)
        self.bottom_tabs.setCurrentIndex(1)
        if self._waiting_image == image_id or (self.shown_image_id == image_id and self._waiting_for is None):
            return
        self.unmatched_item.clear()
        self.observed_item.clear()
        if image.source is None:
            self._clear_image(f"{image.name}: no pixel source")
            return
        self._waiting_image = image_id
        self._waiting_for = self.loader.request(image.source)

    def _image(self, image_id: int):
        """The image as of the view's latest scene snapshot (a copy the worker thread never touches)."""
        snap = self.window.view.snapshot
        return snap.images.get(image_id) if snap is not None else None

    def _clear_image(self, text: str = "Click a camera in the 3D view or a row of the table.") -> None:
        self.image_item.clear()
        self.unmatched_item.clear()
        self.observed_item.clear()
        self.shown_image_id = None
        self._waiting_for = self._waiting_image = None
        self.image_info.setText(text)

    def _on_pixels(self, request_id: int, _key, rgb, why: str) -> None:
        if request_id != self._waiting_for:
            return
        image_id, self._waiting_for, self._waiting_image = self._waiting_image, None, None
        image = self._image(image_id)
        if image is None:
            return
        if rgb is None:
            self._clear_image(f"{image.name}: cannot show the pixels ({why})")
            return
        h, w = rgb.shape[:2]
        stride = max(1, math.ceil(max(w, h) / DISPLAY_MAX_SIDE))
        show_pixels(self.image_item, rgb[::stride, ::stride])
        self.image_item.setRect(QtCore.QRectF(0, 0, w, h))
        self.image_box.setRange(xRange=(0, w), yRange=(0, h), padding=0)
        seen = image.point3d_ids >= 0 if len(image.point3d_ids) == len(image.keypoints) else np.zeros(0, bool)
        kp = image.keypoints
        self.observed_item.setData(pos=kp[seen] if len(seen) else np.zeros((0, 2)))
        self.unmatched_item.setData(pos=kp[~seen] if len(seen) else kp)
        row = next((r for r in self.summary.rows if r.image_id == image_id), None) if self.summary else None
        parts = [f"<b>{image.name}</b>", f"{len(kp):,} keypoints",
                 f"<span style='color:{REGISTERED_COLOR}'>{int(seen.sum()):,} observations</span>"]
        if row is not None and not math.isnan(row.mean_error_px):
            parts.append(f"mean error {row.mean_error_px:.3f} px")
        if image.cam_from_world is None:
            reason = row.reason if row is not None and row.reason else "not registered"
            parts.append(f"<span style='color:{FAILED_COLOR}'>{reason}</span>")
        self.image_info.setText(" · ".join(parts))
        self.shown_image_id = image_id
        self.image_shown.emit(image_id)
