"""Least-squares similarity between point sets (Umeyama 1991), as used for trajectory alignment."""
from __future__ import annotations

import numpy as np

from scene.errors import ParallaxError

# Relative size of the second singular value below which points count as collinear.
COLLINEAR_TOLERANCE = 1e-10


def _check_spread(points: np.ndarray, name: str) -> None:
    centred = points - points.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    if singular[0] <= 1e-12 * max(1.0, float(np.abs(points).max())):
        raise ParallaxError(f"cannot align: all {len(points)} {name} points are at the same position")
    if singular[1] <= COLLINEAR_TOLERANCE * singular[0]:
        raise ParallaxError(f"cannot align: the {len(points)} {name} points are collinear, so the rotation "
                            "about their line is undetermined (the trajectory must turn or leave a straight line)")


def umeyama(src, dst, with_scale: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """(R, t, s) minimising sum |dst_i - (s R src_i + t)|^2; s = 1 when ``with_scale`` is False.

    Raises ParallaxError for fewer than 3 points, non-finite values, or degenerate
    (coincident or collinear) point sets.
    """
    x = np.asarray(src, dtype=np.float64)
    y = np.asarray(dst, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape != y.shape:
        raise ParallaxError(f"cannot align: point sets must both be (N, 3), got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ParallaxError(f"cannot align: need at least 3 corresponding points, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ParallaxError("cannot align: the points contain NaN or infinity")
    _check_spread(x, "source")
    _check_spread(y, "target")

    n = len(x)
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mean_x, y - mean_y
    variance_x = float(np.sum(xc * xc)) / n
    covariance = yc.T @ xc / n
    u, d, vt = np.linalg.svd(covariance)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0.0:
        sign[2, 2] = -1.0  # a reflection would fit better; force a proper rotation
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / variance_x) if with_scale else 1.0
    translation = mean_y - scale * rotation @ mean_x
    return rotation, translation, scale


def umeyama_poses(centres_src, rotations_src, centres_dst, rotations_dst) -> tuple[np.ndarray, np.ndarray, float]:
    """(R, t, s) of ``umeyama`` between two sets of cameras, in order: their centres plus, per camera, a point
    one path length (each set's own) along its optical axis. The orientations fix what centres alone leave
    free, the rotation about a straight path. ``rotations_*``: (N, 3, 3) world_from_cam."""
    c_src, c_dst = np.asarray(centres_src, np.float64), np.asarray(centres_dst, np.float64)
    r_src, r_dst = np.asarray(rotations_src, np.float64), np.asarray(rotations_dst, np.float64)
    len_src = np.linalg.norm(np.diff(c_src, axis=0), axis=1).sum()
    len_dst = np.linalg.norm(np.diff(c_dst, axis=0), axis=1).sum()
    return umeyama(np.vstack([c_src, c_src + len_src * r_src[:, :, 2]]),
                   np.vstack([c_dst, c_dst + len_dst * r_dst[:, :, 2]]), with_scale=True)
