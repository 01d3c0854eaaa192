"""Does the map agree with the focal length it was built with? A check for wrong calibration files.

A focal length several times too long or too short still lets monocular SLAM initialise and track: the map
is then a distorted copy of the scene. Bundle adjustment over the first keyframes with the focal length
free moves it towards the one the images imply (measured on the forward walk: 1.00-1.01x with the right
calibration, 0.42x from a 5x too long one, 4.6x from a 5x too short one). The map is not changed: the check
adjusts copies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geometry.bundle_adjustment import BAOptions, BAProblem, bundle_adjust
from scene.camera import Camera

MAX_FOCAL_FACTOR = 2.0     # a preferred focal length beyond 2x or below 1/2 of the given one is reported
MIN_OBSERVATIONS = 200     # fewer say too little about the focal length


@dataclass(frozen=True)
class FocalCheck:
    focal_ratio: float         # focal length bundle adjustment prefers / the given one (geometric mean of x, y)
    rms_given_px: float        # reprojection RMS with the given focal length (after adjusting poses and points)
    rms_free_px: float         # ... and with the focal length free
    keyframes: int
    observations: int

    @property
    def suspicious(self) -> bool:
        return not 1.0 / MAX_FOCAL_FACTOR <= self.focal_ratio <= MAX_FOCAL_FACTOR


def _focal(camera: Camera) -> float:
    fx, fy = camera.focal_xy
    return math.sqrt(fx * fy)


def check_focal(slam_map, camera: Camera, max_keyframes: int = 12, rounds: int = 6, iterations: int = 50,
                loss_scale_px: float = 2.0) -> FocalCheck | None:
    """Adjust the first ``max_keyframes`` keyframes and their points (the first keyframe held) with the given
    focal length, then with it free for up to ``rounds`` runs of ``iterations`` (a focal length far off needs
    several: each run stops where Levenberg-Marquardt's damping stalls it); None when the map is too small."""
    kfs = np.arange(min(slam_map.num_keyframes, max_keyframes), dtype=np.int64)
    if len(kfs) < 2:
        return None
    obs = np.flatnonzero(slam_map.obs_alive & slam_map.alive[slam_map.obs_pt] & (slam_map.obs_kf < len(kfs)))
    counts = np.bincount(slam_map.obs_pt[obs], minlength=slam_map.num_points_total)
    obs = obs[counts[slam_map.obs_pt[obs]] >= 2]
    if len(obs) < MIN_OBSERVATIONS:
        return None
    points = np.unique(slam_map.obs_pt[obs])
    point_slot = np.full(slam_map.num_points_total, -1, np.int64)
    point_slot[points] = np.arange(len(points))
    obs_xy, _ = slam_map.observation_keypoints(obs)
    quat, trans, xyz = slam_map.kf_quat[kfs].copy(), slam_map.kf_trans[kfs].copy(), slam_map.xyz[points].copy()
    fixed = kfs == 0

    def adjust(cam, quat, trans, xyz, refine):
        problem = BAProblem([cam], np.zeros(len(kfs), np.int64), quat, trans, xyz, slam_map.obs_kf[obs],
                            point_slot[slam_map.obs_pt[obs]], obs_xy, pose_fixed=fixed)
        return bundle_adjust(problem, BAOptions(max_iterations=iterations, loss="huber",
                                                loss_scale_px=loss_scale_px, refine_focal=refine))

    given = adjust(camera, quat, trans, xyz, False)
    result, cam = given, camera
    for _ in range(rounds):
        previous = _focal(cam)
        result = adjust(cam, result.quat_wxyz, result.translation, result.points_world, True)
        cam = result.cameras[0]
        if abs(_focal(cam) / previous - 1.0) < 0.005:
            break
    return FocalCheck(_focal(cam) / _focal(camera), float(given.final_rms_px), float(result.final_rms_px),
                      len(kfs), len(obs))
