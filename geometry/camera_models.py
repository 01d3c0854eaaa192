"""Projection and distortion for COLMAP's perspective camera models.

Supported: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV (COLMAP parameter order, see
``scene.camera.CAMERA_MODELS``). All five are special cases of OpenCV's radial-tangential model
with (k1, k2, p1, p2), so one pair of numba kernels serves them all:

    SIMPLE_RADIAL k -> k1;  RADIAL k1 k2 -> k1 k2;  pinhole models -> all zero.

Conventions: ``points_cam`` are in the camera frame (x right, y down, z forward); "normalized"
coordinates are (x/z, y/z) before distortion; rays returned by ``unproject`` have z = 1.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from scene.camera import Camera
from scene.errors import UnsupportedFormat

SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")

# Newton stops when the distorted guess matches the target to this (normalized units).
UNDISTORT_TOLERANCE = 1e-12
UNDISTORT_MAX_ITERATIONS = 100


def split_params(model: str, params) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP params -> (fx, fy, cx, cy) and OpenCV-style (k1, k2, p1, p2)."""
    p = np.asarray(params, dtype=np.float64).reshape(-1)
    expected = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8}
    if model not in expected:
        raise UnsupportedFormat(f"camera model {model} is not supported here; supported: {', '.join(SUPPORTED_MODELS)}")
    if p.size != expected[model]:
        raise ValueError(f"camera model {model} takes {expected[model]} parameters, got {p.size}")
    dist = np.zeros(4)
    if model == "SIMPLE_PINHOLE":
        pinhole = np.array([p[0], p[0], p[1], p[2]])
    elif model == "PINHOLE":
        pinhole = p[:4].copy()
    elif model == "SIMPLE_RADIAL":
        pinhole = np.array([p[0], p[0], p[1], p[2]])
        dist[0] = p[3]
    elif model == "RADIAL":
        pinhole = np.array([p[0], p[0], p[1], p[2]])
        dist[:2] = p[3:5]
    else:  # OPENCV
        pinhole = p[:4].copy()
        dist[:] = p[4:8]
    return pinhole, dist


def opencv_dist_coeffs(camera: Camera) -> np.ndarray:
    """The (k1, k2, p1, p2) vector OpenCV functions expect for ``camera``."""
    return split_params(camera.model, camera.params)[1]


def pinhole_camera(camera: Camera) -> Camera:
    """The PINHOLE camera with the same focal lengths and principal point, no distortion."""
    pinhole, _ = split_params(camera.model, camera.params)
    return Camera(camera.camera_id, "PINHOLE", camera.width, camera.height, pinhole,
                  intrinsics_source=camera.intrinsics_source)


# --- kernels --------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _distort_one(x, y, k1, k2, p1, p2):
    r2 = x * x + y * y
    radial = k1 * r2 + k2 * r2 * r2
    xd = x + x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y + y * radial + 2.0 * p2 * x * y + p1 * (r2 + 2.0 * y * y)
    return xd, yd


@njit(cache=True, nogil=True)
def _distort_kernel(xy, dist):
    out = np.empty_like(xy)
    k1, k2, p1, p2 = dist[0], dist[1], dist[2], dist[3]
    for i in range(xy.shape[0]):
        out[i, 0], out[i, 1] = _distort_one(xy[i, 0], xy[i, 1], k1, k2, p1, p2)
    return out


@njit(cache=True, nogil=True)
def _undistort_kernel(xy_distorted, dist, tolerance, max_iterations):
    """Newton's method on distort(x) = target with the analytic 2x2 Jacobian."""
    out = np.empty_like(xy_distorted)
    k1, k2, p1, p2 = dist[0], dist[1], dist[2], dist[3]
    for i in range(xy_distorted.shape[0]):
        tx, ty = xy_distorted[i, 0], xy_distorted[i, 1]
        x, y = tx, ty
        converged = False
        det = 0.0
        radial = 0.0
        for _ in range(max_iterations):
            fx, fy = _distort_one(x, y, k1, k2, p1, p2)
            rx, ry = fx - tx, fy - ty
            r2 = x * x + y * y
            radial = k1 * r2 + k2 * r2 * r2
            dradial = 2.0 * k1 + 4.0 * k2 * r2  # d(radial)/d(r2) * 2
            j00 = 1.0 + radial + x * x * dradial + 2.0 * p1 * y + 6.0 * p2 * x
            j01 = x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y
            j10 = x * y * dradial + 2.0 * p2 * y + 2.0 * p1 * x
            j11 = 1.0 + radial + y * y * dradial + 2.0 * p2 * x + 6.0 * p1 * y
            det = j00 * j11 - j01 * j10
            if det == 0.0 or not np.isfinite(det):
                break
            x -= (j11 * rx - j01 * ry) / det
            y -= (-j10 * rx + j00 * ry) / det
            if abs(rx) <= tolerance and abs(ry) <= tolerance:
                converged = True  # the step just taken polishes the answer to ~eps
                break
        # A root on the far side of the fold (flipped or with a reversed Jacobian) is not the image of
        # a visible point: there the distortion cannot be inverted.
        if converged and 1.0 + radial > 0.0 and det > 0.0:
            out[i, 0], out[i, 1] = x, y
        else:
            # Outside the region where the distortion is invertible: no answer rather than a wrong one.
            out[i, 0], out[i, 1] = np.nan, np.nan
    return out


