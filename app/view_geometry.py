"""Numpy geometry for the 3D view: frusta, up-alignment, robust bounds, grid spacing. No Qt."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

# Frustum outline: apex->4 corners, then the 4 image-plane edges, then an "up" tick.
_CORNERS_UV = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def frustum_corners_cam(fx: float, fy: float, cx: float, cy: float, width: int, height: int,
                        size: float) -> np.ndarray:
    """(5, 3) apex + image corners in camera coordinates, scaled so the larger side spans ``size``."""
    uv = _CORNERS_UV * np.array([width, height], dtype=np.float64)
    rays = np.column_stack([(uv[:, 0] - cx) / fx, (uv[:, 1] - cy) / fy, np.ones(4)])
    extent = max(np.ptp(rays[:, 0]), np.ptp(rays[:, 1]), 1e-9)
    corners = rays * (size / extent)
    return np.vstack([np.zeros(3), corners])


def frustum_segments(world_from_cam_rot: np.ndarray, centers: np.ndarray, corners_cam: np.ndarray) -> np.ndarray:
    """Line-segment vertices (N*16, 3) for N frusta sharing one camera shape.

    ``world_from_cam_rot`` (N, 3, 3), ``centers`` (N, 3) camera centres in the world,
    ``corners_cam`` (5, 3) from :func:`frustum_corners_cam` (or (N, 5, 3) per frustum).
    """
    rot = np.asarray(world_from_cam_rot, dtype=np.float64).reshape(-1, 3, 3)
    n = len(rot)
    if n == 0:
        return np.zeros((0, 3))
    local = np.broadcast_to(np.asarray(corners_cam, dtype=np.float64), (n, 5, 3))
    world = np.einsum("nij,nkj->nki", rot, local) + np.asarray(centers, dtype=np.float64).reshape(n, 1, 3)
    apex, c = world[:, 0], world[:, 1:]
    segments = [
        (apex, c[:, 0]), (apex, c[:, 1]), (apex, c[:, 2]), (apex, c[:, 3]),
        (c[:, 0], c[:, 1]), (c[:, 1], c[:, 2]), (c[:, 2], c[:, 3]), (c[:, 3], c[:, 0]),
    ]
    out = np.empty((n, 16, 3))
    for k, (a, b) in enumerate(segments):
        out[:, 2 * k] = a
        out[:, 2 * k + 1] = b
    return out.reshape(-1, 3)


def quat_wxyz_to_matrices(quat_wxyz: np.ndarray) -> np.ndarray:
    """(N, 4) unit quaternions (w, x, y, z) -> (N, 3, 3) rotations, vectorised."""
    q = np.asarray(quat_wxyz, dtype=np.float64).reshape(-1, 4)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=1),
    ], axis=1)


def view_from_world_rotation(world_from_cam_rot: np.ndarray) -> np.ndarray:
    """Rotation that turns the cameras' mean "up" (-y in camera coordinates) into +z.

    Vision data sets put gravity anywhere; the 3D view orbits around +z, so aligning the
    cameras' up with +z makes every scene open upright. Identity when cameras disagree.
    """
    rot = np.asarray(world_from_cam_rot, dtype=np.float64).reshape(-1, 3, 3)
    if len(rot) == 0:
        return np.eye(3)
    up = -rot[:, :, 1].mean(axis=0)
    norm = np.linalg.norm(up)
    if norm < 0.3:  # cameras roll in all directions: no reliable up
        return np.eye(3)
    return rotation_between(up / norm, np.array([0.0, 0.0, 1.0]))


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking unit vector a to unit vector b (Rodrigues)."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1.0 + 1e-9:  # opposite: half turn about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


TRIM_SAMPLE = 10000


def trim_sample(xyz: np.ndarray) -> np.ndarray:
    """At most about TRIM_SAMPLE rows of ``xyz``, evenly strided: enough for robust_bounds' percentiles."""
    return xyz[::int(math.ceil(len(xyz) / TRIM_SAMPLE))] if len(xyz) > TRIM_SAMPLE else xyz


def robust_bounds(parts: list[tuple[np.ndarray, bool]]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(lo, hi) over point sets; sets flagged ``True`` are trimmed to their 1..99 percentiles.

    Sparse reconstructions carry far outliers; trimming keeps fit-to-scene on the bulk. The percentiles of a
    large set come from an evenly strided sample of ``TRIM_SAMPLE`` points: on a 150,000-point cloud the full
    percentile took 16 ms of the GUI thread at every scene change, for a grid size no one can tell apart.
    """
    los, his = [], []
    for xyz, trim in parts:
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        xyz = xyz[np.all(np.isfinite(xyz), axis=1)]
        if len(xyz) == 0:
            continue
        if trim:
            xyz = trim_sample(xyz)
        if trim and len(xyz) >= 50:
            lo, hi = np.percentile(xyz, [1.0, 99.0], axis=0)
        else:
            lo, hi = xyz.min(axis=0), xyz.max(axis=0)
        los.append(lo)
        his.append(hi)
    if not los:
        return None
    return np.min(los, axis=0), np.max(his, axis=0)


NICE_MANTISSAS = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def nice_ceiling(value: float) -> float:
    """The smallest m x 10^k (m in NICE_MANTISSAS) at or above ``value``; 1.0 for non-positive or non-finite
    values. A plot's range set to this changes in a few steps as its data grows, so its axes are not redrawn
    at every update."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    base = 10.0 ** math.floor(math.log10(value))
    for m in NICE_MANTISSAS:
        if value <= m * base * (1 + 1e-12):
            return m * base
    return 10.0 * base


def nice_step(span: float, target_cells: int = 20) -> float:
    """A 1/2/5 x 10^k spacing giving about ``target_cells`` cells over ``span``."""
    if not math.isfinite(span) or span <= 0:
        return 1.0
    raw = span / target_cells
    base = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if raw <= m * base:
            return m * base
    return 10.0 * base
