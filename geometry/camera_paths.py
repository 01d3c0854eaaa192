"""Camera paths for NeRF renders: orbit, along a trajectory, through chosen cameras. Pure numpy.

Every path is a list of OpenCV ``cam_from_world`` (``Rigid3d``). Rotations are interpolated with
slerp on ``world_from_cam`` quaternions; positions are camera centres in the world.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from scene.rigid import Rigid3d, matrix_to_quat_wxyz, quat_wxyz_to_matrix


@dataclass(frozen=True)
class Orbit:
    """A circle of radius ``radius`` around ``centre``, ``elevation`` radians above the plane normal to ``up``."""

    centre: np.ndarray
    radius: float
    elevation: float
    up: np.ndarray
    start: np.ndarray  # unit vector in the orbit plane where frame 0 sits


def look_at(centre, target, up) -> Rigid3d:
    """OpenCV cam_from_world at ``centre`` looking at ``target``; image up is as close to ``up`` as it can be."""
    forward = np.asarray(target, float) - np.asarray(centre, float)
    norm = np.linalg.norm(forward)
    if norm == 0:
        raise ValueError("look_at: the camera sits on its target")
    forward /= norm
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight along up: any right vector will do
        right = np.cross(forward, _any_perpendicular(forward))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation_cw = np.stack([right, down, forward])  # rows: camera x (right), y (down), z (forward) in world
    return Rigid3d.from_rotation(rotation_cw, -rotation_cw @ np.asarray(centre, float))


def _any_perpendicular(v: np.ndarray) -> np.ndarray:
    axis = np.eye(3)[int(np.argmin(np.abs(v)))]
    p = np.cross(v, axis)
    return p / np.linalg.norm(p)


def estimate_up(cams_from_world: Sequence[Rigid3d]) -> np.ndarray:
    """World "up" as the mean of the cameras' up axes (OpenCV -y), the way people hold cameras."""
    ups = np.array([-pose.rotation[1] for pose in cams_from_world])
    mean = ups.sum(axis=0)
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 1e-9 else np.array([0.0, 0.0, 1.0])


def orbit_from_cameras(cams_from_world: Sequence[Rigid3d], points=None, up=None) -> Orbit:
    """Orbit fitted to a scene: centre from the sparse points (median) or else the camera centres' mean;
    radius, elevation and start from the cameras' mean offset from the centre."""
    if len(cams_from_world) == 0:
        raise ValueError("an orbit needs at least one camera")
    centres = np.array([pose.center() for pose in cams_from_world])
    up = estimate_up(cams_from_world) if up is None else np.asarray(up, float) / np.linalg.norm(up)
    pts = None if points is None else np.asarray(points, float).reshape(-1, 3)
    if pts is not None and len(pts):
        centre = np.median(pts[np.all(np.isfinite(pts), axis=1)], axis=0)
    else:
        centre = centres.mean(axis=0)
        if len(centres) > 1:  # cameras around an object: the point they look at is a better centre
            centre = _closest_point_to_axes(cams_from_world, fallback=centre)
    offsets = centres - centre
    heights = offsets @ up
    planar = offsets - np.outer(heights, up)
    radius = float(np.median(np.linalg.norm(planar, axis=1)))
    if radius < 1e-9:  # cameras straight above the centre: orbit at their distance
        radius = float(max(np.median(np.abs(heights)), 1e-3))
    elevation = float(np.arctan2(np.median(heights), radius))
    first = planar[0] if np.linalg.norm(planar[0]) > 1e-9 else _any_perpendicular(up)
    return Orbit(centre, radius, elevation, up, first / np.linalg.norm(first))


def _closest_point_to_axes(cams_from_world, fallback) -> np.ndarray:
    """Least-squares point nearest to every camera's optical axis (None-safe: fallback when degenerate)."""
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for pose in cams_from_world:
        d = pose.rotation[2]
        m = np.eye(3) - np.outer(d, d)
        a += m
        b += m @ pose.center()
    if np.linalg.cond(a) > 1e8:
        return np.asarray(fallback, float)
    return np.linalg.solve(a, b)


def orbit_path(orbit: Orbit, frames: int) -> list[Rigid3d]:
    """``frames`` cameras evenly around the orbit, looking at its centre. Closed: the step from the
    last frame back to the first equals every other step (the video loops)."""
    if frames < 1:
        raise ValueError("an orbit needs at least one frame")
    start = orbit.start - (orbit.start @ orbit.up) * orbit.up
    start /= np.linalg.norm(start)
    side = np.cross(orbit.up, start)
    horizontal = orbit.radius
    vertical = orbit.radius * np.tan(orbit.elevation)
    poses = []
    for k in range(frames):
        angle = 2.0 * np.pi * k / frames
        centre = orbit.centre + horizontal * (np.cos(angle) * start + np.sin(angle) * side) + vertical * orbit.up
        poses.append(look_at(centre, orbit.centre, orbit.up))
    return poses


# --- slerp and resampling ---------------------------------------------------------------------

