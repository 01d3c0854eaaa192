"""Refine the frames' poses against the finished map (``System.finish``).

Tracking solves a frame's pose against map points as they are at that moment, many of them fresh from
triangulation between two keyframes; local bundle adjustment refines those points as later keyframes see
them, but a frame only follows its reference keyframe rigidly. So each map-posed frame keeps, compactly,
the matches its pose rests on (map point, pixel), and at the end its pose is solved again, pose only and
with the same robust loss as tracking, against the points as they are now. Keyframes' own frames take
their keyframe's bundle-adjusted pose. Frames posed by rotation alone hold no match and keep their pose.
"""
from __future__ import annotations

import hashlib

import numpy as np

from geometry.bundle_adjustment import optimize_pose
from scene.camera import Camera
from scene.rigid import Rigid3d
from slam.map import SlamMap
from slam.tracking import POSE_GATE_PX

FrameMatches = tuple[np.ndarray, np.ndarray]   # (map point ids int32 (K,), pixels float32 (K, 2))


def compact_matches(point_ids: np.ndarray, keypoints_xy: np.ndarray, min_tracked: int) -> FrameMatches | None:
    """A tracked frame's inlier matches, compact (12 bytes each); None below ``min_tracked`` (no map pose)."""
    kp = np.flatnonzero(point_ids >= 0)
    if len(kp) < min_tracked:
        return None
    return point_ids[kp].astype(np.int32), keypoints_xy[kp].astype(np.float32)


def refined_pose(camera: Camera, slam_map: SlamMap, cam_from_world: Rigid3d, matches: FrameMatches,
                 min_inliers: int) -> Rigid3d | None:
    """The pose solved again on ``matches`` whose points are still alive; None when too few are left or
    fewer than ``min_inliers`` pass the gate (the pose stays as tracked)."""
    ids, xy = matches
    alive = slam_map.alive[ids]
    if np.count_nonzero(alive) < min_inliers:
        return None
    pose, inliers, _ = optimize_pose(camera, cam_from_world, slam_map.xyz[ids[alive]], xy[alive].astype(np.float64),
                                     loss="huber", loss_scale=POSE_GATE_PX)
    if np.count_nonzero(inliers) < min_inliers or not np.all(np.isfinite(pose.translation)):
        return None
    return pose


def refine_frame_poses(camera: Camera, slam_map: SlamMap, reference_kf: list, cam_from_ref: list,
                       matches: list, min_inliers: int) -> dict:
    """Refine every recorded frame in place, entry i being frame i: ``reference_kf`` / ``cam_from_ref``
    (its pose relative to its reference keyframe) are updated; returns how many frames were refined and
    how many took their keyframe's pose."""
    keyframe_of = {int(f): k for k, f in enumerate(slam_map.kf_frame_index)}
    refined = keyframes = 0
    for i, (k, rel, m) in enumerate(zip(reference_kf, cam_from_ref, matches)):
        if k < 0 or rel is None:
            continue
        own = keyframe_of.get(i)
        if own is not None:
            reference_kf[i], cam_from_ref[i] = own, Rigid3d()
            keyframes += 1
            continue
        if m is None:
            continue
        ref_pose = slam_map.kf_pose(k)
        pose = refined_pose(camera, slam_map, rel * ref_pose, m, min_inliers)
        if pose is not None:
            cam_from_ref[i] = pose * ref_pose.inverse()
            refined += 1
    return {"refined_frames": refined, "keyframe_frames": keyframes}


def refinement_state(slam_map: SlamMap, num_frames: int) -> bytes:
    """A digest of what refinement reads (frames recorded, keyframe poses, points): equal digests, equal
    refined poses, so refining again is skipped (solving again from a refined pose moves it by round-off)."""
    digest = hashlib.blake2b(np.int64(num_frames).tobytes(), digest_size=16)
    for array in (slam_map.kf_quat, slam_map.kf_trans, slam_map.xyz, slam_map.alive):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()
