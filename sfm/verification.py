"""Geometric verification of matched pairs into a view graph (geometry.two_view does the estimation).

Per pair: the inlier matches (essential-matrix inliers for calibrated pairs; fundamental-matrix
inliers when the essential model explains clearly fewer matches, as COLMAP does for uncalibrated
pairs), the chosen model, the homography/essential inlier ratio, the relative pose and its median
triangulation angle (used to choose the initial pair).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geometry.two_view import TwoViewOptions, estimate_two_view
from scene.parallel import ordered_thread_map
from scene.progress import Cancelled

STAGE = "verify"


@dataclass(frozen=True)
class VerificationOptions:
    max_error_px: float = 4.0          # RANSAC threshold in *detection* pixels; scaled to camera pixels per pair
    min_num_inliers: int = 15
    min_inlier_ratio: float = 0.25
    confidence: float = 0.9999
    max_iterations: int = 2000
    workers: int | None = None         # threads estimating pairs at once (None: scene.parallel's default)


@dataclass
class PairGeometry:
    image1: int
    image2: int
    matches: np.ndarray                # (K, 2) inlier keypoint indices
    model: str                         # "essential" | "homography" | "fundamental"
    num_inliers: int
    num_matches: int
    he_ratio: float                    # homography inliers / essential inliers
    cam2_from_cam1: object             # Rigid3d (unit translation) or None
    median_angle_deg: float
    num_triangulated: int


def verify_pair(camera1, camera2, xy1, xy2, matches, error_px: float, options: VerificationOptions):
    tv = TwoViewOptions(max_error_px=error_px, confidence=options.confidence, max_iterations=options.max_iterations,
                        estimate_fundamental=True, min_num_inliers=options.min_num_inliers)
    r = estimate_two_view(camera1, camera2, xy1[matches[:, 0]], xy2[matches[:, 1]], tv)
    ne, nf = r.num_essential_inliers, r.num_fundamental_inliers
    if ne >= 0.9 * nf and ne > 0:
        mask, model = r.essential_inlier_mask, "essential"
    else:
        mask, model = r.fundamental_inlier_mask, "fundamental"
    if r.model == "homography" and r.num_homography_inliers >= mask.sum():
        mask, model = r.homography_inlier_mask, "homography"  # planar scene or pure rotation
    return r, mask, model


def verify_pairs(cameras: list, keypoints: list, scales: list, matches: dict,
                 options: VerificationOptions | None = None, progress=None,
                 inlier_counts: dict | None = None) -> list[PairGeometry]:
    """The view graph: one ``PairGeometry`` per pair with enough inliers. ``cameras[i]``/``keypoints[i]``
    belong to image i; ``scales[i]`` is its detection scale (processed / camera pixels).
    ``inlier_counts``: when given, receives (i, j) -> inliers of every pair estimated, kept or not."""
    opts = options or VerificationOptions()
    out: list[PairGeometry] = []
    items = list(matches.items())
    total = len(items)

    def estimate(item):
        (i, j), m = item
        if len(m) < opts.min_num_inliers:
            return None
        # Detection noise grows by 1/scale in camera pixels: keep the threshold in detector pixels.
        error_px = opts.max_error_px / min(scales[i], scales[j])
        return verify_pair(cameras[i], cameras[j], keypoints[i], keypoints[j], m, error_px, opts)

    results = ordered_thread_map(estimate, items, opts.workers)
    try:
        for k, ((i, j), m) in enumerate(items):
            if progress is not None and progress.should_stop():
                raise Cancelled(f"verification cancelled after {k} of {total} pairs")
            estimated = next(results)
            if estimated is not None:
                r, mask, model = estimated
                n_in = int(mask.sum())
                if inlier_counts is not None:
                    inlier_counts[(i, j)] = n_in
                if n_in >= opts.min_num_inliers and n_in >= opts.min_inlier_ratio * len(m):
                    out.append(PairGeometry(i, j, m[mask], model, n_in, len(m),
                                            float(r.homography_essential_inlier_ratio),
                                            r.cam2_from_cam1 if r.model != "none" else None,
                                            float(r.median_triangulation_angle_deg), int(r.num_triangulated)))
            if progress is not None:
                progress.report(STAGE, k + 1, total, f"{len(out)} verified pairs")
    finally:
        results.close()
    return out
