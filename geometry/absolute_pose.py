"""Absolute camera pose from 2D-3D correspondences: PnP inside OpenCV's USAC, then refinement.

Input pixels are undistorted through our camera model first, so OpenCV sees a distortion-free
pinhole camera and every COLMAP model we support works the same way. Pixel convention: ours
(COLMAP) puts pixel centres at +0.5, OpenCV's at integers, so the pixels and the principal point
handed to OpenCV are both shifted by -0.5 (the geometry is unchanged; the shift keeps the two
conventions from being mixed if distorted pixels are ever passed to OpenCV directly).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from geometry.camera_models import project, split_params, undistort_pixels
from scene.camera import Camera
from scene.errors import ParallaxError
from scene.rigid import Rigid3d

_USAC_METHODS = {"magsac": cv2.USAC_MAGSAC, "accurate": cv2.USAC_ACCURATE}


class PoseEstimationFailed(ParallaxError):
    """Too few or degenerate correspondences, or no pose consistent with enough of them."""


@dataclass(frozen=True)
class AbsolutePoseOptions:
    max_error_px: float = 4.0       # inlier threshold on the reprojection error
    confidence: float = 0.9999
    max_iterations: int = 10000
    method: str = "magsac"          # "magsac" (cv2.USAC_MAGSAC) or "accurate" (cv2.USAC_ACCURATE)
    min_num_inliers: int = 4        # fewer inliers than this after refinement is a failure
    refine: bool = True             # Levenberg-Marquardt (cv2.solvePnPRefineLM) on the inliers


def _opencv_pinhole(camera: Camera) -> np.ndarray:
    (fx, fy, cx, cy), _ = split_params(camera.model, camera.params)
    # OpenCV pixel centres are at integers: its principal point is ours - 0.5.
    return np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])


def _check_spread(points: np.ndarray, name: str) -> None:
    """Coincident or collinear points fix no pose (a line leaves the rotation about it free)."""
    s = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    if not s[0] > 1e-12 * max(1.0, float(np.abs(points).max())):
        raise PoseEstimationFailed(f"degenerate input for absolute pose: the {name} coincide")
    if not s[1] > 1e-9 * s[0]:
        raise PoseEstimationFailed(f"degenerate input for absolute pose: the {name} are collinear")


def _reprojection_errors(camera: Camera, cam_from_world: Rigid3d, points_world, xy) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        e = np.linalg.norm(project(camera, cam_from_world.apply(points_world)) - xy, axis=1)
    return np.where(np.isfinite(e), e, np.inf)


def estimate_absolute_pose(camera: Camera, points_world, xy, options: AbsolutePoseOptions | None = None
                           ) -> tuple[Rigid3d, np.ndarray, int]:
    """``cam_from_world``, inlier mask (N,) and inlier count from (N, 3) world points and their (N, 2)
    pixels (COLMAP convention) in ``camera``.

    Rows with a NaN/inf value, or pixels that cannot be undistorted, are never inliers. Raises
    ``PoseEstimationFailed`` (a ``ParallaxError``) with fewer than 4 usable rows, degenerate
    geometry (coincident or collinear points), or when RANSAC finds no pose with enough inliers.
    """
    opts = options or AbsolutePoseOptions()
    if opts.method not in _USAC_METHODS:
        raise ValueError(f"unknown absolute pose method {opts.method!r}; use one of {', '.join(_USAC_METHODS)}")
    pts = np.asarray(points_world, dtype=np.float64)
    px = np.asarray(xy, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or px.ndim != 2 or px.shape[1] != 2 or len(pts) != len(px):
        raise ValueError(f"points_world must be (N, 3) and xy (N, 2) with the same N, got {pts.shape} and {px.shape}")
    n = len(pts)
    with np.errstate(invalid="ignore"):
        undistorted = undistort_pixels(camera, px) if n else np.zeros((0, 2))
    valid = np.all(np.isfinite(pts), axis=1) & np.all(np.isfinite(undistorted), axis=1)
    vidx = np.flatnonzero(valid)
    if len(vidx) < 4:
        raise PoseEstimationFailed(f"absolute pose needs at least 4 finite 2D-3D correspondences, got {len(vidx)} of {n}")
    _check_spread(pts[vidx], "3D points")
    _check_spread(undistorted[vidx], "image points")

    K = _opencv_pinhole(camera)
    obj = np.ascontiguousarray(pts[vidx])
    img = np.ascontiguousarray(undistorted[vidx] - 0.5)  # OpenCV pixel convention
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            obj, img, K, None, iterationsCount=opts.max_iterations, reprojectionError=opts.max_error_px,
            confidence=opts.confidence, flags=_USAC_METHODS[opts.method])
    except cv2.error as exc:
        raise PoseEstimationFailed(f"absolute pose RANSAC failed: {exc.err}") from None
    if not ok or inl is None or len(inl) < 4 or not (np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec))):
        raise PoseEstimationFailed(f"absolute pose RANSAC found no pose from {len(vidx)} correspondences")

    def pose_of(r, t):
        return Rigid3d.from_rotation(cv2.Rodrigues(r)[0], np.reshape(t, 3))

    def inliers_of(pose):
        mask = np.zeros(n, bool)
        mask[vidx] = _reprojection_errors(camera, pose, pts[vidx], px[vidx]) <= opts.max_error_px
        return mask

    cam_from_world = pose_of(rvec, tvec)
    inliers = inliers_of(cam_from_world)
    if opts.refine:
        # Refine on the inliers, re-select them with the refined pose, and refine once more if they changed.
        for _ in range(3):
            sel = np.flatnonzero(inliers)
            if len(sel) < 4:
                break
            rvec, tvec = cv2.solvePnPRefineLM(
                np.ascontiguousarray(pts[sel]), np.ascontiguousarray(undistorted[sel] - 0.5), K, None,
                rvec.copy(), tvec.copy(), (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12))
            cam_from_world = pose_of(rvec, tvec)
            refined = inliers_of(cam_from_world)
            changed = not np.array_equal(refined, inliers)
            inliers = refined
            if not changed:
                break
    num_inliers = int(inliers.sum())
    if num_inliers < max(4, opts.min_num_inliers):
        raise PoseEstimationFailed(f"absolute pose has only {num_inliers} inliers within {opts.max_error_px:g} px "
                                   f"(need {max(4, opts.min_num_inliers)})")
    return cam_from_world, inliers, num_inliers
