"""The plain OpenCV frame-to-frame VO baseline of the SLAM benchmark (issue 3 §4).

Per frame: cv2.ORB features, brute-force Hamming matching with a ratio test, then
cv2.findEssentialMat (RANSAC) + cv2.recoverPose against the previous frame; the relative poses are
chained with a unit translation per step. Monocular scale is arbitrary (and with unit steps it is not even
consistent along the sequence), so it is evaluated after Sim(3) alignment, as the SLAM is.
No map, no keyframes, no bundle adjustment: this is the floor the SLAM has to beat.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from geometry.camera_models import unproject
from scene.camera import Camera
from scene.rigid import Rigid3d


@dataclass(frozen=True)
class VoOptions:
    num_features: int = 2000
    ratio: float = 0.8
    ransac_threshold_px: float = 1.0
    ransac_confidence: float = 0.999
    min_inliers: int = 15


@dataclass
class VoResult:
    cam_from_world: list            # one Rigid3d per frame, None where the step failed
    timestamps: np.ndarray
    timings_ms: list = field(default_factory=list)   # per frame: {"features", "track", "total"}
    failures: list = field(default_factory=list)     # (frame index, reason)

    @property
    def tracked(self) -> int:
        return sum(p is not None for p in self.cam_from_world)


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img


class FrameToFrameVO:
    """Stateful VO: feed frames in order with ``step``; ``run`` does a whole list."""

    def __init__(self, camera: Camera, options: VoOptions | None = None):
        self.camera = camera
        self.options = options or VoOptions()
        self._orb = cv2.ORB_create(self.options.num_features)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self._focal = float(np.mean(camera.focal_xy))
        self._last = None            # (rays (N, 2), descriptors) of the last frame with a pose
        self._last_pose: Rigid3d | None = None

    def step(self, image) -> tuple[Rigid3d | None, dict, str]:
        t0 = time.perf_counter()
        keypoints, descriptors = self._orb.detectAndCompute(_gray(image), None)
        timings = {"features": 1000 * (time.perf_counter() - t0)}
        t1 = time.perf_counter()
        pose, reason = None, ""
        if descriptors is None or len(keypoints) < self.options.min_inliers:
            reason = "too few features"
            rays = None
        else:
            # OpenCV keypoints have pixel centres at integers; COLMAP's convention (used by Camera) at +0.5.
            pixels = np.array([k.pt for k in keypoints], np.float64) + 0.5
            rays = unproject(self.camera, pixels)[:, :2]
            if self._last is None:
                pose = Rigid3d()
            else:
                pose, reason = self._relative(rays, descriptors)
        if rays is not None and (pose is not None or self._last is None):
            self._last = (rays, descriptors)
            self._last_pose = pose
        timings["track"] = 1000 * (time.perf_counter() - t1)
        timings["total"] = 1000 * (time.perf_counter() - t0)
        return pose, timings, reason

    def _relative(self, rays: np.ndarray, descriptors: np.ndarray) -> tuple[Rigid3d | None, str]:
        o = self.options
        last_rays, last_desc = self._last
        pairs = self._matcher.knnMatch(last_desc, descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < o.ratio * p[1].distance]
        if len(good) < o.min_inliers:
            return None, f"only {len(good)} matches"
        x1 = last_rays[[m.queryIdx for m in good]]
        x2 = rays[[m.trainIdx for m in good]]
        # Normalised coordinates (identity K), so the threshold is in units of the focal length.
        E, mask = cv2.findEssentialMat(x1, x2, np.eye(3), method=cv2.RANSAC, prob=o.ransac_confidence,
                                       threshold=o.ransac_threshold_px / self._focal)
        if E is None or E.shape != (3, 3) or mask is None or int(mask.sum()) < o.min_inliers:
            return None, "essential matrix failed"
        inliers, R, t, _ = cv2.recoverPose(E, x1, x2, np.eye(3), mask=mask)
        if inliers < o.min_inliers:
            return None, f"only {inliers} inliers with positive depth"
        t = t.reshape(3)
        t = t / max(np.linalg.norm(t), 1e-12)   # unit step: the scale is unknown
        cam2_from_cam1 = Rigid3d.from_rotation(R, t)
        return cam2_from_cam1 * self._last_pose, ""

    def run(self, images, timestamps=None) -> VoResult:
        poses, timings, failures = [], [], []
        for i, image in enumerate(images):
            pose, t, reason = self.step(image)
            poses.append(pose)
            timings.append(t)
            if pose is None:
                failures.append((i, reason))
        stamps = np.arange(len(poses), dtype=np.float64) if timestamps is None else np.asarray(timestamps, float)
        return VoResult(poses, stamps, timings, failures)


def run_vo(images, camera: Camera, timestamps=None, options: VoOptions | None = None) -> VoResult:
    """Frame-to-frame VO over ``images`` (BGR or gray uint8); one pose (or None) per frame."""
    return FrameToFrameVO(camera, options).run(images, timestamps)
