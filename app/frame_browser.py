"""The frame browser dock: the current image with its keypoints, and a slider over all frames."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtWidgets

log = logging.getLogger(__name__)

PIXEL_CACHE_SIZE = 8
KP_TRIANGULATED = (80, 220, 110, 230)  # keypoints with a 3D point
KP_UNMATCHED = (255, 170, 40, 200)


def _frame_sort_key(image) -> tuple:
    src = image.source
    ts = src.timestamp if src is not None and src.timestamp is not None else float("inf")
    idx = src.frame_index if src is not None and src.frame_index is not None else -1
    return (ts, idx, image.name, image.image_id)


class PixelLoader:
    """Reads an Image's pixels (RGB uint8) from its FrameRef; keeps a few recent frames and one open video."""

    def __init__(self):
        self._cache: OrderedDict = OrderedDict()
        self._video_path: Optional[str] = None
        self._video = None

    def load(self, ref) -> np.ndarray:
        key = (ref.path, ref.frame_index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        import cv2

        if ref.frame_index is not None and not os.path.isdir(ref.path) and _is_video(ref.path):
            if self._video_path != ref.path:
                from scene.io.sources import open_source

                self.close()
                self._video = open_source(ref.path)
                self._video_path = ref.path
            bgr = self._video.read(ref.frame_index).image
        else:
            bgr = cv2.imread(ref.path, cv2.IMREAD_COLOR)
            if bgr is None:
                raise OSError(f"cannot read image {ref.path}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB) if bgr.ndim == 2 else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self._cache[key] = rgb
        while len(self._cache) > PIXEL_CACHE_SIZE:
            self._cache.popitem(last=False)
        return rgb

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
        self._video, self._video_path = None, None


def _is_video(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")


class FrameBrowser(QtWidgets.QWidget):
    current_image_changed = QtCore.pyqtSignal(object)  # image_id or None

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None):
        super().__init__(parent)
        self.snapshot = None
        self.image_ids: list[int] = []
        self.current_image_id: Optional[int] = None
        self.loader = PixelLoader()
        self._shown_shape: Optional[tuple] = None
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
            self.image_item.clear()
            self.keypoints.clear()
            self.info.setText("—")
            self._show_message("No frames")
            self.current_image_changed.emit(None)
            return
        self.show_index(self.slider.value(), force=True)

    def reset(self) -> None:
        self.loader.close()
        self.loader = PixelLoader()
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
        pixels = None
        if image.source is not None:
            try:
                pixels = self.loader.load(image.source)
            except Exception as exc:  # noqa: BLE001 - a missing frame must not break browsing
                log.warning("frame %s: %s", image.name, exc)
        if pixels is None:
            self._shown_shape = None
            self.image_item.clear()
            self._show_message("Image not available" if image.source is not None else "No image source")
        else:
            self.message.hide()
            self.image_item.setImage(pixels, autoLevels=False, levels=(0, 255))
            if pixels.shape != self._shown_shape:  # keep the user's zoom while frames keep their size
                self._shown_shape = pixels.shape
                self.viewbox.autoRange(padding=0.0)
        self._draw_keypoints(image, pixels)
        self._update_info(index, image)
        if changed:
            self.current_image_changed.emit(image_id)

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
