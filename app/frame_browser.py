"""The frame browser dock: the current image with its keypoints, and a slider over all frames.

Pixels are decoded on a FrameLoader thread and posted back queued, so scrubbing never blocks the GUI.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtWidgets

from scene.io.sources_decode import decode_image_file
from scene.io.sources_video import VIDEO_SUFFIXES

from .image_plot import show_pixels

log = logging.getLogger(__name__)

PIXEL_CACHE_SIZE = 8
KP_TRIANGULATED = (80, 220, 110, 230)  # keypoints with a 3D point
KP_UNMATCHED = (255, 170, 40, 200)


def _frame_sort_key(image) -> tuple:
    src = image.source
    ts = src.timestamp if src is not None and src.timestamp is not None else float("inf")
    idx = src.frame_index if src is not None and src.frame_index is not None else -1
    return (ts, idx, image.name, image.image_id)


class FrameLoader(QtCore.QObject):
    """Decodes frames off the GUI thread and posts each result back, queued, with its request id.

    Only the newest request matters: older requests still queued are skipped when their turn comes,
    and the browser ignores results whose id is not the one it waits for. One pool thread lives as
    long as the loader, so the open video (one at a time, reused while browsing it) stays on that thread.
    """

    loaded = QtCore.pyqtSignal(int, object, object, str)  # request id, (path, frame_index), RGB or None, why not

    def __init__(self, parent: Optional[QtCore.QObject] = None):
        super().__init__(parent)
        self._pool = QtCore.QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._pool.setExpiryTimeout(-1)  # keep the one thread: it owns the open video
        self._lock = threading.Lock()
        self._latest = 0
        self._video_path: Optional[str] = None
        self._video = None  # touched only on the pool thread

    def request(self, ref) -> int:
        """Decode ``ref`` (a FrameRef) in the background; returns the id its result will carry."""
        with self._lock:
            self._latest += 1
            request_id = self._latest
        self._pool.start(lambda: self._run(request_id, ref))
        return request_id

    def cancel(self) -> None:
        """Forget every request; a decode already running finishes and its result is stale."""
        with self._lock:
            self._latest += 1

    def release_video(self) -> None:
        """Cancel, then close the open video on the loader thread (a new scene is coming)."""
        self.cancel()
        self._pool.start(self._close_video)

    def wait_idle(self, timeout_ms: int = -1) -> bool:
        return self._pool.waitForDone(timeout_ms)

    def _run(self, request_id: int, ref) -> None:
        with self._lock:
            if request_id != self._latest:
                return  # stale before it started: skip the decode
        try:
            rgb, why = self._decode(ref), ""
        except Exception as exc:  # noqa: BLE001 - a frame that cannot be shown must not break browsing
            rgb, why = None, str(exc) or type(exc).__name__
        try:
            self.loaded.emit(request_id, (ref.path, ref.frame_index), rgb, why)
        except RuntimeError:  # the browser went away while this frame decoded
            pass

    def _decode(self, ref) -> np.ndarray:
        import cv2

        if ref.frame_index is not None and _is_video(ref.path):
            if self._video_path != ref.path:
                from scene.io.sources import open_source

                self._close_video()
                self._video = open_source(ref.path)
                self._video_path = ref.path
            bgr = self._video.read(ref.frame_index).image
        else:
            bgr, why = decode_image_file(Path(ref.path))  # refuses truncated files instead of half-grey frames
            if bgr is None:
                raise OSError(why)
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB) if bgr.ndim == 2 else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _close_video(self) -> None:
        if self._video is not None:
            self._video.close()
        self._video, self._video_path = None, None


def _is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_SUFFIXES


class FrameBrowser(QtWidgets.QWidget):
    """Shows the current frame; its pixels are decoded by a FrameLoader, the info line updates at once."""

    current_image_changed = QtCore.pyqtSignal(object)  # image_id or None
    frame_shown = QtCore.pyqtSignal(object)  # image_id whose pixels (or "not available" message) are now shown

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None):
        super().__init__(parent)
        self.snapshot = None
        self.image_ids: list[int] = []
        self.current_image_id: Optional[int] = None
        self.loader = FrameLoader(self)
        self.loader.loaded.connect(self._on_loaded)
        self._pixels: OrderedDict = OrderedDict()  # (path, frame_index) -> RGB, the most recent last
        self._waiting_for: Optional[int] = None  # the request whose result is the current frame
        self._waiting_key: Optional[tuple] = None
        self._shown_shape: Optional[tuple] = None
        self._hidden_show: Optional[tuple] = None  # _show's arguments while the browser was behind a tab
        self._brushes = (pg.mkBrush(*KP_UNMATCHED), pg.mkBrush(*KP_TRIANGULATED))

        self.canvas = pg.GraphicsLayoutWidget(self)
        self.canvas.setBackground((22, 23, 26))
        self.canvas.ci.setContentsMargins(0, 0, 0, 0)
        self.viewbox = self.canvas.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.viewbox.setDefaultPadding(0.0)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.keypoints = pg.ScatterPlotItem(size=5, pen=None, pxMode=True)
        self.viewbox.addItem(self.image_item)
        self.viewbox.addItem(self.keypoints)
        self.message = pg.TextItem("No frames", color=(140, 146, 156), anchor=(0.5, 0.5))
        self.viewbox.addItem(self.message, ignoreBounds=True)

        style = self.style()
        SP = QtWidgets.QStyle.StandardPixmap
        self.prev_button = QtWidgets.QToolButton(self)
        self.prev_button.setIcon(style.standardIcon(SP.SP_MediaSeekBackward))
        self.prev_button.setToolTip("Previous frame")
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button = QtWidgets.QToolButton(self)
        self.next_button.setIcon(style.standardIcon(SP.SP_MediaSeekForward))
        self.next_button.setToolTip("Next frame")
        self.next_button.clicked.connect(lambda: self.step(1))
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self._slider_moved)
        self.kp_check = QtWidgets.QCheckBox("Keypoints", self)
        self.kp_check.setChecked(True)
        self.kp_check.toggled.connect(self.keypoints.setVisible)
        self.info = QtWidgets.QLabel("—", self)
        self.info.setObjectName("frameInfo")
        self.info.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)

        row = QtWidgets.QHBoxLayout()
        row.setContentsMargins(6, 2, 6, 2)
        row.addWidget(self.prev_button)
        row.addWidget(self.slider, 1)
        row.addWidget(self.next_button)
        row.addWidget(self.kp_check)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.setSpacing(2)
        layout.addWidget(self.canvas, 1)
        layout.addLayout(row)
        layout.addWidget(self.info)
        self.info.setContentsMargins(8, 0, 8, 0)
        self._show_message("No frames")

    # --- data ---------------------------------------------------------------------------
    def set_snapshot(self, snap) -> None:
        self.snapshot = snap
        ordered = sorted(snap.images.values(), key=_frame_sort_key)
        ids = [im.image_id for im in ordered]
        if ids != self.image_ids:
            self.image_ids = ids
            self.slider.blockSignals(True)
            self.slider.setRange(0, max(0, len(ids) - 1))
            if self.current_image_id in ids:
                self.slider.setValue(ids.index(self.current_image_id))
            else:
                self.slider.setValue(0)
            self.slider.blockSignals(False)
        if not ids:
            self.current_image_id = None
            self._stop_waiting()
            self.image_item.clear()
            self.keypoints.clear()
            self.info.setText("—")
            self._show_message("No frames")
            self.current_image_changed.emit(None)
            return
        self.show_index(self.slider.value(), force=True)

    def reset(self) -> None:
        self.loader.release_video()
        self._stop_waiting()
        self._pixels.clear()
        self.current_image_id = None
        self.image_ids = []

    def step(self, delta: int) -> None:
        if self.image_ids:
            self.slider.setValue(int(np.clip(self.slider.value() + delta, 0, len(self.image_ids) - 1)))

    def _slider_moved(self, index: int) -> None:
        self.show_index(index)

    def show_index(self, index: int, force: bool = False) -> None:
        if not self.image_ids or self.snapshot is None:
            return
        index = int(np.clip(index, 0, len(self.image_ids) - 1))
        image_id = self.image_ids[index]
        image = self.snapshot.images[image_id]
        changed = image_id != self.current_image_id
        if not (changed or force):
            return
        self.current_image_id = image_id
        self._update_info(index, image)
        ref = image.source
        if ref is None:
            self._stop_waiting()
            self._show(image, None, "No image source")
        else:
            key = (ref.path, ref.frame_index)
            pixels = self._pixels.get(key)
            if pixels is not None:
                self._pixels.move_to_end(key)
                self._stop_waiting()
                self._show(image, pixels)
            elif key != self._waiting_key:  # already on its way: asking again would restart the decode
                self.keypoints.clear()  # the previous picture stays until this one arrives
                self._waiting_key = key
                self._waiting_for = self.loader.request(ref)
        if changed:
            self.current_image_changed.emit(image_id)

    def _stop_waiting(self) -> None:
        if self._waiting_for is not None:
            self.loader.cancel()
        self._waiting_for, self._waiting_key = None, None

    def _on_loaded(self, request_id: int, key: tuple, pixels, why: str) -> None:
        if pixels is not None:
            self._pixels[key] = pixels
            while len(self._pixels) > PIXEL_CACHE_SIZE:
                self._pixels.popitem(last=False)
        if request_id != self._waiting_for:
            return  # stale: the slider moved on while it decoded
        self._waiting_for, self._waiting_key = None, None
        image = self.snapshot.images.get(self.current_image_id) if self.snapshot is not None else None
        if image is None:
            return
        if pixels is None:
            log.warning("frame %s: cannot decode: %s", image.name, why)
            self._show(image, None, f"Cannot decode {image.name}\n{why}")
        else:
            self._show(image, pixels)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.draw_if_pending()

    def draw_if_pending(self) -> None:
        """Draw the frame that arrived while the browser was off screen (connected to its dock's visibility)."""
        if self._hidden_show is not None:
            self._draw(*self._hidden_show)

    def _show(self, image, pixels, message: str = "") -> None:
        # Behind another tab (SLAM, SfM, NeRF) a dock keeps isVisible() but has no visible region. Drawing a frame
        # and its keypoints there cost the GUI thread 5 ms at the end of every run for nothing.
        if not self.isVisible() or self.visibleRegion().isEmpty():
            self._hidden_show = (image, pixels, message)
            return
        self._draw(image, pixels, message)

    def _draw(self, image, pixels, message: str = "") -> None:
        self._hidden_show = None
        if pixels is None:
            self.image_item.clear()
            self._show_message(message)
        else:
            self.message.hide()
            show_pixels(self.image_item, pixels)
            if pixels.shape != self._shown_shape:  # keep the user's zoom while frames keep their size
                self._shown_shape = pixels.shape
                self.viewbox.autoRange(padding=0.0)
        self._draw_keypoints(image, pixels)
        self.frame_shown.emit(image.image_id)

    def _draw_keypoints(self, image, pixels) -> None:
        kp = image.keypoints
        if len(kp) == 0:
            self.keypoints.clear()
            return
        camera = self.snapshot.cameras.get(image.camera_id)
        if pixels is not None and camera is not None and camera.width != pixels.shape[1]:
            kp = kp * (pixels.shape[1] / camera.width)  # frames shown at another size than the camera's
        triangulated = image.point3d_ids >= 0
        self.keypoints.setData(pos=kp, brush=[self._brushes[int(t)] for t in triangulated], pen=None, size=5)

    def _update_info(self, index: int, image) -> None:
        src = image.source
        parts = [f"<b>{image.name}</b>", f"{index + 1} / {len(self.image_ids)}"]
        if src is not None and src.timestamp is not None:
            parts.append(f"t = {src.timestamp:.3f} s")
        if src is not None and src.frame_index is not None:
            parts.append(f"frame {src.frame_index}")
        if len(image.keypoints):
            n3d = int((image.point3d_ids >= 0).sum())
            parts.append(f"{len(image.keypoints):,} keypoints ({n3d:,} with 3D)")
        parts.append("registered" if image.cam_from_world is not None else "not registered")
        self.info.setText("  ·  ".join(parts))

    def _show_message(self, text: str) -> None:
        self._shown_shape = None
        self.message.setText(text)
        self.message.setPos(0, 0)
        self.message.show()
        self.viewbox.setRange(xRange=(-1, 1), yRange=(-1, 1), padding=0)
