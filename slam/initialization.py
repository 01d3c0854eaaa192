"""Monocular map initialisation from two views (ORB-SLAM's Initializer, on ``geometry.two_view``).

The first frame with enough features becomes the reference. Every later frame is matched to it in a
window around where each reference keypoint was last seen (``match_in_window`` with the previous matches
as the prior, as ORB-SLAM's mvbPrevMatched), and ``estimate_two_view`` chooses homography or essential
matrix and triangulates. The pair is accepted only when ``well_conditioned`` (enough inliers, parallax and
an unambiguous decomposition); otherwise the next frame is tried against the same reference. Too few
matches (the view moved on) makes the current frame the new reference.

A stationary camera never initialises: the median match displacement must exceed
``min_median_disparity_px`` before the two-view estimation is even tried, and the two-view parallax test
(median triangulation angle) rejects pure rotation and zero motion.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geometry.matching import match_in_window
from geometry.two_view import TwoViewOptions, TwoViewResult, estimate_two_view
from scene.camera import Camera
from slam.tracking import Frame


@dataclass(frozen=True)
class InitOptions:
    min_features: int = 100
    min_matches: int = 100
    window_px: float = 100.0
    min_median_disparity_px: float = 5.0
    # ORB-SLAM's test (>= 50 points triangulated above 1 degree) with a softer median: under forward motion
    # (KITTI) the far points keep the median angle low long after the near ones are well triangulated.
    two_view: TwoViewOptions = field(default_factory=lambda: TwoViewOptions(estimate_fundamental=False,
                                                                            min_median_angle_deg=0.5))


@dataclass
class InitAttempt:
    """What one frame did for initialisation."""
    success: bool
    reason: str
    reference: Frame | None = None
    matches: np.ndarray | None = None          # (N_ref,) index in the current frame per reference keypoint
    two_view: TwoViewResult | None = None
    points_ref: np.ndarray | None = None       # (N_ref, 3) triangulated points in the reference camera, NaN if none


class Initializer:
    def __init__(self, camera: Camera, options: InitOptions):
        self.camera = camera
        self.options = options
        self.reference: Frame | None = None
        self._prior_xy: np.ndarray | None = None

    def reset(self) -> None:
        self.reference = None
        self._prior_xy = None

    def _set_reference(self, frame: Frame) -> None:
        self.reference = frame
        self._prior_xy = frame.features.keypoints_xy.copy()

    def add(self, frame: Frame) -> InitAttempt:
        o = self.options
        f = frame.features
        if len(f) < o.min_features:
            return InitAttempt(False, f"too few features to initialise: {len(f)} (need {o.min_features})")
        if self.reference is None:
            self._set_reference(frame)
            return InitAttempt(False, "reference frame set; waiting for motion")
        ref = self.reference.features
        matches, _ = match_in_window(ref.keypoints_xy, ref.descriptors, f.keypoints_xy, f.descriptors,
                                     prior_xy=self._prior_xy, window_px=o.window_px, octaves1=ref.octaves,
                                     octaves2=f.octaves, angles1=ref.angles, angles2=f.angles, grid2=frame.grid)
        ok = matches >= 0
        n = int(ok.sum())
        if n < o.min_matches:
            self._set_reference(frame)
            return InitAttempt(False, f"only {n} matches to the reference frame (need {o.min_matches}); "
                                      "this frame is the new reference")
        self._prior_xy[ok] = f.keypoints_xy[matches[ok]]
        disparity = float(np.median(np.linalg.norm(f.keypoints_xy[matches[ok]] - ref.keypoints_xy[ok], axis=1)))
        if disparity < o.min_median_disparity_px:
            return InitAttempt(False, f"camera not moving: median match displacement {disparity:.2f} px "
                                      f"(need {o.min_median_disparity_px:g})")
        idx = np.flatnonzero(ok)
        result = estimate_two_view(self.camera, self.camera, ref.keypoints_xy[idx],
                                   f.keypoints_xy[matches[idx]], o.two_view)
        if not result.well_conditioned:
            return InitAttempt(False, f"two-view not well conditioned: {result.reason}")
        # Scatter the per-correspondence results back to reference keypoints.
        full = np.full(len(ref), -1, np.int64)
        good = idx[result.triangulated_mask]
        full[good] = matches[good]
        points = np.full((len(ref), 3), np.nan)
        points[good] = result.points_cam1[result.triangulated_mask]
        return InitAttempt(True, "", self.reference, full, result, points)
