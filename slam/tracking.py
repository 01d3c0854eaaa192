"""Frame tracking against the map (ORB-SLAM's Tracking, without bag of words).

Three ways to get a frame's pose from the map, tried in this order by ``slam.system``:

1. ``track_motion_model``: the last frame's matched points projected with the constant-velocity
   prediction (``match_by_projection`` in a window), then ``optimize_pose`` (Huber, inlier rounds).
2. ``track_keyframe``: brute-force Hamming matching against the points of the last keyframe, pose
   refined from the last frame's pose.
3. ``relocalize``: brute-force matching against every alive map point, PnP RANSAC
   (``estimate_absolute_pose``), ``optimize_pose``.

Each of them, when it succeeds, is followed by ``track_local_map``: the points of the local keyframes
(those seeing the frame's matches and their best covisible neighbours) are projected with the refined pose
into a small window, and the pose is optimised again on all matches.

Pixel convention: COLMAP's throughout (keypoints, projections, windows).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geometry.absolute_pose import AbsolutePoseOptions, PoseEstimationFailed, estimate_absolute_pose
from geometry.bundle_adjustment import optimize_pose
from geometry.camera_models import project
from geometry.matching import KeypointGrid, build_keypoint_grid, match_brute_force, match_by_projection
from scene.camera import Camera
from scene.rigid import Rigid3d
from slam.features import Features
from slam.map import SlamMap

# Huber scale and inlier gate of the pose optimisation: sqrt(chi2_2dof(95 %)) for a 1-pixel detector.
POSE_GATE_PX = math.sqrt(5.991)


@dataclass(frozen=True)
class TrackingOptions:
    motion_radius: float = 15.0          # window (x keypoint scale) around the constant-velocity prediction
    local_map_radius: float = 4.0        # window (x scale) for the local map search after a pose estimate
    relocalization_radius: float = 10.0  # local map window right after relocalization (pose less certain)
    min_motion_matches: int = 20         # fewer: widen the window once, then fall back to the keyframe
    min_pose_inliers: int = 10           # after the first pose optimisation
    min_tracked: int = 30                # after the local map: fewer means tracking failed
    min_relocalization_inliers: int = 50
    local_keyframes: int = 20            # keyframes whose points form the local map
    keyframe_ratio: float = 0.8          # brute-force ratio test (keyframe fallback and relocalization)
    # Stricter than ORB-SLAM's TH_HIGH (100): with repeated textures (the demo room, KITTI's facades) the
    # looser gate let consistent mismatches bias the map (orbit rotation RMSE 5.9 deg, KITTI 7.1 deg).
    max_hamming: int = 45


@dataclass
class Frame:
    """One frame's features with what tracking adds: a grid over its keypoints, and its matches."""
    index: int
    timestamp: float
    features: Features
    rgb: np.ndarray                  # (N, 3) uint8 colour under each keypoint
    grid: KeypointGrid
    point_ids: np.ndarray            # (N,) map point per keypoint (-1: none), inliers only after tracking
    outlier: np.ndarray              # (N,) bool: matched but rejected by the pose optimisation
    cam_from_world: Rigid3d | None = None

    @classmethod
    def build(cls, index: int, timestamp: float, features: Features, image: np.ndarray) -> "Frame":
        n = len(features)
        h, w = image.shape[:2]
        xy = features.keypoints_xy
        cols = np.clip(xy[:, 0].astype(np.int64), 0, w - 1) if n else np.zeros(0, np.int64)
        rows = np.clip(xy[:, 1].astype(np.int64), 0, h - 1) if n else np.zeros(0, np.int64)
        if image.ndim == 3:
            rgb = image[rows, cols, :3][:, ::-1].astype(np.uint8)  # BGR -> RGB
        else:
            rgb = np.repeat(image[rows, cols][:, None], 3, axis=1).astype(np.uint8)
        grid = build_keypoint_grid(xy, (w, h))
        return cls(index, timestamp, features, rgb, grid, np.full(n, -1, np.int64), np.zeros(n, bool))

    @property
    def num_tracked(self) -> int:
        return int(np.count_nonzero(self.point_ids >= 0))


# --- projections ------------------------------------------------------------------------------------

