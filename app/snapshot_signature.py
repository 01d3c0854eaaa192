"""A cheap fingerprint of what a scene snapshot draws: equal fingerprints, nothing to redraw or recompute.

Scene events fire for changes the 3D view does not show (a NeRF run recorded, a render added, a source
renamed); rebuilding every GL item and the render-path preview for those costs the GUI thread tens of ms.
"""
from __future__ import annotations

import numpy as np


def _digest(*arrays) -> int:
    return hash(tuple(np.ascontiguousarray(a).tobytes() if a is not None else b"" for a in arrays))


def drawable_signature(snap) -> tuple:
    """Registered poses and their cameras, trajectories, sparse points (position, colour, error, track
    length) and named clouds."""
    images = tuple((i, im.name, im.camera_id, im.cam_from_world.matrix3x4().tobytes())
                   for i, im in sorted(snap.images.items()) if im.cam_from_world is not None)
    unregistered = sum(1 for im in snap.images.values() if im.cam_from_world is None)
    cameras = tuple((c, cam.model, cam.width, cam.height, cam.params.tobytes())
                    for c, cam in sorted(snap.cameras.items()))
    trajectories = tuple((name, _digest(t.timestamps, t.world_from_cam_quat_wxyz, t.world_from_cam_translation))
                         for name, t in sorted(snap.trajectories.items()))
    p = snap.points
    points = _digest(p.xyz, p.rgb, p.error, p.track_ptr)
    clouds = tuple((name, _digest(c.xyz, c.rgb)) for name, c in sorted(snap.clouds.items()))
    return images, unregistered, cameras, trajectories, points, clouds
