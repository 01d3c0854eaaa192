"""The central 3D view: point clouds, camera frusta, trajectories and a grid (pyqtgraph.opengl).

It draws only from immutable ``SceneSnapshot`` objects handed to it on the GUI thread.
Everything is drawn in a "view" frame rotated so that the cameras' up points along +z
(the axis GLViewWidget orbits around); see view_geometry.view_from_world_rotation.

The GL surface is a QOpenGLWindow in a window container, not a QOpenGLWidget: one QOpenGLWidget switches
the whole main window to OpenGL composition, so every label or progress-bar change repainted through GL
(~40 ms a change under Xvfb's software GL, against ~1 ms now). Nothing can be drawn over a native child
window, so the statistics sit in the toolbar and the empty-scene hint replaces the surface.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pyqtgraph.opengl as gl
from OpenGL import GL
from PyQt6 import QtCore, QtGui, QtOpenGL, QtWidgets
from pyqtgraph.opengl.GLViewWidget import GLViewMixin

from . import style
from . import view_geometry as vg
from .snapshot_signature import drawable_signature

DEFAULT_ELEVATION = 28.0
DEFAULT_AZIMUTH = -60.0
MAX_TRAJECTORY_FRUSTA = 40
POINT_COLOR_MODES = ("rgb", "error", "track_length")  # how the sparse points are coloured
PICK_RADIUS_PX = 14.0  # a click this close to a camera centre (on screen) picks its image

Key = tuple[str, str]  # (kind, name): ("points", "sparse"), ("cloud", n), ("trajectory", n), ("cameras", "registered")


def _rgba_array(rgb: Optional[np.ndarray], n: int) -> np.ndarray:
    out = np.empty((n, 4), dtype=np.float32)
    if rgb is None or len(rgb) != n:
        out[:, :3] = style.DEFAULT_POINT_RGB
    else:
        out[:, :3] = np.asarray(rgb, dtype=np.float32) / 255.0
    out[:, 3] = 1.0
    return out


def scalar_rgba(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(N,) values -> (N, 4) float32 viridis colours over [lo, hi] (clipped)."""
    import pyqtgraph as pg

    t = np.clip((np.asarray(values, dtype=np.float64) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    t = 0.2 + 0.8 * np.where(np.isfinite(t), t, 1.0)  # viridis' darkest fifth vanishes on the dark background
    return np.asarray(pg.colormap.get("viridis").map(t, mode="float"), dtype=np.float32).reshape(-1, 4)


def point_color_range(points, mode: str) -> tuple[float, float]:
    """The value range a colour mode spans: errors up to their 95th percentile, track lengths 2..p95."""
    if mode == "error" and len(points):
        return 0.0, max(float(np.percentile(points.error, 95)), 1e-3)
    if mode == "track_length" and len(points):
        return 2.0, max(float(np.percentile(points.track_lengths(), 95)), 3.0)
    return 0.0, 1.0


class GLViewWindow(GLViewMixin, QtOpenGL.QOpenGLWindow):
    """pyqtgraph's GL view (camera, items, mouse orbit/pan/zoom) on a QOpenGLWindow."""

    def devicePixelRatioF(self) -> float:  # GLViewMixin asks QWidget's name
        return float(self.devicePixelRatio())

    def render_image(self) -> QtGui.QImage:
        """The view as it is now, rendered into an offscreen buffer (``update()`` only schedules a frame)."""
        w, h = max(self.deviceWidth(), 1), max(self.deviceHeight(), 1)
        self.makeCurrent()
        fbo = QtOpenGL.QOpenGLFramebufferObject(
            w, h, QtOpenGL.QOpenGLFramebufferObject.Attachment.CombinedDepthStencil)
        try:
            fbo.bind()
            GL.glViewport(0, 0, w, h)
            self.paint(region=(0, 0, w, h), viewport=(0, 0, w, h))
            return fbo.toImage()
        finally:
            fbo.release()
            self.doneCurrent()


def grab_with_view(widget: QtWidgets.QWidget) -> QtGui.QPixmap:
    """``widget.grab()`` with every SceneView's GL surface painted in (a native window is not in a grab)."""
    pixmap = widget.grab()
    painter = QtGui.QPainter(pixmap)
    try:
        for view in widget.findChildren(SceneView):
            if view.gl_container.isVisible():
                top_left = view.gl_container.mapTo(widget, QtCore.QPoint(0, 0))
                frame = view.gl.render_image()
                painter.drawImage(QtCore.QRect(top_left, view.gl_container.size()), frame)
    finally:
        painter.end()
    return pixmap


class ElidedLabel(QtWidgets.QLabel):
    """A one-line label that shortens its text with "…" instead of clipping it when the row is narrow."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._full = ""

    def setText(self, text: str) -> None:
        self._full = text
        self.setToolTip(text)
        self._elide()

    def text(self) -> str:
        return self._full

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        room = max(self.contentsRect().width() - 4, 0)
        super().setText(self.fontMetrics().elidedText(self._full, QtCore.Qt.TextElideMode.ElideRight, room))


class SceneView(QtWidgets.QWidget):
    """A small view toolbar above a GL view (a QOpenGLWindow in a container)."""

    point_size_changed = QtCore.pyqtSignal(float)
    image_picked = QtCore.pyqtSignal(int)  # a registered image's camera was clicked

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None, point_size: float = 3.0):
        super().__init__(parent)
        self.snapshot = None
        self._drawn_signature = None
        self._items: dict[Key, list[gl.GLGraphicsItem.GLGraphicsItem]] = {}
        self._visible: dict[Key, bool] = {}
        self._view_from_world: Optional[np.ndarray] = None
        self._base_frustum_size: Optional[float] = None
        self._selected_image_id: Optional[int] = None
        self._point_size = float(point_size)
        self._point_color_mode = "rgb"
        self._press_pos: Optional[QtCore.QPointF] = None
        self.trajectory_colors: dict[str, tuple] = {}

        self.gl = GLViewWindow()
        self.gl.setBackgroundColor(style.qcolor(style.VIEW_BACKGROUND))
        self.gl.opts["fov"] = 50
        self.gl.setCameraPosition(distance=15, elevation=DEFAULT_ELEVATION, azimuth=DEFAULT_AZIMUTH)
        self.gl_container = QtWidgets.QWidget.createWindowContainer(self.gl, self)
        self.gl_container.setMinimumSize(320, 240)
        self.gl_container.setFocusPolicy(QtCore.Qt.FocusPolicy.ClickFocus)

        self.grid = gl.GLGridItem(color=style.GRID_COLOR)
        self.grid.setSize(20, 20)
        self.grid.setSpacing(1, 1)
        self.gl.addItem(self.grid)

        # Scene statistics at the right end of the toolbar; a hint instead of the surface while empty.
        self.overlay = ElidedLabel(self)
        self.overlay.setObjectName("overlay")
        self._build_toolbar()
        self.placeholder = QtWidgets.QLabel(
            "<div style='font-size:17px; color:#aeb3bb'>No scene loaded</div>"
            "<div style='margin-top:6px'>Drop a video, an image folder, a COLMAP model or a "
            ".parallax project here,<br>or use <b>File ▸ Open</b>.</div>", self)
        self.placeholder.setObjectName("placeholder")
        self.placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setMinimumSize(320, 240)
        self.placeholder.setAutoFillBackground(True)
        self.surface = QtWidgets.QStackedWidget(self)
        self.surface.addWidget(self.placeholder)
        self.surface.addWidget(self.gl_container)
        self.surface.setCurrentWidget(self.placeholder)
        # The statistics take what the toolbar leaves of the row (a QToolBar would fold them into its overflow).
        self.overlay.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        self.overlay.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.overlay.hide()
        header = QtWidgets.QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.setSpacing(0)
        header.addWidget(self.toolbar)
        header.addWidget(self.overlay, 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(header)
        layout.addWidget(self.surface, 1)
        self.gl.installEventFilter(self)

    # --- toolbar ----------------------------------------------------------------------
    def _build_toolbar(self) -> None:
        bar = self.toolbar = QtWidgets.QToolBar("3D view", self)
        bar.setIconSize(QtCore.QSize(16, 16))
        bar.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.grid_action = bar.addAction("Grid")
        self.grid_action.setCheckable(True)
        self.grid_action.setChecked(True)
        self.grid_action.setToolTip("Show the ground grid")
        self.grid_action.toggled.connect(self.grid.setVisible)
        bar.addSeparator()

        bar.addWidget(QtWidgets.QLabel(" Point size ", bar))
        self.point_size_box = QtWidgets.QDoubleSpinBox(bar)
        self.point_size_box.setRange(0.5, 30.0)
        self.point_size_box.setSingleStep(0.5)
        self.point_size_box.setDecimals(1)
        self.point_size_box.setSuffix(" px")
        self.point_size_box.setValue(self._point_size)
        self.point_size_box.setToolTip("Size of rendered 3D points in screen pixels")
        self.point_size_box.valueChanged.connect(self.set_point_size)
        bar.addWidget(self.point_size_box)

        bar.addWidget(QtWidgets.QLabel("  Camera size ", bar))
        self.frustum_box = QtWidgets.QDoubleSpinBox(bar)
        self.frustum_box.setRange(0.1, 10.0)
        self.frustum_box.setSingleStep(0.25)
        self.frustum_box.setDecimals(2)
        self.frustum_box.setPrefix("× ")
        self.frustum_box.setValue(1.0)
        self.frustum_box.setToolTip("Scale of the camera frusta relative to the scene")
        self.frustum_box.valueChanged.connect(lambda _v: self._redraw())
        bar.addWidget(self.frustum_box)

    # --- public API -------------------------------------------------------------------
    def set_snapshot(self, snapshot) -> None:
        self.snapshot = snapshot
        if self._view_from_world is None and self._has_poses(snapshot):
            self._compute_alignment(snapshot)
        signature = (drawable_signature(snapshot), self._view_from_world is None)
        if signature == self._drawn_signature:
            return  # nothing drawn changed (a NeRF run recorded, ...): no rebuild, no GL frame
        self._drawn_signature = signature
        self._redraw()

    def reset_alignment(self) -> None:
        """Forget the up-alignment and camera size (a new scene was opened)."""
        self._drawn_signature = None
        self._view_from_world = None
        self._base_frustum_size = None
        self._selected_image_id = None

    def set_visible(self, kind: str, name: str, visible: bool) -> None:
        key = (kind, name)
        self._visible[key] = bool(visible)
        for item in self._items.get(key, []):
            item.setVisible(bool(visible))
        if kind == "cameras":
            for item in self._items.get(("selected", ""), []):
                item.setVisible(bool(visible))
        self.gl.update()

    def is_visible(self, kind: str, name: str) -> bool:
        return self._visible.get((kind, name), True)

    def set_point_size(self, value: float) -> None:
        value = float(value)
        if value == self._point_size:
            return
        self._point_size = value
        if self.point_size_box.value() != value:
            self.point_size_box.setValue(value)
        for key, items in self._items.items():
            if key[0] in ("points", "cloud"):
                for item in items:
                    item.setData(size=value)
        self.point_size_changed.emit(value)

    def point_size(self) -> float:
        return self._point_size

    def set_point_color_mode(self, mode: str) -> None:
        """Colour the sparse points by their RGB, reprojection error or track length (viridis)."""
        if mode not in POINT_COLOR_MODES:
            raise ValueError(f"unknown point colour mode {mode!r}; known: {', '.join(POINT_COLOR_MODES)}")
        if mode != self._point_color_mode:
            self._point_color_mode = mode
            self._redraw()

    def point_color_mode(self) -> str:
        return self._point_color_mode

    def pick_image(self, x: float, y: float, radius_px: float = PICK_RADIUS_PX) -> Optional[int]:
        """The registered image whose camera centre is drawn nearest to widget pixel (x, y), within radius_px."""
        snap = self.snapshot
        if snap is None or not self.is_visible("cameras", "registered"):
            return None
        ids = [i for i, im in snap.images.items() if im.cam_from_world is not None]
        if not ids:
            return None
        centers = self._to_view(np.array([snap.images[i].cam_from_world.center() for i in ids]))
        w, h = max(self.gl.width(), 1), max(self.gl.height(), 1)
        mvp = self.gl.projectionMatrix((0, 0, w, h), (0, 0, w, h)) * self.gl.viewMatrix()
        m = np.array(mvp.data(), dtype=np.float64).reshape(4, 4).T  # QMatrix4x4.data() is column-major
        clip = np.column_stack((centers, np.ones(len(centers)))) @ m.T
        front = clip[:, 3] > 1e-9
        ndc = clip[:, :2] / np.where(front, clip[:, 3], 1.0)[:, None]
        screen = np.column_stack(((ndc[:, 0] + 1.0) * 0.5 * w, (1.0 - ndc[:, 1]) * 0.5 * h))
        dist = np.where(front, np.hypot(screen[:, 0] - x, screen[:, 1] - y), np.inf)
        best = int(np.argmin(dist))
        return ids[best] if dist[best] <= radius_px else None

    def select_image(self, image_id: Optional[int]) -> None:
        """Highlight one registered image's frustum (the frame browser's current frame)."""
        self._selected_image_id = image_id
        self._draw_selected()

    def fit_to_scene(self) -> None:
        if self.snapshot is not None and self._has_poses(self.snapshot):
            self._compute_alignment(self.snapshot)
            self._redraw()
        bounds = self._bounds()
        if bounds is None:
            return
        lo, hi = bounds
        center = (lo + hi) / 2.0
        radius = max(float(np.linalg.norm(hi - lo)) / 2.0, 1e-3)
        fov = math.radians(self.gl.opts["fov"])
        aspect = max(self.gl.width(), 1) / max(self.gl.height(), 1)
        half = math.tan(fov / 2.0) * min(1.0, aspect)  # fit the narrower side
        distance = radius / max(half, 1e-3) * 1.05
        self.gl.setCameraPosition(pos=QtGui.QVector3D(*center.astype(float)), distance=distance)
        self.gl.update()

    def reset_camera(self) -> None:
        self.gl.setCameraPosition(elevation=DEFAULT_ELEVATION, azimuth=DEFAULT_AZIMUTH)
        self.fit_to_scene()

    def grab_rgb(self) -> np.ndarray:
        """The rendered 3D view as an (H, W, 3) uint8 array."""
        image = self.gl.render_image().convertToFormat(QtGui.QImage.Format.Format_RGB888)
        w, h = image.width(), image.height()
        buffer = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), dtype=np.uint8)
        return buffer.reshape(h, image.bytesPerLine())[:, : w * 3].reshape(h, w, 3).copy()

    def item_keys(self) -> list[Key]:
        return [k for k, items in self._items.items() if items]

    # --- drawing ----------------------------------------------------------------------
    @staticmethod
    def _has_poses(snapshot) -> bool:
        return any(im.cam_from_world is not None for im in snapshot.images.values()) or any(
            len(t) for t in snapshot.trajectories.values())

    def _pose_rotations(self, snapshot) -> np.ndarray:
        rots = [im.cam_from_world.rotation.T for im in snapshot.images.values() if im.cam_from_world is not None]
        if rots:
            return np.array(rots)
        for traj in snapshot.trajectories.values():
            if len(traj):
                return vg.quat_wxyz_to_matrices(traj.world_from_cam_quat_wxyz)
        return np.zeros((0, 3, 3))

    def _compute_alignment(self, snapshot) -> None:
        self._view_from_world = vg.view_from_world_rotation(self._pose_rotations(snapshot))
        self._base_frustum_size = None  # recomputed from the new layout

    def _to_view(self, xyz: np.ndarray) -> np.ndarray:
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        if self._view_from_world is not None:
            xyz = xyz @ self._view_from_world.T
        return xyz

    def _rot_to_view(self, world_from_cam_rot: np.ndarray) -> np.ndarray:
        if self._view_from_world is None:
            return world_from_cam_rot
        return np.einsum("ij,njk->nik", self._view_from_world, world_from_cam_rot)

    def _set_item(self, key: Key, index: int, factory, **data) -> None:
        items = self._items.setdefault(key, [])
        if index < len(items):
            items[index].setData(**data)
        else:
            item = factory(**data)
            item.setVisible(self._visible.get(key, True) if key[0] != "selected"
                            else self._visible.get(("cameras", "registered"), True))
            self.gl.addItem(item)
            items.append(item)

    def _drop_items(self, key: Key, keep: int = 0) -> None:
        items = self._items.get(key, [])
        while len(items) > keep:
            self.gl.removeItem(items.pop())
        if not items:
            self._items.pop(key, None)

    def _scatter(self, key: Key, xyz: np.ndarray, rgb: Optional[np.ndarray]) -> None:
        if len(xyz) == 0:
            self._drop_items(key)
            return
        pos = self._to_view(xyz).astype(np.float32)
        color = rgb if rgb is not None and rgb.ndim == 2 and rgb.shape[1] == 4 else _rgba_array(rgb, len(pos))
        self._set_item(key, 0, lambda **d: gl.GLScatterPlotItem(pxMode=True, glOptions="opaque", **d),
                       pos=pos, color=color, size=self._point_size)

    def _sparse_colors(self, points) -> np.ndarray:
        """uint8 RGB, or float RGBA from the colour map for the error and track-length modes."""
        mode = self._point_color_mode
        if mode == "rgb":
            return points.rgb
        values = points.error if mode == "error" else points.track_lengths()
        return scalar_rgba(values, *point_color_range(points, mode))

    def _lines(self, key: Key, index: int, pos: np.ndarray, color, width: float, mode: str) -> None:
        self._set_item(key, index, lambda **d: gl.GLLinePlotItem(glOptions="opaque", antialias=False, **d),
                       pos=np.asarray(pos, dtype=np.float32), color=color, width=width, mode=mode)

    def _frustum_shape(self, camera, size: float) -> np.ndarray:
        if camera is None:
            return vg.frustum_corners_cam(1.0, 1.0, 0.6667, 0.5, 4, 3, size)  # 4:3, ~67 degree field of view
        fx, fy = camera.focal_xy
        cx, cy = camera.principal_point
        return vg.frustum_corners_cam(fx, fy, cx, cy, camera.width, camera.height, size)

    def _frustum_size(self) -> float:
        if self._base_frustum_size is None:
            bounds = self._bounds(include_grid=False)
            diag = float(np.linalg.norm(bounds[1] - bounds[0])) if bounds is not None else 1.0
            self._base_frustum_size = max(diag * 0.025, 1e-4)
        return self._base_frustum_size * self.frustum_box.value()

    def _redraw(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        live: set[Key] = set()

        # Sparse SfM/SLAM points and named clouds.
        if len(snap.points):
            self._scatter(("points", "sparse"), snap.points.xyz, self._sparse_colors(snap.points))
            live.add(("points", "sparse"))
        for name, cloud in snap.clouds.items():
            self._scatter(("cloud", name), cloud.xyz, cloud.rgb)
            live.add(("cloud", name))

        size = self._frustum_size()

        # Frusta of registered images, grouped by camera (they share one shape).
        registered = [im for im in snap.images.values() if im.cam_from_world is not None]
        if registered:
            segments = []
            by_camera: dict[int, list] = {}
            for im in registered:
                by_camera.setdefault(im.camera_id, []).append(im)
            for camera_id, ims in by_camera.items():
                rot = np.array([im.cam_from_world.rotation.T for im in ims])
                centers = np.array([im.cam_from_world.center() for im in ims])
                shape = self._frustum_shape(snap.cameras.get(camera_id), size)
                segments.append(vg.frustum_segments(self._rot_to_view(rot), self._to_view(centers), shape))
            self._lines(("cameras", "registered"), 0, np.vstack(segments), style.FRUSTUM_COLOR, 1.5, "lines")
            live.add(("cameras", "registered"))

        # Trajectories: a polyline plus a few frusta in a darker shade of the same colour.
        self.trajectory_colors = style.trajectory_colors(snap.trajectories)
        any_camera = next(iter(snap.cameras.values()), None)
        for name, traj in snap.trajectories.items():
            if len(traj) == 0:
                continue
            key = ("trajectory", name)
            color = self.trajectory_colors[name]
            centers = self._to_view(traj.world_from_cam_translation)
            self._lines(key, 0, centers, color, 2.5, "line_strip")
            step = max(1, math.ceil(len(traj) / MAX_TRAJECTORY_FRUSTA))
            idx = np.arange(0, len(traj), step)
            rot = self._rot_to_view(vg.quat_wxyz_to_matrices(traj.world_from_cam_quat_wxyz[idx]))
            shade = tuple(c * 0.62 for c in color[:3]) + (1.0,)
            segments = vg.frustum_segments(rot, centers[idx], self._frustum_shape(any_camera, size * 0.7))
            self._lines(key, 1, segments, shade, 1.0, "lines")
            live.add(key)

        for key in [k for k in self._items if k not in live and k[0] != "selected"]:
            self._drop_items(key)
        self._draw_selected()
        self._update_grid()
        self._update_overlay(snap, registered)
        self.gl.update()

    def _draw_selected(self) -> None:
        key: Key = ("selected", "")
        snap = self.snapshot
        image = None if snap is None or self._selected_image_id is None else snap.images.get(self._selected_image_id)
        if image is None or image.cam_from_world is None:
            self._drop_items(key)
            self.gl.update()
            return
        rot = self._rot_to_view(image.cam_from_world.rotation.T[None])
        center = self._to_view(image.cam_from_world.center())
        shape = self._frustum_shape(snap.cameras.get(image.camera_id), self._frustum_size() * 1.6)
        self._lines(key, 0, vg.frustum_segments(rot, center, shape), style.FRUSTUM_SELECTED_COLOR, 2.5, "lines")
        self.gl.update()

    def _bounds(self, include_grid: bool = True):
        snap = self.snapshot
        if snap is None:
            return None
        parts = []
        if len(snap.points):
            parts.append((self._to_view(vg.trim_sample(snap.points.xyz)), True))
        for cloud in snap.clouds.values():
            parts.append((self._to_view(vg.trim_sample(cloud.xyz)), True))
        centers = [im.cam_from_world.center() for im in snap.images.values() if im.cam_from_world is not None]
        if centers:
            parts.append((self._to_view(np.array(centers)), False))
        for traj in snap.trajectories.values():
            parts.append((self._to_view(traj.world_from_cam_translation), False))
        return vg.robust_bounds(parts)

    def _update_grid(self) -> None:
        bounds = self._bounds()
        if bounds is None:
            return
        lo, hi = bounds
        span = float(max(hi[0] - lo[0], hi[1] - lo[1], (hi[2] - lo[2]) * 0.5, 1e-3))
        step = vg.nice_step(span * 1.5, 24)
        cells = max(4, int(math.ceil(span * 1.5 / step / 2.0)) * 2)
        self.grid.setSpacing(step, step, step)
        self.grid.setSize(cells * step, cells * step, 1)
        center = (lo + hi) / 2.0
        # Snap the grid to its spacing so lines stay put while a reconstruction grows.
        gx, gy = (round(center[0] / step) * step, round(center[1] / step) * step)
        tr = QtGui.QMatrix4x4()
        tr.translate(gx, gy, float(lo[2]))
        self.grid.setTransform(tr)

    def _update_overlay(self, snap, registered) -> None:
        parts = []
        if len(snap.points):
            parts.append(f"{len(snap.points):,} points")
        for name, cloud in snap.clouds.items():
            parts.append(f"{name}: {len(cloud):,} pts")
        if snap.images:
            parts.append(f"{len(registered):,} / {len(snap.images):,} images registered")
        if snap.trajectories:
            parts.append(f"{len(snap.trajectories)} trajector{'y' if len(snap.trajectories) == 1 else 'ies'}")
        empty = not (parts or snap.cameras)
        self.surface.setCurrentWidget(self.placeholder if empty else self.gl_container)
        self.overlay.setVisible(bool(parts))
        self.overlay.setText("   ·   ".join(parts))

    def eventFilter(self, obj, event) -> bool:  # pick cameras; files dropped on the surface go to the window
        kind = QtCore.QEvent.Type
        if obj is self.gl and event.type() in (kind.DragEnter, kind.DragMove, kind.Drop):
            QtWidgets.QApplication.sendEvent(self.window(), event)
            return True
        if obj is self.gl and event.type() == kind.MouseButtonPress \
                and event.button() == QtCore.Qt.MouseButton.LeftButton:
            self._press_pos = event.position()
        elif obj is self.gl and event.type() == kind.MouseButtonRelease and self._press_pos is not None:
            moved = (event.position() - self._press_pos).manhattanLength()
            self._press_pos = None
            if moved <= 3.0:  # a click, not the end of an orbit drag
                image_id = self.pick_image(event.position().x(), event.position().y())
                if image_id is not None:
                    self.select_image(image_id)
                    self.image_picked.emit(image_id)
        return super().eventFilter(obj, event)
