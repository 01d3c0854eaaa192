"""Rotation-only tracking: a frame's pose when the map cannot give it but the camera only turned.

A fast pan looks at parts of the scene the map has not reached, and a camera turning about its centre gives
no parallax to triangulate them, so map-based tracking loses the frame (Pirchheim et al., "Handling pure
camera rotation in keyframe-based SLAM", ISMAR 2013). Between consecutive frames, though, a rotation alone
explains where every keypoint went. ``track_rotation`` matches the frame's keypoints to the previous frame's
around where the predicted rotation moves them, finds the rotation by RANSAC over two-bearing rotations
(Kabsch) and gives the frame that rotation with the previous camera centre.

It is a fallback: ``slam.system`` uses it only after the motion model, the last keyframe and relocalization
all failed. A frame tracked this way inserts no keyframe and adds no point; the map takes over again as soon
as its points come back into view. The gate on the inlier ratio refuses a camera whose centre moved enough
to show parallax, and ``max_frames`` bounds the drift of a chain of such frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geometry.camera_models import project
from geometry.matching import match_by_projection
from scene.camera import Camera
from scene.rigid import Rigid3d


@dataclass(frozen=True)
class RotationOptions:
    enabled: bool = True
    radius: float = 20.0              # search window (x keypoint scale) around the rotation-predicted position
    max_error_px: float = 3.0         # inlier: bearings within this many pixels (at the focal length) of the rotation
    min_inliers: int = 60
    min_inlier_ratio: float = 0.6     # of the matches; below it the centre moved (parallax) or the matches are wrong
    max_hamming: int = 50
    hypotheses: int = 64              # two-bearing samples; at a 60 % inlier ratio all miss with p < 1e-12
    max_frames: int = 150             # consecutive rotation-only frames before the frame counts as lost


@dataclass(frozen=True)
class RotationTrack:
    """cam_from_last: the rotation found; inliers: previous-frame keypoint -> this frame's keypoint."""
    cam_from_last: np.ndarray         # (3, 3)
    inlier_last: np.ndarray           # (K,) keypoint indices in the previous frame
    inlier_current: np.ndarray        # (K,) keypoint indices in this frame
    matches: int


def bearings(normalized_xy: np.ndarray) -> np.ndarray:
    """(N, 2) undistorted normalized coordinates -> (N, 3) unit rays (NaN rows stay NaN)."""
    rays = np.column_stack((normalized_xy, np.ones(len(normalized_xy))))
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def kabsch_rotations(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(H, K, 3) pairs of unit vectors -> (H, 3, 3) rotations R minimising sum |R src - dst|^2."""
    cov = np.einsum("hki,hkj->hij", dst, src)
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((len(cov), 3))
    fix[:, 2] = d
    return (u * fix[:, None, :]) @ vt


def _cosines(rotations: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(H, N) cosine of the angle between R src and dst for each rotation: dst^T R src is the Frobenius
    product of R with dst src^T, so all hypotheses take one matrix product."""
    outer = (dst[:, :, None] * src[:, None, :]).reshape(len(src), 9)
    return rotations.reshape(-1, 9) @ outer.T


def track_rotation(camera: Camera, features, last_features, grid, predicted_cam_from_last: np.ndarray,
                   options: RotationOptions, seed: int = 0) -> RotationTrack | None:
    """The rotation taking the previous frame's camera to this one, or None when no rotation explains the
    matches well enough. ``features`` / ``last_features``: slam.features.Features of this frame and the
    previous one; ``grid``: this frame's keypoint grid. Deterministic for a given ``seed``."""
    if len(features) == 0 or len(last_features) == 0:
        return None
    last_rays = bearings(last_features.normalized_xy)
    usable = np.flatnonzero(np.all(np.isfinite(last_rays), axis=1))
    if len(usable) < options.min_inliers:
        return None
    predicted = last_rays[usable] @ np.asarray(predicted_cam_from_last, np.float64).T
    with np.errstate(invalid="ignore", divide="ignore"):
        uv = project(camera, predicted)
    ahead = (predicted[:, 2] > 1e-6) & np.all(np.isfinite(uv), axis=1)
    uv[~ahead] = np.nan
    scales = features.plan.level_scales[last_features.octaves[usable]]
    match, _ = match_by_projection(uv, last_features.descriptors[usable], last_features.octaves[usable],
                                   features.keypoints_xy, features.octaves, features.descriptors,
                                   options.radius * scales, max_distance=options.max_hamming, grid=grid)
    ok = match >= 0
    last_idx, cur_idx = usable[ok], match[ok]
    cur_rays = bearings(features.normalized_xy[cur_idx])
    finite = np.all(np.isfinite(cur_rays), axis=1)
    last_idx, cur_idx, src, dst = last_idx[finite], cur_idx[finite], last_rays[last_idx[finite]], cur_rays[finite]
    n = len(src)
    if n < options.min_inliers:
        return None

    fx, fy = camera.focal_xy
    min_cos = np.cos(options.max_error_px / (0.5 * (fx + fy)))
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, options.hypotheses)
    pairs = np.column_stack((first, (first + rng.integers(1, n, options.hypotheses)) % n))  # two distinct
    hypotheses = kabsch_rotations(src[pairs], dst[pairs])
    counts = (_cosines(hypotheses, src, dst) >= min_cos).sum(axis=1)
    best = hypotheses[int(np.argmax(counts))]
    inliers = _cosines(best[None], src, dst)[0] >= min_cos
    for _ in range(2):  # refine on the inliers, then take the inliers of the refined rotation
        if inliers.sum() < 3:
            return None
        best = kabsch_rotations(src[inliers][None], dst[inliers][None])[0]
        inliers = _cosines(best[None], src, dst)[0] >= min_cos
    k = int(inliers.sum())
    if k < options.min_inliers or k < options.min_inlier_ratio * n:
        return None
    return RotationTrack(best, last_idx[inliers], cur_idx[inliers], n)


def pose_after_rotation(last_cam_from_world: Rigid3d, cam_from_last: np.ndarray) -> Rigid3d:
    """The camera turned by cam_from_last about its centre: same centre, new orientation."""
    rotation = np.asarray(cam_from_last, np.float64) @ last_cam_from_world.rotation
    return Rigid3d.from_rotation(rotation, -rotation @ last_cam_from_world.center())
