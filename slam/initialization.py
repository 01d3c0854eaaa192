"""Monocular map initialisation from two views (ORB-SLAM's Initializer, on ``geometry.two_view``).

Up to ``max_references`` recent frames are candidate references: the first frame with enough features,
then one more every ``reference_every`` frames. Every later frame is matched to each of them in a window
around where each reference keypoint was last seen (``match_in_window`` with the previous matches as the
prior, as ORB-SLAM's mvbPrevMatched), and ``estimate_two_view`` chooses homography or essential matrix and
triangulates against the oldest reference that moved enough (the widest baseline), then the next oldest, at
most ``max_two_view_tries`` a frame. The pair is accepted only when ``well_conditioned`` (enough inliers,
parallax and an unambiguous decomposition). A reference with too few matches (the view moved on) is
dropped; with none left, the current frame is the new reference.

Several references matter when the view turns fast while the camera moves little: ORB-SLAM's single
reference is replaced whenever the view moves on, often just before enough baseline has built up, while
one taken a few frames earlier or later still shares the view with a later frame at a wider baseline.

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
    max_references: int = 4
    reference_every: int = 3           # frames between candidate references
    max_two_view_tries: int = 2        # two-view estimations a frame (each costs 15-50 ms)
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


@dataclass
class _Reference:
    frame: Frame
    prior_xy: np.ndarray                       # where each reference keypoint was last matched


class Initializer:
    def __init__(self, camera: Camera, options: InitOptions):
        self.camera = camera
        self.options = options
        self._references: list[_Reference] = []  # oldest first

    @property
    def reference(self) -> Frame | None:
        """The oldest candidate reference (None before the first frame with enough features)."""
        return self._references[0].frame if self._references else None

    def reset(self) -> None:
        self._references = []

    def _add_reference(self, frame: Frame) -> None:
        """Add a candidate; when full, the oldest (widest baseline) stays and the next oldest makes room,
        so one reference behaves as ORB-SLAM's."""
        if len(self._references) >= self.options.max_references:
            if self.options.max_references < 2:
                return
            del self._references[1]
        self._references.append(_Reference(frame, frame.features.keypoints_xy.copy()))

    def _match(self, reference: _Reference, frame: Frame) -> np.ndarray:
        ref, f = reference.frame.features, frame.features
        matches, _ = match_in_window(ref.keypoints_xy, ref.descriptors, f.keypoints_xy, f.descriptors,
                                     prior_xy=reference.prior_xy, window_px=self.options.window_px,
                                     octaves1=ref.octaves, octaves2=f.octaves, angles1=ref.angles, angles2=f.angles,
                                     grid2=frame.grid)
        ok = matches >= 0
        reference.prior_xy[ok] = f.keypoints_xy[matches[ok]]
        return matches

    def add(self, frame: Frame) -> InitAttempt:
        o = self.options
        f = frame.features
        if len(f) < o.min_features:
            return InitAttempt(False, f"too few features to initialise: {len(f)} (need {o.min_features})")
        if not self._references:
            self._add_reference(frame)
            return InitAttempt(False, "reference frame set; waiting for motion")
        matched, most = [], 0
        for reference in self._references:
            matches = self._match(reference, frame)
            n = int(np.sum(matches >= 0))
            if n >= o.min_matches:
                matched.append((reference, matches))
            most = max(most, n)
        self._references = [reference for reference, _ in matched]
        if not matched:
            self._add_reference(frame)
            return InitAttempt(False, f"only {most} matches to the reference frames (need {o.min_matches}); "
                                      "this frame is the new reference")
        reason, still, tries = "", "", 0
        for reference, matches in matched:
            if tries >= o.max_two_view_tries:
                break
            ref = reference.frame.features
            ok = matches >= 0
            disparity = float(np.median(np.linalg.norm(f.keypoints_xy[matches[ok]] - ref.keypoints_xy[ok], axis=1)))
            if disparity < o.min_median_disparity_px:
                still = still or (f"camera not moving: median match displacement {disparity:.2f} px "
                                  f"(need {o.min_median_disparity_px:g})")
                continue
            tries += 1
            attempt = self._two_view(reference.frame, frame, matches)
            if attempt.success:
                return attempt
            reason = reason or attempt.reason
        if frame.index - self._references[-1].frame.index >= o.reference_every:
            self._add_reference(frame)
        return InitAttempt(False, reason or still)

    def _two_view(self, reference: Frame, frame: Frame, matches: np.ndarray) -> InitAttempt:
        ref, f = reference.features, frame.features
        idx = np.flatnonzero(matches >= 0)
        result = estimate_two_view(self.camera, self.camera, ref.keypoints_xy[idx], f.keypoints_xy[matches[idx]],
                                   self.options.two_view)
        if not result.well_conditioned:
            return InitAttempt(False, f"two-view not well conditioned: {result.reason}")
        # Scatter the per-correspondence results back to reference keypoints.
        full = np.full(len(ref), -1, np.int64)
        good = idx[result.triangulated_mask]
        full[good] = matches[good]
        points = np.full((len(ref), 3), np.nan)
        points[good] = result.points_cam1[result.triangulated_mask]
        return InitAttempt(True, "", reference, full, result, points)
