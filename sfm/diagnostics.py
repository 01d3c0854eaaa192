"""What is wrong with an input set, in words: duplicate pictures, a set without parallax, no overlap.

These only read the stage outputs (features, match counts, the view graph); the pipeline turns them into
warnings (kept in SfmResult.warnings and logged) or into the message of the "no initial pair" error.
"""
from __future__ import annotations

import hashlib

import numpy as np

# A verified pair "without parallax": the homography explains (almost) every essential inlier and the
# points it triangulates subtend less than this angle.
ROTATION_HE_RATIO = 0.8  # COLMAP's init_max_he_ratio: above it, the homography explains the pair
ROTATION_MAX_ANGLE_DEG = 1.0
ROTATION_MAJORITY = 0.5


def duplicate_of(features: list) -> dict[int, int]:
    """image index -> index of the first image with identical features (identical pixels give identical ones)."""
    first: dict[bytes, int] = {}
    out: dict[int, int] = {}
    for i, f in enumerate(features):
        if len(f) == 0:
            continue
        digest = hashlib.sha1(np.ascontiguousarray(f.keypoints_xy).tobytes()
                              + np.ascontiguousarray(f.descriptors).tobytes()).digest()
        if digest in first:
            out[i] = first[digest]
        else:
            first[digest] = i
    return out


def rotation_only_pairs(graph: list) -> list:
    """Verified pairs that a homography explains with (almost) no triangulation angle."""
    return [p for p in graph if p.he_ratio >= ROTATION_HE_RATIO and p.median_angle_deg < ROTATION_MAX_ANGLE_DEG]


def rotation_warning(graph: list) -> str | None:
    """A warning when most verified pairs have no parallax (a camera turning on the spot, or one plane)."""
    if not graph:
        return None
    flat = rotation_only_pairs(graph)
    if len(flat) < ROTATION_MAJORITY * len(graph):
        return None
    angles = np.array([p.median_angle_deg for p in graph])
    return (f"{len(flat)} of {len(graph)} verified image pairs are explained by a homography with almost no "
            f"parallax (median triangulation angle {np.median(angles):.2f} deg): the camera mostly rotated on the "
            f"spot, or the scene is one plane. Points and poses may be unreliable; move the camera sideways "
            f"between pictures.")


def explain_no_overlap(names: list, match_counts: dict, inlier_counts: dict, min_matches: int,
                       min_inliers: int) -> str:
    """The "no initial pair" message when no pair passed verification, with the best pair's numbers."""
    if not match_counts:
        return "no initial pair: fewer than two images have features to match"
    (i, j), n_match = max(match_counts.items(), key=lambda kv: (kv[1], inlier_counts.get(kv[0], -1)))
    n_in = inlier_counts.get((i, j))
    verified = (f"{n_in} of them geometrically consistent (need {min_inliers})" if n_in is not None
                else f"too few to verify (need {min_matches})")
    return (f"no initial pair: no two images overlap enough. The best pair, {names[i]} and {names[j]}, has "
            f"{n_match} feature matches, {verified}. Do the pictures show the same scene from nearby viewpoints?")
