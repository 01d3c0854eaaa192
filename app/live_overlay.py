"""Live maps drawn over the scene in the 3D view while a pipeline runs (SLAM's map, SfM's growing model).

Items are added to the view's GLViewWidget without depth test so the live map stays visible inside a dense
cloud; ``clear`` removes them when the pipeline's results land in the scene and the view draws those instead.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyqtgraph.opengl as gl
from PyQt6 import QtGui

from . import style
from . import view_geometry as vg

MAP_POINT_RGBA = (0.25, 0.9, 0.95, 1.0)  # cyan: distinct from the reference cloud's colours
KEYFRAME_RGBA = style.TRAJECTORY_PALETTE[1]
TRAJECTORY_RGBA = style.TRAJECTORY_PALETTE[0]  # the colour the scene's "slam" trajectory gets
CURRENT_RGBA = (1.0, 1.0, 1.0, 1.0)


def overlay_gl_options() -> dict:
    # Drawn over the scene without depth test: the live map must stay visible inside a dense cloud.
    from OpenGL import GL

    return {GL.GL_DEPTH_TEST: False, GL.GL_BLEND: True, GL.GL_CULL_FACE: False,
            "glBlendFunc": (GL.GL_SRC_ALPHA, GL.GL_ONE_MINUS_SRC_ALPHA)}


class LiveMapOverlay:
    """A map being built (SLAM or SfM), drawn as extra items in a SceneView's GLViewWidget (GUI thread).

    ``update`` takes any object with ``points_xyz`` (N, 3), optional ``points_rgba`` (N, 4) float, ``trajectory``
    (M, 3), ``keyframe_centers`` (K, 3), ``keyframe_rot`` (K, 3, 3) world_from_cam, ``current_rot`` / ``current_center``
    (or None) and ``aligned_to_gt``.
    """

    def __init__(self, view):
        self.view = view
        self._items: dict[str, gl.GLGraphicsItem.GLGraphicsItem] = {}
        self._own_rotation: Optional[np.ndarray] = None  # used when the view has no up-alignment
        self._fitted = False

    def _rotation(self, snap) -> np.ndarray:
        view_rot = getattr(self.view, "_view_from_world", None)
        if view_rot is not None:
            return view_rot
        if self._own_rotation is None and len(snap.keyframe_rot) >= 2:
            self._own_rotation = vg.view_from_world_rotation(snap.keyframe_rot)
        return self._own_rotation if self._own_rotation is not None else np.eye(3)

    def _set(self, name: str, factory, **data) -> None:
        item = self._items.get(name)
        if item is None:
            item = factory(**data)
            item.setGLOptions(overlay_gl_options())
            item.setDepthValue(10)  # after the scene's items
            self.view.gl.addItem(item)
            self._items[name] = item
        else:
            item.setData(**data)
        item.setVisible(True)

    def _hide(self, name: str) -> None:
        if name in self._items:
            self._items[name].setVisible(False)

    def update(self, snap) -> None:
        rot = self._rotation(snap)
        parts = [(snap.points_xyz, True), (snap.trajectory, False), (snap.keyframe_centers, False)]
        bounds = vg.robust_bounds(parts)
        if bounds is None:
            self.clear()
            return
        diag = float(np.linalg.norm(bounds[1] - bounds[0]))
        size = max(diag * 0.02, 1e-3)
        if len(snap.points_xyz):
            self._set("points", lambda **d: gl.GLScatterPlotItem(pxMode=True, **d),
                      pos=(snap.points_xyz @ rot.T).astype(np.float32),
                      color=getattr(snap, "points_rgba", None) if getattr(snap, "points_rgba", None) is not None
                      else MAP_POINT_RGBA, size=3.0)
        else:
            self._hide("points")
        line = lambda **d: gl.GLLinePlotItem(antialias=True, **d)  # noqa: E731
        if len(snap.trajectory) >= 2:
            self._set("trajectory", line, pos=(snap.trajectory @ rot.T).astype(np.float32), color=TRAJECTORY_RGBA,
                      width=2.5, mode="line_strip")
        else:
            self._hide("trajectory")
        camera = self.view.snapshot.cameras.get(1) if self.view.snapshot is not None else None
        shape = (vg.frustum_corners_cam(*camera.focal_xy, *camera.principal_point, camera.width, camera.height, 1.0)
                 if camera is not None else vg.frustum_corners_cam(1.0, 1.0, 0.6667, 0.5, 4, 3, 1.0))
        if len(snap.keyframe_rot):
            seg = vg.frustum_segments(np.einsum("ij,njk->nik", rot, snap.keyframe_rot), snap.keyframe_centers @ rot.T,
                                      shape * size)
            self._set("keyframes", line, pos=seg.astype(np.float32), color=KEYFRAME_RGBA, width=1.2, mode="lines")
        else:
            self._hide("keyframes")
        if snap.current_rot is not None:
            seg = vg.frustum_segments((rot @ snap.current_rot)[None], (snap.current_center @ rot.T)[None],
                                      shape * size * 2.0)
            self._set("current", line, pos=seg.astype(np.float32), color=CURRENT_RGBA, width=2.5, mode="lines")
        else:
            self._hide("current")
        if not self._fitted and not snap.aligned_to_gt and getattr(self.view, "_view_from_world", None) is None \
                and len(snap.keyframe_rot) >= 3:
            self._fit(bounds, rot)
        self.view.gl.update()

    def _fit(self, bounds, rot) -> None:
        """Frame the live map once when the scene itself gives the view nothing to fit (no poses, no GT)."""
        self._fitted = True
        lo, hi = bounds
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        lo, hi = (corners @ rot.T).min(axis=0), (corners @ rot.T).max(axis=0)
        radius = max(float(np.linalg.norm(hi - lo)) / 2.0, 1e-3)
        self.view.gl.setCameraPosition(pos=QtGui.QVector3D(*((lo + hi) / 2.0).astype(float)), distance=radius * 2.6)

    def clear(self) -> None:
        for item in self._items.values():
            self.view.gl.removeItem(item)
        self._items.clear()
        self._own_rotation = None
        self._fitted = False
        self.view.gl.update()

    def item_names(self) -> list[str]:
        return [name for name, item in self._items.items() if item.visible()]