def project_points(camera: Camera, cam_from_world: Rigid3d, xyz: np.ndarray, max_distance: np.ndarray,
                   scale_factor: float, n_levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels (M, 2) NaN where not visible, predicted octave (M,), visible (M,)) of world points.

    Visible: in front of the camera, inside the image, and at a distance where ORB can detect the point
    (ORB-SLAM's scale-invariance range [0.8 d_min, 1.2 d_max]). The octave is ORB-SLAM's prediction
    ceil(log(d_max / d) / log(scale_factor)).
    """
    pts_cam = cam_from_world.apply(xyz) if len(xyz) else np.zeros((0, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        uv = project(camera, pts_cam) if len(xyz) else np.zeros((0, 2))
        dist = np.linalg.norm(pts_cam, axis=1)
        d_min = max_distance / scale_factor ** (n_levels - 1)
        visible = ((pts_cam[:, 2] > 0) & np.all(np.isfinite(uv), axis=1)
                   & (uv[:, 0] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] >= 0) & (uv[:, 1] < camera.height)
                   & (dist >= 0.8 * d_min) & (dist <= 1.2 * max_distance))
        octave = np.ceil(np.log(max_distance / np.where(dist > 0, dist, 1.0)) / math.log(scale_factor))
    octave = np.clip(np.nan_to_num(octave, nan=0.0), 0, n_levels - 1).astype(np.int64)
    uv = np.where(visible[:, None], uv, np.nan)
    return uv, octave, visible


def _search(camera: Camera, slam_map: SlamMap, frame: Frame, cam_from_world: Rigid3d, points: np.ndarray,
            radius: float, max_hamming: int, count_visible: bool) -> int:
    """Project ``points`` and give each free frame keypoint it matches to; returns new matches."""
    plan = frame.features.plan
    uv, octave, visible = project_points(camera, cam_from_world, slam_map.xyz[points],
                                         slam_map.max_distance[points], plan.scale_factor, plan.n_levels)
    if count_visible:
        slam_map.n_visible[points[visible]] += 1
    if not visible.any():
        return 0
    vis = np.flatnonzero(visible)
    radii = radius * plan.level_scales[octave[vis]]
    f = frame.features
    match, _ = match_by_projection(uv[vis], slam_map.descriptors[points[vis]], octave[vis], f.keypoints_xy,
                                   f.octaves, f.descriptors, radii, max_distance=max_hamming, grid=frame.grid)
    ok = match >= 0
    kp = match[ok]
    free = frame.point_ids[kp] < 0
    frame.point_ids[kp[free]] = points[vis[ok]][free]
    return int(free.sum())


def optimize_frame_pose(camera: Camera, slam_map: SlamMap, frame: Frame, cam_from_world: Rigid3d
                        ) -> tuple[Rigid3d, int]:
    """Pose-only optimisation on the frame's matches; outliers lose their point. Returns (pose, inliers)."""
    kp = np.flatnonzero(frame.point_ids >= 0)
    if len(kp) < 4:
        return cam_from_world, 0
    pose, inliers, _ = optimize_pose(camera, cam_from_world, slam_map.xyz[frame.point_ids[kp]],
                                     frame.features.keypoints_xy[kp], loss="huber", loss_scale=POSE_GATE_PX)
    # The gate in pixels grows with the pyramid level, like ORB-SLAM's per-level sigma.
    if not np.all(np.isfinite(pose.translation)):
        return cam_from_world, 0
    with np.errstate(invalid="ignore"):
        err = np.linalg.norm(project(camera, pose.apply(slam_map.xyz[frame.point_ids[kp]]))
                             - frame.features.keypoints_xy[kp], axis=1)
    gate = POSE_GATE_PX * frame.features.scales[kp]
    good = np.isfinite(err) & (err <= gate)
    frame.outlier[kp[~good]] = True
    frame.point_ids[kp[~good]] = -1
    frame.outlier[kp[good]] = False
    return pose, int(good.sum())


# --- the three ways in ------------------------------------------------------------------------------

def track_motion_model(camera: Camera, slam_map: SlamMap, frame: Frame, last: Frame, predicted: Rigid3d,
                       options: TrackingOptions) -> tuple[Rigid3d | None, int]:
    points = last.point_ids[last.point_ids >= 0]
    return track_points(camera, slam_map, frame, np.unique(points[slam_map.alive[points]]), predicted, options)


def track_points(camera: Camera, slam_map: SlamMap, frame: Frame, points: np.ndarray, predicted: Rigid3d,
                 options: TrackingOptions) -> tuple[Rigid3d | None, int]:
    """Match ``points`` projected with the predicted pose in a window, optimise the pose on them."""
    if len(points) == 0:
        return None, 0
    n = _search(camera, slam_map, frame, predicted, points, options.motion_radius, options.max_hamming, False)
    if n < options.min_motion_matches:
        frame.point_ids[:] = -1
        n = _search(camera, slam_map, frame, predicted, points, 2 * options.motion_radius, options.max_hamming, False)
    if n < options.min_motion_matches:
        frame.point_ids[:] = -1
        return None, n
    pose, inliers = optimize_frame_pose(camera, slam_map, frame, predicted)
    return (pose if inliers >= options.min_pose_inliers else None), inliers


def _match_descriptors(slam_map: SlamMap, frame: Frame, points: np.ndarray, options: TrackingOptions) -> int:
    f = frame.features
    if len(points) == 0 or len(f) == 0:
        return 0
    pairs, _ = match_brute_force(f.descriptors, slam_map.descriptors[points], ratio=options.keyframe_ratio,
                                 mutual=True, max_distance=options.max_hamming)
    frame.point_ids[:] = -1
    frame.point_ids[pairs[:, 0]] = points[pairs[:, 1]]
    return len(pairs)


def track_keyframe(camera: Camera, slam_map: SlamMap, frame: Frame, keyframe: int, prior: Rigid3d,
                   options: TrackingOptions) -> tuple[Rigid3d | None, int]:
    points = slam_map.points_of_keyframes([keyframe])
    n = _match_descriptors(slam_map, frame, points, options)
    if n < options.min_motion_matches:
        frame.point_ids[:] = -1
        return None, n
    pose, inliers = optimize_frame_pose(camera, slam_map, frame, prior)
    return (pose if inliers >= options.min_pose_inliers else None), inliers


def relocalize(camera: Camera, slam_map: SlamMap, frame: Frame, options: TrackingOptions
               ) -> tuple[Rigid3d | None, int]:
    points = np.flatnonzero(slam_map.alive)
    n = _match_descriptors(slam_map, frame, points, options)
    if n < options.min_motion_matches:
        frame.point_ids[:] = -1
        return None, n
    kp = np.flatnonzero(frame.point_ids >= 0)
    try:
        pose, inliers, _ = estimate_absolute_pose(camera, slam_map.xyz[frame.point_ids[kp]],
                                                  frame.features.keypoints_xy[kp],
                                                  AbsolutePoseOptions(max_error_px=4.0, max_iterations=2000))
    except PoseEstimationFailed:
        frame.point_ids[:] = -1
        return None, 0
    frame.point_ids[kp[~inliers]] = -1
    pose, n_in = optimize_frame_pose(camera, slam_map, frame, pose)
    return (pose if n_in >= options.min_pose_inliers else None), n_in


# --- local map --------------------------------------------------------------------------------------

def local_keyframes(slam_map: SlamMap, frame: Frame, max_count: int) -> tuple[np.ndarray, int]:
    """(local keyframes, reference keyframe): keyframes seeing the frame's points, most shared first,
    topped up with the reference keyframe's covisible neighbours."""
    pts = frame.point_ids[frame.point_ids >= 0]
    mask = np.zeros(slam_map.num_points_total, bool)
    mask[pts] = True
    sel = slam_map.obs_alive & mask[slam_map.obs_pt]
    counts = np.bincount(slam_map.obs_kf[sel], minlength=slam_map.num_keyframes)
    order = np.lexsort((-np.arange(len(counts)), -counts))
    order = order[counts[order] > 0]
    if len(order) == 0:
        return np.zeros(0, np.int64), -1
    reference = int(order[0])
    chosen = list(order[:max_count])
    if len(chosen) < max_count:
        for k in slam_map.covisible_keyframes(reference, max_count):
            if k not in chosen:
                chosen.append(int(k))
            if len(chosen) >= max_count:
                break
    return np.array(chosen, np.int64), reference


def track_local_map(camera: Camera, slam_map: SlamMap, frame: Frame, cam_from_world: Rigid3d, radius: float,
                    options: TrackingOptions) -> tuple[Rigid3d, int, int]:
    """Search the local map's points around their projections, optimise again.
    Returns (pose, tracked inliers, reference keyframe)."""
    kfs, reference = local_keyframes(slam_map, frame, options.local_keyframes)
    points = slam_map.points_of_keyframes(kfs)
    already = np.zeros(slam_map.num_points_total, bool)
    already[frame.point_ids[frame.point_ids >= 0]] = True
    slam_map.n_visible[points[already[points]]] += 1
    points = points[~already[points]]
    _search(camera, slam_map, frame, cam_from_world, points, radius, options.max_hamming, True)
    pose, inliers = optimize_frame_pose(camera, slam_map, frame, cam_from_world)
    found = frame.point_ids[frame.point_ids >= 0]
    slam_map.n_found[found] += 1
    kfs, reference = local_keyframes(slam_map, frame, 1)
    return pose, inliers, reference
