"""The SLAM tab: controls, the current frame with its features, live numbers, a plot, and the live map in the 3D view.

The panel only draws ``SlamSnapshot`` objects from ``app/slam_worker.SlamWorker``; it never runs a SLAM step.
The live map is drawn by ``live_overlay.LiveMapOverlay`` as extra items in the main 3D view: map points, keyframe frusta, the
current camera and the trajectory. With a "ground_truth" trajectory in the scene the worker aligns the
estimate to it (Sim(3), geometry.metrics.ate), so the live map sits on the ground truth the view draws in green.
When the results are written into the scene (end of the source, or Finish) the overlay is cleared: the scene's
own "slam" trajectory, keyframe images and points take over.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui, QtWidgets

from . import style
from . import view_geometry as vg
from .image_plot import image_plot, show_pixels
from .live_overlay import LiveMapOverlay
from .slam_worker import SlamSnapshot, SlamWorker

log = logging.getLogger(__name__)

KP_COLORS = {  # keypoint status -> colour (slam.system KP_NEW / KP_TRACKED / KP_OUTLIER)
    1: (64, 214, 96),    # tracked: green
    0: (240, 200, 40),   # new: yellow
    2: (240, 70, 70),    # outlier: red
}
STATE_COLORS = {"OK": "#40d660", "INIT": "#f0b429", "LOST": "#ff6b6b", "RELOCALIZED": "#3d8fd6", "": "#8a8f98"}
GROUND_TRUTH = "ground_truth"


PLOT_UPDATE_INTERVAL_S = 0.5


def fixed_width(label: QtWidgets.QLabel, widest: str) -> None:
    """Give a label whose text changes while a run plays a constant width: one that follows its text widens
    the dock, which re-lays out the whole window and repaints the 3D view and both plots."""
    font = QtGui.QFont(label.font())
    font.setBold(True)  # the values are drawn bold by a style sheet, which font() does not know yet
    label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
    label.setMinimumWidth(QtGui.QFontMetrics(font).horizontalAdvance(widest) + 8)


class SlamPanel(QtWidgets.QWidget):
    """The SLAM dock's widget. ``window`` is the MainWindow (its document, scene and 3D view)."""

    snapshot_applied = QtCore.pyqtSignal(object)  # SlamSnapshot, after the widgets show it (tests)
    results_written = QtCore.pyqtSignal(dict)

    def __init__(self, window, parent: Optional[QtWidgets.QWidget] = None):
        super().__init__(parent)
        self.window = window
        self.worker: Optional[SlamWorker] = None
        self.snapshot: Optional[SlamSnapshot] = None
        self.overlay = LiveMapOverlay(window.view)
        self._build()
        window.document.about_to_load.connect(self.shutdown)  # a new scene voids the run
        window.document.loaded.connect(self._update_source)
        self._update_source()

    # --- construction ---------------------------------------------------------------------
    def _button(self, text: str, icon: str, tip: str, slot) -> QtWidgets.QToolButton:
        from .main_window import tool_button  # main_window creates this panel: import it lazily

        return tool_button(self, text, icon, tip, slot)

    def _build(self) -> None:
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(6)

        self.source_label = QtWidgets.QLabel(self)
        self.source_label.setStyleSheet("color:#aeb3bb")
        self.source_label.setWordWrap(True)
        layout.addWidget(self.source_label)

        controls = QtWidgets.QHBoxLayout()
        controls.setSpacing(4)
        self.play_button = self._button("Play", "SP_MediaPlay", "Run SLAM over the frames (Space)", self.toggle_play)
        self.step_button = self._button("Step", "SP_MediaSeekForward", "Process exactly one frame", self.step)
        self.reset_button = self._button("Reset", "SP_MediaSkipBackward", "Forget the map and start again",
                                         self.reset)
        self.finish_button = self._button("Finish", "SP_MediaStop",
                                          "Stop here and write the map and trajectory into the scene", self.finish)
        for b in (self.play_button, self.step_button, self.reset_button, self.finish_button):
            controls.addWidget(b)
        controls.addStretch(1)
        self.speed_box = QtWidgets.QComboBox(self)
        self.speed_box.addItem("Real time", True)
        self.speed_box.addItem("As fast as possible", False)
        self.speed_box.setToolTip("Playback speed: frames paced by their timestamps, as recorded (local mapping "
                                  "keeps up, so the map is denser and the result steadier; a folder of images, "
                                  "which has no clock, plays at 30 fps), or every frame as soon as the previous "
                                  "one is tracked")
        self.speed_box.setCurrentIndex(self.speed_box.findData(self.window.settings.slam_realtime()))
        self.speed_box.currentIndexChanged.connect(self._speed_changed)
        controls.addWidget(self.speed_box)
        layout.addLayout(controls)
        self.hide_clouds_box = QtWidgets.QCheckBox("Hide point clouds while the SLAM tab is active", self)
        self.hide_clouds_box.setChecked(True)
        self.hide_clouds_box.setToolTip("Dense clouds (such as the demo's reference cloud) hide the live map and "
                                        "make every redraw slow; the SLAM map points are always drawn")
        self.hide_clouds_box.toggled.connect(lambda _on: self._apply_cloud_visibility())
        layout.addWidget(self.hide_clouds_box)
        self._hidden_clouds: list[str] = []
        self.align_box = QtWidgets.QCheckBox("Land the result in the ground truth's frame", self)
        self.align_box.setChecked(True)
        self.align_box.setToolTip(
            "Monocular SLAM builds its map at an arbitrary scale in the first camera's frame. With ground truth, "
            "the result is moved into the ground truth's frame by the Sim(3) of the ATE, as the live map is drawn, "
            "so the two overlay in the 3D view. Without, when the scene already holds these frames as posed "
            "images (a transforms.json or COLMAP model opened with them), it lands in their frame, fitted on the "
            "keyframes. Unticked, the scene keeps the SLAM frame.")
        self.align_box.toggled.connect(self._align_changed)
        layout.addWidget(self.align_box)

        seek = QtWidgets.QHBoxLayout()
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, 0)
        self.slider.setToolTip("Frame. While paused, drag to seek: forward processes the frames in between, "
                               "backward resets the map and replays from the first frame.")
        self.slider.sliderReleased.connect(lambda: self.seek(self.slider.value()))
        self.slider.valueChanged.connect(self._slider_moved)
        self.frame_label = QtWidgets.QLabel("– / –", self)
        fixed_width(self.frame_label, "00000 / 00000")
        self.frame_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        seek.addWidget(self.slider, 1)
        seek.addWidget(self.frame_label)
        layout.addLayout(seek)

        # The current frame with its keypoints.
        self._last_plot_update = 0.0
        self.image_view, self.image_item = image_plot(self)
        plot = self.image_view.getPlotItem()
        self.kp_items = {}
        for status, rgb in KP_COLORS.items():
            item = pg.ScatterPlotItem(size=5, pen=None, brush=pg.mkBrush(*rgb, 230), pxMode=True)
            plot.addItem(item)
            self.kp_items[status] = item
        self.image_view.setMinimumHeight(240)
        layout.addWidget(self.image_view, 3)
        legend = QtWidgets.QLabel(
            "<span style='color:#40d660'>●</span> tracked &nbsp; <span style='color:#f0c828'>●</span> new &nbsp; "
            "<span style='color:#f04646'>●</span> outlier", self)
        legend.setStyleSheet("color:#aeb3bb")
        layout.addWidget(legend)

        # Live numbers.
        grid = QtWidgets.QGridLayout()
        grid.setHorizontalSpacing(14)
        grid.setVerticalSpacing(2)
        self.values: dict[str, QtWidgets.QLabel] = {}
        fields = [("state", "State"), ("track_ms", "Tracking"), ("fps", "Speed"), ("tracked", "Tracked points"),
                  ("keyframes", "Keyframes"), ("map_points", "Map points"), ("ate", "ATE (Sim(3))"),
                  ("loops", "Loop closures")]
        for i, (key, title) in enumerate(fields):
            name = QtWidgets.QLabel(title, self)
            name.setStyleSheet("color:#8a8f98")
            value = QtWidgets.QLabel("–", self)
            value.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setStyleSheet("font-weight:600")
            fixed_width(value, "RELOCALIZED · finished")
            self.values[key] = value
            grid.addWidget(name, i // 2, (i % 2) * 2)
            grid.addWidget(value, i // 2, (i % 2) * 2 + 1)
        self.values["loops"].setToolTip("Loops closed so far (bag-of-words place recognition, Sim(3) and pose-graph "
                                         "correction); the map is redrawn corrected when one closes")
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        layout.addLayout(grid)
        self.reason_label = QtWidgets.QLabel("", self)
        self.reason_label.setWordWrap(True)
        self.reason_label.setStyleSheet("color:#f0b429")
        # Two lines always reserved: a reason coming and going must not re-lay the dock out (and repaint the
        # 3D view) at every frame of an initialisation.
        self.reason_label.setFixedHeight(2 * self.reason_label.fontMetrics().lineSpacing() + 4)
        layout.addWidget(self.reason_label)

        # Tracked points (left axis) and ATE (right axis) per frame.
        self.plot = pg.PlotWidget(self)
        self.plot.setBackground(style.qcolor(style.VIEW_BACKGROUND))
        p = self.plot.getPlotItem()
        p.setMenuEnabled(False)
        p.showGrid(x=True, y=True, alpha=0.15)
        p.setLabel("left", "tracked points", color="#6cb2f0")
        p.setLabel("bottom", "frame")
        p.setMouseEnabled(False, False)
        self.tracked_curve = p.plot(pen=pg.mkPen("#6cb2f0", width=1.5))
        self.ate_box = pg.ViewBox()
        p.showAxis("right")
        p.scene().addItem(self.ate_box)
        p.getAxis("right").linkToView(self.ate_box)
        p.getAxis("right").setLabel("ATE", color="#40d660")
        self.ate_box.setXLink(p)
        # Fixed ranges (_fit_plot_ranges): an auto-ranging box would move the shared x range at every update.
        p.vb.disableAutoRange()
        self.ate_box.disableAutoRange()
        self.ate_curve = pg.PlotCurveItem(pen=pg.mkPen("#40d660", width=1.5))
        self.ate_box.addItem(self.ate_curve)
        p.vb.sigResized.connect(lambda: self.ate_box.setGeometry(p.vb.sceneBoundingRect()))
        # Redrawing an axis (tick layout and text) was most of the GUI thread's painting during Play. Ranges
        # move in nice steps (_fit_plot_ranges) and each axis is painted from a cached pixmap meanwhile.
        for name in ("left", "bottom", "right"):
            p.getAxis(name).setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._plot_ranges: Optional[tuple] = None
        self.plot.setMinimumHeight(150)
        layout.addWidget(self.plot, 2)

        QtGui.QShortcut(QtGui.QKeySequence("Space"), self, self.toggle_play,
                        context=QtCore.Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self._set_running(False)

    # --- the source -----------------------------------------------------------------------
    def source(self):
        """(path, camera, ground truth trajectory or None) of the scene's current source, or None."""
        scene = self.window.scene
        if not scene.sources or not scene.cameras:
            return None
        src = scene.sources[-1]
        cameras = list(scene.cameras.values())
        camera = next((c for c in cameras if (c.width, c.height) == (src.get("width"), src.get("height"))),
                      cameras[0])
        gt = scene.trajectories.get(GROUND_TRUTH)
        return Path(src["path"]), camera, gt

    def _update_source(self) -> None:
        src = self.source()
        if src is None:
            self.source_label.setText("No frame source: open a video or an image sequence first.")
        else:
            path, camera, gt = src
            frames = self.window.scene.sources[-1].get("frames")  # absent for a model opened with its images
            self.source_label.setText(f"<b>{path.name}</b>" + (f" · {frames} frames" if frames else "")
                                      + f" · {camera.model} {camera.width}×{camera.height}"
                                      + (" · ground truth" if gt is not None else ""))
            if frames:
                with QtCore.QSignalBlocker(self.slider):
                    self.slider.setRange(0, int(frames) - 1)
        for b in (self.play_button, self.step_button, self.reset_button, self.finish_button):
            b.setEnabled(src is not None)
        posed = any(im.registered for im in self.window.scene.images.values())
        self.align_box.setText("Land the result in the ground truth's frame" if src is None or src[2] is not None
                               or not posed else "Land the result in the frame of the scene's posed images")
        self.align_box.setEnabled(src is not None and (src[2] is not None or posed))
        if src is not None:
            self._ensure_worker()  # opens the source and warms the SLAM kernels up before the first Play

    def _align_changed(self, on: bool) -> None:
        if self.worker is not None:
            self.worker.align_to_reference = on  # read when the result is written

    def _apply_cloud_visibility(self) -> None:
        view = self.window.view
        hide = self.hide_clouds_box.isChecked() and self.worker is not None
        if hide:
            snap = view.snapshot
            for name in (snap.clouds if snap is not None else {}):
                if view.is_visible("cloud", name) and name not in self._hidden_clouds:
                    view.set_visible("cloud", name, False)
                    self._hidden_clouds.append(name)
        else:
            for name in self._hidden_clouds:
                view.set_visible("cloud", name, True)
            self._hidden_clouds = []

    # --- commands -------------------------------------------------------------------------
    def _ensure_worker(self) -> Optional[SlamWorker]:
        if self.worker is not None:
            return self.worker
        src = self.source()
        if src is None:
            self.window.show_error("SLAM", "Open a video or an image sequence first.")
            return None
        path, camera, gt = src
        worker = SlamWorker(path, camera, self.window.scene, gt, parent=self)
        worker.realtime = self.realtime
        worker.align_to_reference = self.align_box.isChecked()
        worker.snapshot_ready.connect(self._on_snapshot)
        worker.results_written.connect(self._on_results)
        worker.failed.connect(lambda message: self.window.show_error("SLAM failed", message))
        self.worker = worker
        worker.start()
        self._apply_cloud_visibility()
        return worker

    def play(self) -> None:
        worker = self._ensure_worker()
        if worker is not None:
            worker.play()
            self._set_running(True)

    def pause(self) -> None:
        if self.worker is not None:
            self.worker.pause()

    def toggle_play(self) -> None:
        if self.snapshot is not None and self.snapshot.running or self.play_button.text() == "Pause":
            self.pause()
        else:
            self.play()

    def step(self) -> None:
        worker = self._ensure_worker()
        if worker is not None:
            worker.step_once()

    def seek(self, index: int) -> None:
        worker = self._ensure_worker()
        if worker is not None:
            worker.seek(index)
            self._set_running(True)

    def reset(self) -> None:
        if self.worker is not None:
            self.worker.reset()
        self.overlay.clear()

    def finish(self) -> None:
        if self.worker is not None:
            self.worker.finish()

    @property
    def realtime(self) -> bool:
        return bool(self.speed_box.currentData())

    def _speed_changed(self, _index: int) -> None:
        self.window.settings.set_slam_realtime(self.realtime)
        if self.worker is not None:
            self.worker.set_realtime(self.realtime)

    def _slider_moved(self, value: int) -> None:
        total = self.slider.maximum() + 1
        self.frame_label.setText(f"{value + 1} / {total}")
        if not self.slider.isSliderDown() and self.slider.isEnabled():  # keyboard / click on the groove
            self.seek(value)

    def shutdown(self) -> None:
        """End the worker thread (the scene is about to change, or the window closes)."""
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.snapshot_ready.disconnect()
            worker.quit_worker()
            worker.wait()
            worker.deleteLater()
        self.snapshot = None
        self.overlay.clear()
        self._apply_cloud_visibility()
        self._set_running(False)

    # --- drawing --------------------------------------------------------------------------
    def _set_running(self, running: bool) -> None:
        from .main_window import _icon

        self.play_button.setText("Pause" if running else "Play")
        self.play_button.setIcon(_icon(self, "SP_MediaPause" if running else "SP_MediaPlay"))
        self.step_button.setEnabled(not running and self.source() is not None)
        self.slider.setEnabled(not running)
        self.slider.setToolTip("Pause to seek" if running else
                               "Frame. While paused, drag to seek: forward processes the frames in between, "
                               "backward resets the map and replays from the first frame.")

    def _on_snapshot(self, snap: SlamSnapshot) -> None:
        self.snapshot = snap
        self._set_running(snap.running)
        if snap.finished:
            self.play_button.setEnabled(False)
            self.step_button.setEnabled(False)
        else:
            self.play_button.setEnabled(True)
        with QtCore.QSignalBlocker(self.slider):
            self.slider.setRange(0, max(snap.total_frames - 1, 0))
            self.slider.setValue(max(snap.frame_index, 0))
        self.frame_label.setText(f"{snap.frame_index + 1} / {snap.total_frames}")

        if snap.image_rgb is not None:
            show_pixels(self.image_item, snap.image_rgb)
            w, h = snap.image_size
            self.image_item.setRect(QtCore.QRectF(0, 0, w, h))
            self.image_view.getPlotItem().vb.setRange(xRange=(0, w), yRange=(0, h), padding=0)
        else:
            self.image_item.clear()
        for status, item in self.kp_items.items():
            xy = snap.keypoints_xy[snap.keypoint_status == status] if len(snap.keypoints_xy) else np.zeros((0, 2))
            item.setData(pos=xy)

        v = self.values
        color = STATE_COLORS.get(snap.state, "#dcdfe4")
        v["state"].setText(f"<span style='color:{color}'>{snap.state or '—'}</span>"
                           + (" · finished" if snap.finished else ""))
        v["track_ms"].setText(f"{snap.track_ms:.1f} ms" if snap.frame_index >= 0 else "–")
        v["fps"].setText(f"{snap.fps:.1f} fps" if snap.fps > 0 else "–")
        v["tracked"].setText(f"{snap.num_tracked:,}")
        v["keyframes"].setText(f"{snap.keyframes:,}")
        v["map_points"].setText(f"{snap.map_points:,}")
        v["ate"].setText(f"{snap.ate_rmse[-1]:.3f} (scale {snap.ate_scale:.2f})" if len(snap.ate_rmse)
                         and snap.ate_scale is not None else ("no ground truth" if self.source() is None
                                                              or self.source()[2] is None else "–"))
        v["loops"].setText(f"{snap.loop_closures}")
        self.reason_label.setText(snap.reason)
        self.reason_label.setToolTip(snap.reason)

        # Axis painting dominates the GUI thread's time (measured with py-spy): the plot follows the
        # run at a few Hz, and exactly whenever the run pauses or ends.
        now = time.monotonic()
        if snap.finished or not snap.running or now - self._last_plot_update >= PLOT_UPDATE_INTERVAL_S:
            self._last_plot_update = now
            self.tracked_curve.setData(snap.history_frames, snap.history_tracked)
            self.ate_curve.setData(snap.ate_frames, snap.ate_rmse)
            self._fit_plot_ranges(snap)
        if snap.finished:
            self.overlay.clear()
        else:
            self.overlay.update(snap)
        self.snapshot_applied.emit(snap)

    def _fit_plot_ranges(self, snap: SlamSnapshot) -> None:
        """x: the whole source; y: nice ceilings of tracked points and ATE. Set only when one changes."""
        last = max(snap.total_frames - 1, snap.frame_index, 1)
        x_max = float(last) if snap.total_frames > 0 else vg.nice_ceiling(last)
        tracked_max = vg.nice_ceiling(float(np.max(snap.history_tracked)) if len(snap.history_tracked) else 0.0)
        ate_max = vg.nice_ceiling(float(np.max(snap.ate_rmse)) * 1.05) if len(snap.ate_rmse) else 1.0
        ranges = (x_max, tracked_max, ate_max)
        if ranges == self._plot_ranges:
            return
        self._plot_ranges = ranges
        plot = self.plot.getPlotItem()
        plot.setXRange(0, x_max, padding=0)
        plot.setYRange(0, tracked_max, padding=0)
        self.ate_box.setYRange(0, ate_max, padding=0)

    def _on_results(self, summary: dict) -> None:
        self.overlay.clear()
        self.window.statusBar().showMessage(
            f"SLAM: {summary['images']} keyframes, {summary['points']:,} points and the \"slam\" trajectory "
            "were added to the scene", 8000)
        self.results_written.emit(summary)