@njit(cache=True, nogil=True)
def _project_kernel(points_cam, pinhole, dist):
    out = np.empty((points_cam.shape[0], 2))
    fx, fy, cx, cy = pinhole[0], pinhole[1], pinhole[2], pinhole[3]
    k1, k2, p1, p2 = dist[0], dist[1], dist[2], dist[3]
    for i in range(points_cam.shape[0]):
        z = points_cam[i, 2]
        if not z > 0.0:
            out[i, 0], out[i, 1] = np.nan, np.nan
            continue
        xd, yd = _distort_one(points_cam[i, 0] / z, points_cam[i, 1] / z, k1, k2, p1, p2)
        out[i, 0] = fx * xd + cx
        out[i, 1] = fy * yd + cy
    return out


# --- public API -----------------------------------------------------------------------------

def _as_xy(values, name: str) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {a.shape}")
    return a


def distort_normalized(model: str, params, xy) -> np.ndarray:
    """Undistorted normalized (N, 2) -> distorted normalized (N, 2)."""
    _, dist = split_params(model, params)
    return _distort_kernel(_as_xy(xy, "xy"), dist)


def undistort_normalized(model: str, params, xy_distorted) -> np.ndarray:
    """Distorted normalized (N, 2) -> undistorted normalized (N, 2), Newton to 1e-12.

    Points where the distortion cannot be inverted (far outside the image for strong barrel
    distortion) come back as NaN.
    """
    _, dist = split_params(model, params)
    xy = _as_xy(xy_distorted, "xy_distorted")
    if not np.any(dist):
        return xy.copy()
    return _undistort_kernel(xy, dist, UNDISTORT_TOLERANCE, UNDISTORT_MAX_ITERATIONS)


def project(camera: Camera, points_cam) -> np.ndarray:
    """(N, 3) points in the camera frame -> (N, 2) pixels. Points with z <= 0 give NaN."""
    pinhole, dist = split_params(camera.model, camera.params)
    pts = np.ascontiguousarray(np.asarray(points_cam, dtype=np.float64))
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points_cam must have shape (N, 3), got {pts.shape}")
    return _project_kernel(pts, pinhole, dist)


def pixels_to_normalized(camera: Camera, pixels) -> np.ndarray:
    """(N, 2) pixels -> distorted normalized coordinates (inverse of the calibration matrix only)."""
    (fx, fy, cx, cy), _ = split_params(camera.model, camera.params)
    px = _as_xy(pixels, "pixels")
    return np.column_stack(((px[:, 0] - cx) / fx, (px[:, 1] - cy) / fy))


def unproject(camera: Camera, pixels) -> np.ndarray:
    """(N, 2) pixels -> (N, 3) undistorted rays with z = 1 (not unit length)."""
    xy = undistort_normalized(camera.model, camera.params, pixels_to_normalized(camera, pixels))
    return np.column_stack((xy, np.ones(len(xy))))


def undistort_pixels(camera: Camera, pixels) -> np.ndarray:
    """(N, 2) pixels -> where they land in ``pinhole_camera(camera)`` (same K, no distortion)."""
    (fx, fy, cx, cy), _ = split_params(camera.model, camera.params)
    xy = undistort_normalized(camera.model, camera.params, pixels_to_normalized(camera, pixels))
    return np.column_stack((fx * xy[:, 0] + cx, fy * xy[:, 1] + cy))


def distort_pixels(camera: Camera, pinhole_pixels) -> np.ndarray:
    """Inverse of ``undistort_pixels``: pixels of the equivalent PINHOLE camera -> pixels of ``camera``."""
    (fx, fy, cx, cy), dist = split_params(camera.model, camera.params)
    px = _as_xy(pinhole_pixels, "pinhole_pixels")
    xy = _distort_kernel(np.column_stack(((px[:, 0] - cx) / fx, (px[:, 1] - cy) / fy)), dist)
    return np.column_stack((fx * xy[:, 0] + cx, fy * xy[:, 1] + cy))