def slerp(q0, q1, t: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (wxyz) along the shorter arc."""
    q0 = np.asarray(q0, float) / np.linalg.norm(q0)
    q1 = np.asarray(q1, float) / np.linalg.norm(q1)
    dot = float(q0 @ q1)
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear is exact enough and avoids 0/0
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1.0 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


def _interpolate(centres: np.ndarray, quats: np.ndarray, params: np.ndarray, queries: np.ndarray) -> list[Rigid3d]:
    """Piecewise-linear centres and slerped rotations at ``queries`` of the increasing ``params``."""
    poses = []
    for s in queries:
        i = int(np.clip(np.searchsorted(params, s, side="right") - 1, 0, len(params) - 2))
        span = params[i + 1] - params[i]
        t = 0.0 if span <= 0 else float(np.clip((s - params[i]) / span, 0.0, 1.0))
        if t == 0.0:
            q, c = quats[i], centres[i]
        elif t == 1.0:
            q, c = quats[i + 1], centres[i + 1]
        else:
            q, c = slerp(quats[i], quats[i + 1], t), (1.0 - t) * centres[i] + t * centres[i + 1]
        rotation_wc = quat_wxyz_to_matrix(q)
        poses.append(Rigid3d(matrix_to_quat_wxyz(rotation_wc.T), -rotation_wc.T @ c))
    return poses


def _arc_parameter(centres: np.ndarray, quats: np.ndarray, angle_weight: float) -> np.ndarray:
    """Cumulative path parameter: distance travelled plus ``angle_weight`` x angle turned."""
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    dots = np.abs(np.sum(quats[1:] * quats[:-1], axis=1)).clip(0.0, 1.0)
    angles = 2.0 * np.arccos(dots)
    return np.concatenate([[0.0], np.cumsum(steps + angle_weight * angles)])


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average with shrinking windows at the ends, so the first and last values are kept."""
    if window <= 1 or len(values) < 3:
        return values.copy()
    half = window // 2
    out = np.empty_like(values)
    for i in range(len(values)):
        h = min(half, i, len(values) - 1 - i)
        out[i] = values[i - h:i + h + 1].mean(axis=0)
    return out


def _world_from_cam_arrays(cams_from_world: Sequence[Rigid3d]) -> tuple[np.ndarray, np.ndarray]:
    centres = np.array([pose.center() for pose in cams_from_world], dtype=float).reshape(-1, 3)
    quats = np.array([matrix_to_quat_wxyz(pose.rotation.T) for pose in cams_from_world], dtype=float).reshape(-1, 4)
    for i in range(1, len(quats)):  # one hemisphere, so averaging and slerp take the short way
        if quats[i] @ quats[i - 1] < 0:
            quats[i] = -quats[i]
    return centres, quats


def resample_trajectory(cams_from_world: Sequence[Rigid3d], frames: int, smooth_window: int = 1,
                        angle_weight: Optional[float] = None) -> list[Rigid3d]:
    """``frames`` cameras along a trajectory (SLAM or SfM) at constant speed, first and last kept.

    Speed is measured as distance plus ``angle_weight`` x rotation (default: the mean camera spacing
    per radian), so a camera that mostly turns still moves evenly. ``smooth_window`` > 1 averages
    jitter away first (centres and quaternions, endpoints kept).
    """
    if len(cams_from_world) == 0:
        raise ValueError("the trajectory is empty")
    if frames < 1:
        raise ValueError("at least one frame is needed")
    if len(cams_from_world) == 1 or frames == 1:
        return [cams_from_world[0]] * frames if frames > 1 else [cams_from_world[0]]
    centres, quats = _world_from_cam_arrays(cams_from_world)
    centres = _smooth(centres, smooth_window)
    quats = _smooth(quats, smooth_window)
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    if angle_weight is None:
        length = np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()
        angle_weight = max(length, 1e-9) / max(len(centres) - 1, 1)
    params = _arc_parameter(centres, quats, angle_weight)
    if params[-1] <= 0:  # the camera never moved: spread the frames over the input order instead
        params = np.arange(len(centres), dtype=float)
    poses = _interpolate(centres, quats, params, np.linspace(0.0, params[-1], frames))
    if smooth_window <= 1:  # keep the endpoints bit-exact
        poses[0], poses[-1] = cams_from_world[0], cams_from_world[-1]
    return poses


def interpolate_cameras(cams_from_world: Sequence[Rigid3d], frames: int) -> tuple[list[Rigid3d], list[int]]:
    """A path through the chosen cameras in order; returns (path, index of each chosen camera in it).

    Frames are shared between the segments in proportion to their lengths; each chosen camera
    appears exactly (the same Rigid3d) at its index.
    """
    keys = list(cams_from_world)
    if len(keys) < 2:
        raise ValueError("interpolation needs at least two cameras")
    if frames < len(keys):
        raise ValueError(f"{frames} frames cannot pass through {len(keys)} cameras")
    centres, quats = _world_from_cam_arrays(keys)
    params = _arc_parameter(centres, quats, max(np.linalg.norm(np.ptp(centres, axis=0)), 1e-9) / np.pi)
    lengths = np.diff(params)
    if lengths.sum() <= 0:
        lengths = np.ones(len(keys) - 1)
    # in-between frames per segment, by largest remainder
    spare = frames - len(keys)
    share = spare * lengths / lengths.sum()
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts))[: spare - counts.sum()]:
        counts[i] += 1
    path, key_index = [keys[0]], [0]
    for i, count in enumerate(counts):
        ts = np.arange(1, count + 1) / (count + 1)
        path += _interpolate(centres[i:i + 2], quats[i:i + 2], np.array([0.0, 1.0]), ts)
        key_index.append(len(path))
        path.append(keys[i + 1])
    return path, key_index
